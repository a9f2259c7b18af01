#!/usr/bin/env bash
# Draws a run of the task scenario as text: one row per client, time left to right, a mark for
# each reply and for the moment the server closed the connection. The rows come in the order the
# server first answered the clients (the clients connect in no set order), so a server that
# serves one client after another draws a staircase. make run-* prints it under the
# run's time; make timeline draws the same events as a picture.
#
# EVENTS has one line per event: SECONDS CLIENT EVENT, the seconds counted from the run's start
# and EVENT one of start, reply, close (the server closed the connection: the client's normal
# end) or fail (the client failed). --span is the time the drawing covers in at most WIDTH (60)
# columns: runs drawn with the same span share one scale. One column is span / width rounded up
# to 1, 2 or 5 times a power of ten, so the ruler reads in round numbers.
# usage: timeline.sh [--color] [--width COLUMNS] --span SECONDS EVENTS
set -u
color=0 width=60 span=
while [ $# -gt 1 ]; do
  case $1 in
    --color) color=1; shift ;;
    --width) width=$2; shift 2 ;;
    --span) span=$2; shift 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 1 ] || [ -z "$span" ]; then
  echo "usage: timeline.sh [--color] [--width COLUMNS] --span SECONDS EVENTS" >&2
  exit 2
fi
LC_ALL=C awk -v color="$color" -v width="$width" -v span="$span" '
function nice(x,   p) {  # the smallest of 1, 2, 5 times a power of ten that is >= x
  p = 1
  while (p > x) p /= 10
  while (p * 10 <= x) p *= 10
  if (p >= x) return p
  if (2 * p >= x) return 2 * p
  if (5 * p >= x) return 5 * p
  return 10 * p
}
function col(t) { return int(t / step + 1e-9) }
function paint(ch) {
  if (!color) return ch
  if (ch == ".") return "\033[2m" ch "\033[0m"
  if (ch == "o") return "\033[32m" ch "\033[0m"
  if (ch == "|") return "\033[1m" ch "\033[0m"
  if (ch == "x") return "\033[1;31m" ch "\033[0m"
  return ch
}
$1 !~ /^#/ && NF == 3 {
  k = $2 + 0
  if (!(k in start)) { start[k] = -1; first[k] = -1; last[k] = -1; end[k] = -1 }
  if (!(k in seen)) { seen[k] = 1; rows[++n] = k }
  if ($3 == "start") start[k] = $1
  if ($3 == "reply") {
    c = col($1)
    mark[k, c] = "o"
    if (first[k] < 0 || $1 < first[k]) first[k] = $1
    if ($1 > last[k]) last[k] = $1
  }
  if ($3 == "close" || $3 == "fail") { end[k] = $1; how[k] = ($3 == "close" ? "|" : "x") }
}
BEGIN { step = nice(span / width) }
END {
  printf "timeline: one row per client, in the order first answered; one column = %g s\n", step
  print "  . waiting for the first reply   o a reply   - served, between replies"
  print "  | the server closed the connection   x the client failed"
  print ""
  columns = int(span / step + 0.999)
  # Order: by first reply, then (never answered) by end, then by client number; n is small.
  for (i = 1; i <= n; i++) {
    k = rows[i]
    key[k] = first[k] >= 0 ? first[k] : (end[k] >= 0 ? 1e9 + end[k] : 2e9)
  }
  for (i = 2; i <= n; i++) {
    for (j = i; j > 1; j--) {
      a = rows[j - 1]; b = rows[j]
      if (key[a] < key[b] || (key[a] == key[b] && a < b)) break
      rows[j - 1] = b; rows[j] = a
    }
  }
  for (i = 1; i <= n; i++) {
    k = rows[i]
    s = start[k] < 0 ? 0 : col(start[k])
    f = first[k] < 0 ? -1 : col(first[k])
    l = last[k] < 0 ? -1 : col(last[k])
    e = end[k] < 0 ? -1 : col(end[k])
    if (e >= 0 && e <= l) e = l + 1  # the close comes just after the last reply: keep both
    stop = e >= 0 ? e : (l >= 0 ? l : s)
    row = sprintf("client %-3d", k)
    for (c = 0; c <= stop; c++) {
      if (c < s) ch = " "
      else if (c == e) ch = how[k]
      else if ((k, c) in mark) ch = "o"
      else if (f < 0 || c < f) ch = "."
      else ch = "-"
      row = row paint(ch)
    }
    print row
    if (stop + 1 > columns) columns = stop + 1
  }
  ruler = "          "
  labels = "          "
  for (c = 0; c <= columns; c++) {
    ruler = ruler (c % 10 == 0 ? "+" : "-")
    if (c % 10 == 0) {
      label = sprintf("%g", c * step)
      if (c + 10 > columns) label = label " s"
      while (length(labels) < 10 + c) labels = labels " "
      labels = labels label
    }
  }
  print ruler
  print labels
}
' "$1"
