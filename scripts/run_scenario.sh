#!/usr/bin/env bash
# The lab's task scenario (make run-*): start SERVER with --max-questions, start CLIENTS clients in
# --cycle mode at once, wait for them, stop the server by its process id (also when interrupted
# or when a client fails), and print how long the whole run took.
# usage: run_scenario.sh BIN_DIR SERVER PORT CLIENTS DELAY QUESTIONS [SEED]
set -u
. "$(dirname "$0")/lib.sh"
bin=$1 server=$2 port=$3 clients=$4 delay=$5 questions=$6 seed=${7:-}
extra=()
[ -n "$seed" ] && extra+=(--seed "$seed")

log=$(mktemp)
"$bin/$server" 127.0.0.1 "$port" --max-questions "$questions" "${extra[@]}" > >(tee "$log") &
server_pid=$!
stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  rm -f "$log"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# The server prints its port once it listens (PORT=0 lets the kernel choose one).
port=$(listening_port "$log" "$server_pid") || exit 1

start=$(date +%s.%N)
pids=()
for k in $(seq "$clients"); do
  "$bin/client_questions" 127.0.0.1 "$port" --cycle --delay "$delay" 2>&1 | sed -u "s/^/client $k: /" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
end=$(date +%s.%N)
echo "$server: $clients clients, $questions questions each, $delay s apart: the run took" \
  "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }') s"
exit "$status"
