# Sourced by the scripts that start a server: the one way they learn its port.

# listening_port LOG PID: waits for the server's "Listening for incoming connections at
# HOST:PORT" line in LOG and prints PORT; fails if PID exits first or 10 s pass.
listening_port() {
  local log=$1 pid=$2 port
  for _ in $(seq 200); do
    port=$(sed -n 's/^Listening for incoming connections at .*:\([0-9]*\)$/\1/p' "$log")
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the server did not start listening: $(cat "$log")" >&2
  return 1
}
