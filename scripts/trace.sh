#!/usr/bin/env bash
# make trace-simple|trace-threads|trace-async: a server under `strace -f`, two clients at once,
# and the trace condensed to one line per system call (scripts/condense_trace.sh). The raw trace
# is kept in build/trace-PATTERN.txt.
#
# The server is paused (SIGSTOP) while both clients connect and send their first question, then
# resumed (SIGCONT): both questions are waiting when it looks again, so every run shows the same
# thing (server_epoll: one epoll_wait returning both clients) instead of what the scheduler chose.
# usage: trace.sh BIN_DIR SERVER PATTERN
set -u
. "$(dirname "$0")/lib.sh"
bin=$1 server=$2 pattern=$3
raw=build/trace-$pattern.txt
log=build/trace-$pattern.log
mkdir -p build

if ! command -v strace >/dev/null; then
  echo "strace is not installed: apt-get install strace" >&2
  exit 1
fi
if ! strace -f -o /dev/null true 2>/dev/null; then
  echo "tracing is not permitted here (ptrace refused; in a container it needs the SYS_PTRACE" \
    "capability): the trace targets cannot run on this machine" >&2
  exit 1
fi

calls=accept,accept4,recvfrom,read,sendto,write,epoll_wait,epoll_ctl,clone,clone3,close
threads=()
[ "$server" = server_threads ] && threads=(--threads 2)
strace -f -ttt -T -e trace="$calls" -o "$raw" \
  "$bin/$server" 127.0.0.1 0 --max-questions 3 "${threads[@]}" > "$log" 2>&1 &
strace_pid=$!
server_pid() { pgrep -P "$strace_pid"; }
clients=()
finish() {
  kill -CONT "$(server_pid)" 2>/dev/null
  kill -TERM "${clients[@]}" 2>/dev/null
  kill -TERM "$(server_pid)" 2>/dev/null
  wait 2>/dev/null
}
trap finish EXIT

port=$(listening_port "$log" "$strace_pid") || exit 1
kill -STOP "$(server_pid)"

# questions_waiting: how many connections to the server hold bytes it has not read yet
# (/proc/net/tcp: local port in hex after the ':', state 01 is established, rx_queue after tx's).
questions_waiting() {
  awk -v port="$(printf '%04X' "$port")" \
    '$2 ~ ":" port "$" && $4 == "01" { split($5, queue, ":"); if (queue[2] != "00000000") ++n }
     END { print n + 0 }' /proc/net/tcp
}

# Two clients at once, each asking until the server closes after 3 questions.
for _ in 1 2; do
  timeout 30 "$bin/client_questions" 127.0.0.1 "$port" --cycle --delay 0.2 > /dev/null 2>&1 &
  clients+=($!)
done
for _ in $(seq 100); do
  [ "$(questions_waiting)" -ge 2 ] && break
  sleep 0.05
done
if [ "$(questions_waiting)" -lt 2 ]; then
  echo "the two clients did not send their first question within 5 s" >&2
  exit 1
fi
kill -CONT "$(server_pid)"
status=0
for pid in "${clients[@]}"; do wait "$pid" || status=1; done
clients=()
kill -TERM "$(server_pid)" 2>/dev/null
wait "$strace_pid" 2>/dev/null
trap - EXIT
if [ "$status" -ne 0 ]; then
  echo "a client failed; the server said: $(cat "$log")" >&2
  exit 1
fi

echo "$server under strace, two clients at once (raw trace: $raw)"
echo "   seconds  thread  call"
bash scripts/condense_trace.sh "$raw"
