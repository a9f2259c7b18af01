#!/usr/bin/env bash
# The lab's task scenario (make run-*): start SERVER with --max-questions, start CLIENTS clients
# in --cycle mode at once, wait for the clients themselves, stop the server by its process id, and
# print how long the whole run took and its timeline (scripts/timeline.sh): when each client got
# each reply. Every line says who printed it ("server: ...", "client 2: ..."). A client that fails
# fails the run and stops the server; so does Ctrl-C. EVENTS, if given, keeps the timeline's input.
# usage: run_scenario.sh BIN_DIR SERVER PORT CLIENTS DELAY QUESTIONS [SEED [EVENTS]]
set -u
export LC_ALL=C  # a decimal point in $EPOCHREALTIME and in awk
. "$(dirname "$0")/lib.sh"
bin=$1 server=$2 port=$3 clients=$4 delay=$5 questions=$6 seed=${7:-} events=${8:-}
extra=()
[ -n "$seed" ] && extra+=(--seed "$seed")

dir=$(mktemp -d)
server_pid=
printer=
stop_server() {  # stops the server, then waits until its last line is printed
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=
  fi
  [ -z "$printer" ] || wait "$printer"
  printer=
}
trap 'stop_server; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

# The server's lines, prefixed, through a FIFO: the script keeps the server's own process id.
mkfifo "$dir/server"
: > "$dir/server.log"
tee "$dir/server.log" < "$dir/server" | sed -u 's/^/server: /' &
printer=$!
"$bin/$server" 127.0.0.1 "$port" --max-questions "$questions" "${extra[@]}" > "$dir/server" 2>&1 &
server_pid=$!
# The server prints its port once it listens (PORT=0 lets the kernel choose one).
port=$(listening_port "$dir/server.log" "$server_pid") || exit 1

# run_client K: one client, each reply printed as "client K: ..." and the time it came kept for
# the timeline. Its normal end (the server closes the connection after QUESTIONS replies) is said
# as such; anything else the client says on stderr is shown only if it fails. Returns the
# client's exit status.
run_client() {
  local k=$1 replies status
  : > "$dir/client$k.replies"
  "$bin/client_questions" 127.0.0.1 "$port" --cycle --delay "$delay" 2> "$dir/client$k.err" |
    while IFS= read -r line; do
      echo "client $k: $line"
      echo "$EPOCHREALTIME" >> "$dir/client$k.replies"
    done
  status=${PIPESTATUS[0]}
  replies=$(wc -l < "$dir/client$k.replies")
  echo "$EPOCHREALTIME $([ "$status" = 0 ] && echo close || echo fail)" > "$dir/client$k.end"
  if [ "$status" = 0 ]; then
    echo "client $k: done: the server closed the connection after $replies replies"
  else
    sed "s/^/client $k: /" "$dir/client$k.err"
    echo "client $k: failed (exit status $status) after $replies replies"
  fi
  return "$status"
}

start=$EPOCHREALTIME
running=()
for k in $(seq "$clients"); do
  run_client "$k" &
  running+=($!)
done
status=0
while [ ${#running[@]} -gt 0 ]; do
  ended=
  wait -n -p ended "${running[@]}" $server_pid
  ended_status=$?
  [ -n "$ended" ] || break  # nothing left to wait for
  if [ "$ended" = "$server_pid" ]; then
    echo "$server stopped on its own (exit status $ended_status) before the clients ended"
    server_pid='' status=1
    continue
  fi
  left=()
  for pid in "${running[@]}"; do [ "$pid" = "$ended" ] || left+=("$pid"); done
  running=("${left[@]}")
  if [ "$ended_status" != 0 ] && [ "$status" = 0 ]; then
    status=1
    stop_server  # the other clients see the server close, and end
  fi
done
end=$EPOCHREALTIME
stop_server
echo "$server: $clients clients, $questions questions each, $delay s apart: the run took" \
  "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }') s"

# The timeline, on the scale of the longest run these parameters allow (every question answered
# one after another), so that the three servers' timelines line up.
: "${events:=$dir/events}"
{
  echo "# seconds client event: $server, $clients clients, $questions questions each, $delay s apart"
  for k in $(seq "$clients"); do
    echo "0.000 $k start"
    awk -v s="$start" -v k="$k" '{ printf "%.3f %d reply\n", $1 - s, k }' "$dir/client$k.replies"
    awk -v s="$start" -v k="$k" '{ printf "%.3f %d %s\n", $1 - s, k, $2 }' "$dir/client$k.end"
  done
} > "$events"
span=$(awk -v n="$((clients * questions))" -v d="$delay" -v s="$start" -v e="$end" \
  'BEGIN { print (n * d > e - s ? n * d : e - s) }')
color=()
[ -t 1 ] && color=(--color)
echo
bash "$(dirname "$0")/timeline.sh" "${color[@]}" --span "$span" "$events"
exit "$status"
