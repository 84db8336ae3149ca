#!/usr/bin/env bash
# Chat benchmark: sockit chat against `ncat --chat`, both driven by the same `sockit bench chat` load
# in one run, then the cost of idle connections to sockit chat.
#
#   bench/chat.sh              1000 clients in one room, 10 senders at 10 lines/s (the issue's load),
#                              then the same 10 senders flat out (saturation), then 10,000 idle clients
#   bench/chat.sh --quick      tiny load, ~1 s per phase (what CI may run once)
#   CLIENTS=500 SENDERS=20 RATE=5 DURATION=20s IDLE=5000 bench/chat.sh
#
# sockit chat runs with its default storage (SQLite history in a temporary file, group commit) and
# --rate 0, since the load sends faster than the default 5 lines/s per client. ncat gets -m so that
# it takes as many clients (its default is 100). Server CPU is utime+stime from /proc/PID/stat.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
SENDERS=${SENDERS:-10}
RATE=${RATE:-10}
DURATION=${DURATION:-10s}
IDLE=${IDLE:-10000}
THREADS=${THREADS:-}
QUICK=0

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    -c|--clients) CLIENTS=$2; shift ;;
    --senders) SENDERS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    -d|--duration) DURATION=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "chat.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  CLIENTS=20 SENDERS=2 RATE=10 DURATION=1s IDLE=200
fi

for tool in ncat python3 ss; do
  command -v "$tool" >/dev/null || { echo "chat.sh: $tool is missing (bash .ci/install-deps)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building (release)..." >&2
cargo build --release --quiet --bins
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SOCKIT=$TARGET_DIR/release/sockit
CLK_TCK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
source bench/lib.sh

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# Each phase gets fresh servers: ncat --chat does not always survive a thousand clients leaving at
# once (seen here: the next phase found its port closed), and neither server should carry the
# previous phase's backlog into the next.
start_servers() { # phase
  local phase=$1
  read -r P_SOCKIT P_NCAT <<<"$(free_ports 2)"
  start "sockit_$phase" "$P_SOCKIT" "$SOCKIT" -q chat "127.0.0.1:$P_SOCKIT" \
    --history "$WORK/history-$phase.sqlite3" --rate 0 --max-conns $((CLIENTS + 100))
  start "ncat_$phase" "$P_NCAT" ncat -l --chat 127.0.0.1 "$P_NCAT" -m $((CLIENTS + 100))
  PID_sockit=$(eval echo "\$PID_sockit_$phase")
  PID_ncat=$(eval echo "\$PID_ncat_$phase")
}

THREAD_FLAG=()
[ -n "$THREADS" ] && THREAD_FLAG=(--threads "$THREADS")

run_phase() { # phase rate
  local phase=$1 rate=$2 name port pid before after
  start_servers "$phase"
  for name in sockit ncat; do
    port_var="P_${name^^}"; port=${!port_var}
    pid_var="PID_$name"; pid=${!pid_var}
    echo "  $phase: $name (port $port, pid $pid)..." >&2
    before=$(cpu_ticks "$pid")
    if ! "$SOCKIT" bench chat "127.0.0.1:$port" -c "$CLIENTS" --senders "$SENDERS" --rate "$rate" \
      -d "$DURATION" "${THREAD_FLAG[@]}" --json >"$WORK/$phase-$name.json"; then
      echo "  $phase: $name: the benchmark failed (server gone?)" >&2
      echo '{"failed": true}' >"$WORK/$phase-$name.json"
    fi
    after=$(cpu_ticks "$pid")
    echo $(( after - before )) >"$WORK/$phase-$name.ticks"
  done
}

echo "load: $CLIENTS clients in one room, $SENDERS senders at $RATE lines/s, $DURATION" >&2
run_phase offered "$RATE"
echo "saturation: the same senders flat out" >&2
run_phase saturation 0

# Idle connections: a fresh server, its RSS before and while $IDLE clients sit connected.
read -r P_IDLE <<<"$(free_ports 1)"
start idle "$P_IDLE" "$SOCKIT" -q chat "127.0.0.1:$P_IDLE" --history "$WORK/idle.sqlite3" --max-conns $((IDLE + 100))
sleep 0.5
RSS_BEFORE=$(rss_kib "$PID_idle")
"$SOCKIT" bench chat "127.0.0.1:$P_IDLE" -c "$IDLE" --senders 0 -d 4s --json >"$WORK/idle.json" &
BENCH=$!
for i in $(seq 1 600); do
  n=$(ls "/proc/$PID_idle/fd" 2>/dev/null | wc -l)
  [ "$n" -ge "$IDLE" ] && break
  sleep 0.1
done
sleep 1.5
RSS_IDLE=$(rss_kib "$PID_idle")
wait "$BENCH"
echo "$RSS_BEFORE $RSS_IDLE" >"$WORK/idle.rss"

python3 - "$WORK" "$CLK_TCK" "$IDLE" <<'PY'
import json, sys
work, tck, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(phase, name):
    d = json.load(open(f"{work}/{phase}-{name}.json"))
    if d.get("failed"):
        return None
    ticks = int(open(f"{work}/{phase}-{name}.ticks").read())
    d["server_cpu_pct"] = ticks / tck / (d["duration_secs"] + 4) * 100  # measured + settle/warm-up/grace
    return d
for phase, title in [("offered", "offered load"), ("saturation", "saturation (senders flat out)")]:
    s, n = load(phase, "sockit"), load(phase, "ncat")
    print(f"\n{title}")
    hdr = ("server", "deliveries/s", "delivered", "p50", "p99", "max", "server CPU", "errors")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, d in [("sockit chat", s), ("ncat --chat", n)]:
        if d is None:
            print(f"| {name} | failed | | | | | | |")
            continue
        lat = d["latency"] or {}
        f = lambda k: f"{lat[k] / 1000:.1f} ms" if k in lat else "n/a"
        errs = d["connect_errors"] + d["disconnects"] + d["garbled"]
        print(f"| {name} | {d['delivered_per_sec']:,.0f} | {d['delivery_ratio'] * 100:.1f} % | {f('p50_us')} | "
              f"{f('p99_us')} | {f('max_us')} | {d['server_cpu_pct']:.0f} % | {errs} |")
    if s and n and n["delivered_per_sec"] > 0:
        print(f"ratio sockit / ncat deliveries/s: {s['delivered_per_sec'] / n['delivered_per_sec']:.1f}x")
before, during = map(int, open(f"{work}/idle.rss").read().split())
d = json.load(open(f"{work}/idle.json"))
print(f"\nidle: {d['connected']} clients connected to sockit chat: RSS {before / 1024:.1f} MiB -> "
      f"{during / 1024:.1f} MiB, {(during - before) * 1024 / max(d['connected'], 1) / 1024:.2f} KiB per connection")
PY
