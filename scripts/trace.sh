#!/usr/bin/env bash
# make trace-simple|trace-threads|trace-async: a server under `strace -f`, two clients at once,
# and the trace condensed to one line per system call (scripts/condense_trace.sh). The raw trace
# is kept in build/trace-PATTERN.txt.
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
trap 'kill -TERM $(pgrep -P "$strace_pid") 2>/dev/null; wait "$strace_pid" 2>/dev/null' EXIT

port=$(listening_port "$log" "$strace_pid") || exit 1

# Two clients at once, each asking until the server closes after 3 questions.
"$bin/client_questions" 127.0.0.1 "$port" --cycle --delay 0.2 > /dev/null 2>&1 &
"$bin/client_questions" 127.0.0.1 "$port" --cycle --delay 0.2 > /dev/null 2>&1
wait %2 2>/dev/null
kill -TERM "$(pgrep -P "$strace_pid")" 2>/dev/null
wait "$strace_pid" 2>/dev/null
trap - EXIT

echo "$server under strace, two clients at once (raw trace: $raw)"
echo "   seconds  thread  call"
bash scripts/condense_trace.sh "$raw"
