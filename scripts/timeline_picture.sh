#!/usr/bin/env bash
# make timeline: the task scenario against the three servers with a short delay (6 clients, so
# that the pool of 4 threads has two clients waiting), each printed as its text timeline, then
# drawn as one picture, three panels on one time axis, into docs/timeline.png (with gnuplot).
# usage: timeline_picture.sh BIN_DIR
set -u
export LC_ALL=C
bin=$1
clients=6 delay=0.1 questions=10
servers=(server_simple server_threads server_epoll)
work=build/timeline
mkdir -p "$work"

for server in "${servers[@]}"; do
  bash "$(dirname "$0")/run_scenario.sh" "$bin" "$server" 0 "$clients" "$delay" "$questions" "" \
    "$work/$server.events" > "$work/$server.log" || { cat "$work/$server.log"; exit 1; }
  sed -n '/: the run took/,$p' "$work/$server.log"  # the run's time and its text timeline
  echo
done

if ! command -v gnuplot >/dev/null; then
  echo "(no gnuplot: apt-get install gnuplot-nox, then make timeline again, for docs/timeline.png)" >&2
  exit 0
fi

# Per server: one line per client "ROW CLIENT START FIRST_REPLY END" (the waiting and the served
# stretch), and the replies and ends as "SECONDS ROW" points. Rows in the order first answered,
# as in the text timeline.
for server in "${servers[@]}"; do
  awk '$1 !~ /^#/ {
      k = $2
      if (!(k in start)) { start[k] = $1; rows[++n] = k }
      if ($3 == "reply") { replies[k] = replies[k] " " $1; if (!(k in first)) first[k] = $1 }
      if ($3 == "close" || $3 == "fail") end[k] = $1
    }
    END {
      for (i = 2; i <= n; i++) {
        for (j = i; j > 1; j--) {
          a = rows[j - 1]; b = rows[j]
          fa = a in first ? first[a] : 1e9 + end[a]; fb = b in first ? first[b] : 1e9 + end[b]
          if (fa < fb || (fa == fb && a < b)) break
          rows[j - 1] = b; rows[j] = a
        }
      }
      for (i = 1; i <= n; i++) {
        k = rows[i]
        print i, k, start[k], (k in first ? first[k] : end[k]), end[k]
        m = split(replies[k], t, " ")
        for (r = 1; r <= m; r++) print t[r], i > (out ".replies")
        print end[k], i > (out ".ends")
      }
    }' out="$work/$server" "$work/$server.events" > "$work/$server.rows"
done
span=$(awk '$1 !~ /^#/ && $1 > max { max = $1 } END { print max }' "$work"/*.events)

gnuplot <<GNUPLOT
set terminal pngcairo size 1000,760 font ",10"
set output "docs/timeline.png"
set multiplot layout 3,1 title "The task scenario: $clients clients, $questions questions each, $delay s apart; rows in the order first answered (make timeline)"
set xrange [0:$span * 1.02]
set yrange [$clients + 0.6:0.4]

set grid xtics
set key outside right top
set lmargin 12
set rmargin 36
titles = "'server\\\\_simple: one client after another' 'server\\\\_threads --threads 4: four at a time' 'server\\\\_epoll: all at once, in one thread'"
do for [i=1:3] {
  s = word("${servers[*]}", i)
  set title word(titles, i)
  if (i == 3) { set xlabel "seconds since the clients started" }
  plot "$work/".s.".rows" using 3:1:(\$4-\$3):(0):ytic(sprintf("client %d", \$2)) \
         with vectors nohead dt 3 lw 2 lc rgb "#999999" title (i == 1 ? "waiting for the first reply" : ""), \
       "" using 4:1:(\$5-\$4):(0) with vectors nohead lw 3 lc rgb "#4477aa" \
         title (i == 1 ? "connected, being served" : ""), \
       "$work/".s.".replies" using 1:2 with points pt 7 ps 0.7 lc rgb "#228833" \
         title (i == 1 ? "a reply" : ""), \
       "$work/".s.".ends" using 1:2 with points pt 2 ps 1.2 lw 2 lc rgb "#cc3311" \
         title (i == 1 ? "the server closed the connection" : "")
}
unset multiplot
GNUPLOT
echo "written: docs/timeline.png" >&2
