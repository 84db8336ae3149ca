#!/usr/bin/env bash
# What the bench/*.sh scripts share: a work folder and clean-up of every server they start (each in
# its own session, so forks go too), free loopback ports, waiting for a listener without connecting
# to it, and a process's CPU ticks. Sourced, not run.

# Every server runs in its own session (setsid), so that it and its children (socat's forks) can be
# stopped as one process group.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
WORK=$(mktemp -d)
trap cleanup EXIT
trap 'exit 130' INT TERM

# N distinct free loopback ports, all held open at once while choosing so none repeats.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Waits for a listener without connecting to it (iperf3 -s -1 would take a probe for its one client).
wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $port after 5 s" >&2
  exit 1
}

# CPU ticks of a process, plus those of its reaped children, plus those of its live children.
cpu_ticks() {
  local pid=$1 total=0 child stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo 0; return; }
  # Fields after the ")" of the command name: utime is the 12th of them (field 14 of the file).
  total=$(awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] + f[14] + f[15] }' <<<"$stat")
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do
    stat=$(cat "/proc/$child/stat" 2>/dev/null) || continue
    total=$((total + $(awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' <<<"$stat")))
  done
  echo "$total"
}

# The sockit binary to measure: $SOCKIT if set, else a fresh release build of this checkout.
sockit_bin() {
  if [ -n "${SOCKIT:-}" ]; then
    echo "$SOCKIT"
  else
    cargo build --release -q >&2
    echo target/release/sockit
  fi
}

start() { # name port command...
  local name=$1 port=$2
  shift 2
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
  wait_port "$port"
}

