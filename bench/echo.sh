#!/usr/bin/env bash
# Echo benchmark: sockit echo against the floor (the minimal tokio echo server, examples/min_echo.rs),
# the tutorials' Python asyncio server and socat, all driven by the same `sockit bench echo` load;
# then single-connection streaming throughput of sockit echo against iperf3 on loopback.
#
#   bench/echo.sh                 64 connections x 64 B pingpong, 10 s per server
#   bench/echo.sh --quick         tiny load, ~1 s per server (what CI may run once)
#   bench/echo.sh -c 256 -s 1024 -d 20s --threads 2
#   CONNS=16 SIZE=512 DURATION=5s bench/echo.sh
#
# Server CPU is utime+stime (+ cutime+cstime of reaped children, which is where socat's per-connection
# forks land) from /proc/PID/stat, sampled just before and just after each measured run; a 1 s warm-up
# run comes first and is not counted. Everything this script starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
SIZE=${SIZE:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
STREAM_SECS=${STREAM_SECS:-5}
THREADS=${THREADS:-}
QUICK=0

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    -c|--connections) CONNS=$2; shift ;;
    -s|--size) SIZE=$2; shift ;;
    -d|--duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --stream-secs) STREAM_SECS=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "echo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  CONNS=4 SIZE=64 DURATION=1s WARMUP=0.2s STREAM_SECS=1
fi

for tool in socat iperf3 python3 ss; do
  command -v "$tool" >/dev/null || { echo "echo.sh: $tool is missing (bash .ci/install-deps)" >&2; exit 1; }
done

echo "building (release)..." >&2
cargo build --release --quiet --bins --examples
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SOCKIT=$TARGET_DIR/release/sockit
MIN_ECHO=$TARGET_DIR/release/examples/min_echo
# The interpreter itself, not a version-manager shim, so that $! is the server's own PID.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
CLK_TCK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
source bench/lib.sh

json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

read -r P_SOCKIT P_MIN P_PY P_SOCAT P_IPERF P_SOCKIT_S <<<"$(free_ports 6)"
start sockit "$P_SOCKIT" "$SOCKIT" -q echo "127.0.0.1:$P_SOCKIT"
start min_echo "$P_MIN" "$MIN_ECHO" "127.0.0.1:$P_MIN"
start python "$P_PY" "$PYTHON" bench/echo_asyncio.py "127.0.0.1:$P_PY"
# backlog: socat's default of 5 leaves connections of a 64-connection burst waiting seconds for accept.
start socat "$P_SOCAT" socat "TCP-LISTEN:$P_SOCAT,bind=127.0.0.1,fork,reuseaddr,backlog=4096" PIPE

THREAD_FLAG=()
[ -n "$THREADS" ] && THREAD_FLAG=(--threads "$THREADS")
LOAD=(-c "$CONNS" -s "$SIZE" --mode pingpong "${THREAD_FLAG[@]}")

echo "load: $CONNS connections x $SIZE B pingpong, $DURATION per server after a $WARMUP warm-up run" >&2
for name in sockit min_echo python socat; do
  port_var="P_${name^^}"; [ "$name" = min_echo ] && port_var=P_MIN; [ "$name" = python ] && port_var=P_PY
  port=${!port_var}
  pid_var="PID_$name"; pid=${!pid_var}
  echo "  $name (port $port, pid $pid)..." >&2
  "$SOCKIT" bench echo "127.0.0.1:$port" "${LOAD[@]}" -d "$WARMUP" --warmup 0 --json >/dev/null
  sleep 0.3 # let socat reap the warm-up's forks
  before=$(cpu_ticks "$pid")
  "$SOCKIT" bench echo "127.0.0.1:$port" "${LOAD[@]}" -d "$DURATION" --warmup 0 --json >"$WORK/$name.json"
  sleep 0.3
  after=$(cpu_ticks "$pid")
  echo $(( after - before )) >"$WORK/$name.ticks"
done

python3 - "$WORK" "$CLK_TCK" <<'PY'
import json, sys
work, tck = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ["sockit", "min_echo", "python", "socat"]:
    d = json.load(open(f"{work}/{name}.json"))
    ticks = int(open(f"{work}/{name}.ticks").read())
    cpu_s = ticks / tck
    rt = d["round_trips"]
    rows[name] = dict(
        rps=d["round_trips_per_sec"],
        p99=(d["latency"] or {}).get("p99_us", float("nan")),
        cpu_pct=cpu_s / d["duration_secs"] * 100,
        cpu_us=cpu_s * 1e6 / rt if rt else float("nan"),
        client=d["client_cpu"]["percent"],
        errors=d["errors"] + d["connect_errors"],
    )
base, py = rows["min_echo"], rows["python"]
print(f"\npingpong: {d['connections']} connections x {d['size']} B, {d['duration_secs']:.0f} s per server, "
      f"load generator on {d['threads']} threads")
hdr = ("server", "round trips/s", "p99", "server CPU", "CPU µs/rt", "rt/s ÷ min_echo", "rt/s ÷ python",
       "CPU/rt ÷ min_echo", "client CPU", "errors")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for name, r in rows.items():
    print(f"| {name} | {r['rps']:,.0f} | {r['p99']:,.0f} µs | {r['cpu_pct']:.0f} % | {r['cpu_us']:.2f} | "
          f"{r['rps'] / base['rps']:.2f} | {r['rps'] / py['rps']:.2f} | {r['cpu_us'] / base['cpu_us']:.2f} | "
          f"{r['client']:.0f} % | {r['errors']} |")
PY

# Streaming: one connection, bytes echoed per second, against iperf3's one-way loopback throughput.
echo "streaming: 1 connection, ${STREAM_SECS} s each..." >&2
"$SOCKIT" bench echo "127.0.0.1:$P_SOCKIT" -c 1 --mode stream -d "${STREAM_SECS}s" --warmup 0.5s "${THREAD_FLAG[@]}" --json >"$WORK/stream_sockit.json"
"$SOCKIT" bench echo "127.0.0.1:$P_MIN" -c 1 --mode stream -d "${STREAM_SECS}s" --warmup 0.5s "${THREAD_FLAG[@]}" --json >"$WORK/stream_min.json"
setsid iperf3 -s -1 -B 127.0.0.1 -p "$P_IPERF" >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!)
wait_port "$P_IPERF"
iperf3 -c 127.0.0.1 -p "$P_IPERF" -t "$STREAM_SECS" -J >"$WORK/iperf3.json"

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
s = json.load(open(f"{work}/stream_sockit.json"))
m = json.load(open(f"{work}/stream_min.json"))
i = json.load(open(f"{work}/iperf3.json"))
iperf = i["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
print("\nstreaming: 1 connection (echo: MB/s echoed back; iperf3: one-way MB/s)")
print("| what | MB/s | ÷ iperf3 |")
print("|---|---|---|")
for name, mbs in [("sockit echo", s["mb_per_sec"]), ("min_echo", m["mb_per_sec"]), ("iperf3 one-way", iperf)]:
    print(f"| {name} | {mbs:,.0f} | {mbs / iperf:.2f} |")
errs = s["errors"] + m["errors"]
if errs:
    print(f"stream errors: {errs} ({s['first_error'] or m['first_error']})")
PY
