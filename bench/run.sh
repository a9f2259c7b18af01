#!/usr/bin/env bash
# make bench: the three patterns measured side by side on loopback. Each row starts a fresh
# server pinned to CPU 0 and runs bin/loadgen pinned to CPU 1 (taskset, where present).
# Prints one Markdown table per part and writes them, with a CSV, to bench/results/ (a quick run
# to build/bench/results/, so that it leaves the checked-in results alone); draws throughput.png
# there where gnuplot is installed.
# Servers in SERVERS (the Makefile's list) beyond the three get a plain row in every part.
# usage: [SERVERS="server_simple ..."] bench/run.sh BIN_DIR [quick]
set -u
. "$(dirname "$0")/../scripts/lib.sh"
bin=$1
quick=${2:-}
out=bench/results
[ -z "$quick" ] || out=build/bench/results
mkdir -p "$out" build/bench

if [ -n "$quick" ]; then
  warmup=0.3 seconds=1 counts="1 100" hold=1000
else
  warmup=1 seconds=3 counts="1 10 100 1000" hold=10000
fi
others=()
for s in ${SERVERS:-}; do
  case $s in server_simple | server_threads | server_epoll) ;; *) others+=("$s") ;; esac
done
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi
command -v perf >/dev/null || echo "(no perf: system calls are not counted; apt-get install linux-perf)" >&2

server_pid=
port=
start_server() {  # start_server NAME ARGS...: a fresh server on a port the kernel chooses
  local log=build/bench/server.log
  "${server_cpu[@]}" "$bin/$1" 127.0.0.1 0 "${@:2}" > "$log" 2>&1 &
  server_pid=$!
  port=$(listening_port "$log" "$server_pid") || exit 1
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
}
trap 'stop_server' EXIT
trap 'exit 130' INT TERM

field() { sed -n "s/.*\"$2\": \"\{0,1\}\([^,\"}]*\).*/\1/p" <<< "$1"; }
loadgen() { "${client_cpu[@]}" "$bin/loadgen" 127.0.0.1 "$port" --json "$@"; }

machine="$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
{
  echo "# make bench${quick:+ QUICK=1}, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $machine. Server on CPU 0, loadgen on CPU 1; ${seconds} s measured after ${warmup} s of warm-up per row."
} > "$out/bench.md"
csv="$out/results.csv"
echo "server,threads,max_questions,connections,questions_per_second,p50_us,p99_us,p999_us,max_us,errors,reconnects,lost,cpu_us_per_question,syscalls_per_question,context_switches_per_question,server_cpu_busy_percent,served,never_answered,first_reply_p50_ms,first_reply_p99_ms,first_reply_max_ms" > "$csv"

table() { printf '%s\n' "$@" | tee -a "$out/bench.md"; }

header="| server | connections | served | questions/s | p50 µs | p99 µs | p99.9 µs | max µs | first reply p50 ms | first reply p99 ms | first reply max ms | errors | reconnects | lost |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
# Part 1 and 2: throughput and latency, and what each question costs the server.
table "" "## 1. Throughput and latency (one question in flight per connection)" "" \
  "Latency per question (p50 to max, µs) counts answered questions only. The first reply (ms) is per" \
  "connection: from its first question to its first reply; a connection never answered counts at" \
  "its age when loadgen stops, and a value marked ≥ is such a lower bound." "" \
  "$header"
costs=()
# wait JSON NAME: a first-reply percentile, with ≥ where it is a lower bound
wait_ms() { echo "$([ "$(field "$1" "first_reply_$2_at_least")" = true ] && echo "≥ ")$(field "$1" "first_reply_$2_ms")"; }
row() {  # row LABEL MAXQ CONNECTIONS SERVER ARGS...
  local label=$1 maxq=$2 n=$3
  start_server "$4" --max-questions "$maxq" "${@:5}"
  local json
  json=$(loadgen --connections "$n" --seconds "$seconds" --warmup "$warmup" --server-pid "$server_pid")
  stop_server
  local q p50 p99 p999 mx err rec lost cpu calls cs busy threads
  q=$(field "$json" questions_per_second) p50=$(field "$json" p50_us) p99=$(field "$json" p99_us)
  p999=$(field "$json" p999_us) mx=$(field "$json" max_us) err=$(field "$json" errors)
  rec=$(field "$json" reconnects) lost=$(field "$json" lost)
  cpu=$(field "$json" server_cpu_us_per_question) calls=$(field "$json" server_syscalls_per_question)
  cs=$(field "$json" server_context_switches_per_question) busy=$(field "$json" server_cpu_busy_percent)
  threads=$(field "$json" server_threads)
  table "| $label | $n | $(field "$json" served) | $q | $p50 | $p99 | $p999 | $mx | $(wait_ms "$json" p50) | $(wait_ms "$json" p99) | $(wait_ms "$json" max) | $err | $rec | $lost |"
  echo "$label,$threads,$maxq,$n,$q,$p50,$p99,$p999,$mx,$err,$rec,$lost,$cpu,$calls,$cs,$busy,$(field "$json" served),$(field "$json" never_answered),$(field "$json" first_reply_p50_ms),$(field "$json" first_reply_p99_ms),$(field "$json" first_reply_max_ms)" >> "$csv"
  if [ "$maxq" = 0 ] && [ "$n" = 100 ]; then
    costs+=("| $label | $q | $cpu | $calls | $cs | $busy% | $threads |")
  fi
}
for n in $counts; do
  row server_simple 0 "$n" server_simple
  row "server_threads --threads $n" 0 "$n" server_threads --threads "$n"
  row "server_threads --threads 4" 0 "$n" server_threads --threads 4
  row server_epoll 0 "$n" server_epoll
  for s in "${others[@]}"; do row "$s" 0 "$n" "$s"; done
done
table "" "With the lab's limit, --max-questions 10: every tenth reply the server closes and loadgen reconnects (churn)." ""
table "$header"
row "server_simple (limit 10)" 10 1 server_simple
row "server_threads --threads 4 (limit 10)" 10 4 server_threads --threads 4
row "server_epoll (limit 10)" 10 100 server_epoll
for s in "${others[@]}"; do row "$s (limit 10)" 10 100 "$s"; done

table "" "## 2. What one question costs the server (100 connections)" "" \
  "| server | questions/s | CPU µs per question | system calls per question | context switches per question | server CPU busy | threads |" \
  "|---|---:|---:|---:|---:|---:|---:|" "${costs[@]}"

# Part 3: C10K.
table "" "## 3. C10K: $hold idle connections, then one question on each" "" \
  "| server | held | answered | errors | peak threads | RSS KiB, idle | bytes per idle connection | peak RSS KiB |" "|---|---:|---:|---:|---:|---:|---:|---:|"
hold_row() {  # hold_row LABEL SERVER ARGS...
  start_server "$2" --max-questions 0 "${@:3}"
  local json
  json=$(loadgen --hold "$hold" --seconds 1 --server-pid "$server_pid")
  stop_server
  table "| $1 | $(field "$json" held) | $(field "$json" answered) | $(field "$json" errors) | $(field "$json" server_threads) | $(field "$json" server_idle_rss_kib) | $(field "$json" server_bytes_per_idle_connection) | $(field "$json" server_peak_rss_kib) |"
}
hold_row server_epoll server_epoll
hold_row "server_threads --threads $hold" server_threads --threads "$hold"
for s in "${others[@]}"; do hold_row "$s" "$s"; done

# Part 4: the denial-of-service lesson.
table "" "## 4. Denial of service: silent clients, then how long a new client waits (2 s at most)" "" \
  "| server | silent clients | the new client |" "|---|---:|---|"
idle_row() {  # idle_row LABEL SILENT SERVER ARGS...
  start_server "$3" "${@:4}"
  local json answered
  json=$(loadgen --idle "$2" --seconds 2)
  stop_server
  answered=$(field "$json" answered)
  if [ "$answered" = true ]; then
    table "| $1 | $2 | answered in $(field "$json" waited_ms) ms |"
  else
    table "| $1 | $2 | blocked: no answer in 2 s |"
  fi
}
idle_row server_simple 1 server_simple
idle_row "server_threads --threads 4" 3 server_threads --threads 4
idle_row "server_threads --threads 4" 4 server_threads --threads 4
idle_row server_epoll 1000 server_epoll
for s in "${others[@]}"; do idle_row "$s" 1000 "$s"; done

if command -v gnuplot >/dev/null; then
  for s in server_simple "server_threads --threads 4" server_epoll; do
    grep "^$s,[0-9]*,0," "$csv" | cut -d, -f4,5,17,20 | tr , ' ' > "build/bench/$(echo "$s" | cut -d' ' -f1,3 | tr ' ' _).dat"
  done
  grep '^server_threads --threads [0-9]*,[0-9]*,0,' "$csv" | awk -F, '$1 == "server_threads --threads " $4' |
    cut -d, -f4,5,17,20 | tr , ' ' > build/bench/server_threads_N.dat
  gnuplot <<GNUPLOT
set terminal pngcairo size 1500,450 font ",10"
set output "$out/throughput.png"
set multiplot layout 1,3 title "sphinx servers on loopback ($machine)"
set logscale x
set xlabel "connections"
set key top left
set grid
series = "server_simple server_threads_4 server_threads_N server_epoll"
titles = "server\\\\_simple 'server\\\\_threads --threads 4' 'server\\\\_threads --threads N' server\\\\_epoll"
set ylabel "questions per second"
plot for [i=1:4] "build/bench/".word(series, i).".dat" using 1:2 with linespoints title word(titles, i)
set logscale y
set ylabel "time to first reply, p99 across connections (ms)"
set title "a client never answered counts at the run's length: a lower bound" font ",9"
plot for [i=1:4] "build/bench/".word(series, i).".dat" using 1:4 with linespoints title word(titles, i)
unset title
set ylabel "connections served"
set yrange [0.7:*]
plot for [i=1:4] "build/bench/".word(series, i).".dat" using 1:3 with linespoints title word(titles, i)
unset multiplot
GNUPLOT
  echo "" >> "$out/bench.md"
  echo "![throughput, time to first reply and connections served, against connections](throughput.png)" >> "$out/bench.md"
else
  echo "(no gnuplot: apt-get install gnuplot for bench/results/throughput.png)" >&2
fi
echo "written: $out/bench.md, $csv" >&2
