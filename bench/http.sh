#!/usr/bin/env bash
# HTTP benchmark: large-file throughput of sockit http against `python3 -m http.server` (read/write
# copies) and a minimal Python server that sends the body with sendfile(2) (the kernel path sockit's
# hyper bodies do not take), one curl download at a time over loopback; then, if wrk is installed,
# requests/s of a 1 KiB file with wrk -t2 -c64.
#
#   bench/http.sh                 1 GiB file, 3 downloads per server
#   bench/http.sh --quick         16 MiB file, 1 download each (what CI may run once)
#   SIZE_MB=256 RUNS=5 bench/http.sh
#
# Server CPU is utime+stime from /proc/PID/stat around each download. The file lives in a temporary
# folder (page cache after the first read). Everything this script starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
if [ "${1:-}" = "--quick" ]; then SIZE_MB=16; RUNS=1; fi

# shellcheck source=bench/lib.sh
. bench/lib.sh

cargo build --release -q
BIN=target/release/sockit
HZ=$(getconf CLK_TCK)

head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$WORK/big.bin"
head -c 1024 /dev/urandom >"$WORK/1k.bin"
cat >"$WORK/sendfile.py" <<'PY'
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
path = sys.argv[2]
while True:
    c, _ = s.accept()
    c.recv(65536)
    with open(path, "rb") as f:
        n = os.fstat(f.fileno()).st_size
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n)
        c.sendfile(f)
    c.close()
PY

read -r P_SOCKIT P_PYTHON P_SENDFILE <<<"$(free_ports 3)"
start sockit "$P_SOCKIT" "$BIN" http "$WORK" -l "127.0.0.1:$P_SOCKIT" --no-access-log
start python "$P_PYTHON" python3 -m http.server "$P_PYTHON" --bind 127.0.0.1 --directory "$WORK"
start sendfile "$P_SENDFILE" python3 "$WORK/sendfile.py" "$P_SENDFILE" "$WORK/big.bin"
cat "$WORK/big.bin" >/dev/null

printf '%-22s %10s %16s\n' server "MB/s" "CPU s per GiB"
for name in sockit python sendfile; do
  port_var="P_${name^^}"
  pid_var="PID_$name"
  port=${!port_var}
  pid=${!pid_var}
  for _ in $(seq 1 "$RUNS"); do
    c0=$(cpu_ticks "$pid")
    speed=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/big.bin")
    c1=$(cpu_ticks "$pid")
    awk -v n="$name" -v s="$speed" -v c=$((c1 - c0)) -v hz="$HZ" -v mb="$SIZE_MB" \
      'BEGIN { printf "%-22s %10.0f %16.2f\n", n, s / 1e6, (c / hz) * 1024 / mb }'
  done
done

if command -v wrk >/dev/null 2>&1; then
  echo
  echo "1 KiB file, wrk -t2 -c64 -d5s:"
  for name in sockit python; do
    port_var="P_${name^^}"
    printf '%-10s ' "$name"
    wrk -t2 -c64 -d5s "http://127.0.0.1:${!port_var}/1k.bin" | awk '/Requests\/sec/ { print $2 " requests/s" }'
  done
else
  echo "(wrk not installed: no requests/s comparison)"
fi
