#!/usr/bin/env bash
# Chat benchmark: sockit chat against `ncat --chat` and the tutorials' Python thread-per-client room
# (bench/chat_threads.py), all driven by the same `sockit bench chat` load in one run; then the cost
# of idle connections to sockit chat.
#
#   bench/chat.sh              the four phases below, about 5 minutes
#   bench/chat.sh --quick      tiny loads, ~1 s per step (what CI may run once)
#   CLIENTS=500 RAMP="1 2 4" SLO_P99_MS=50 bench/chat.sh
#   SERVERS="sockit base" BASE=/path/to/older/sockit bench/chat.sh   an A/B of two sockit builds
#
# Phases, each step on freshly started servers:
#   1. reference   the issue's load: CLIENTS in one room, SENDERS talking at RATE lines/s each,
#                  REF_RUNS times per server, taking turns (latency on a shared machine is noisy;
#                  the median of the runs is reported)
#   2. saturation  every client talks, at RAMP lines/s each, doubling; a server's ramp stops at its
#                  first step that misses the bar (>= 99.9 % delivered and p99 <= SLO_P99_MS). Its
#                  capacity is the highest delivered rate it sustained; past that point it falls
#                  further behind the longer it runs, so what it "delivers" there is not a rate.
#   3. one stream  SENDERS flat out on one connection each (a bulk relay test: ncat forwards whole
#                  recv() chunks with one prefix, so lines after the first in a chunk lose their
#                  sender and lines cut at a chunk edge are garbled; both are counted as the load
#                  generator sees them)
#   4. idle        IDLE clients connected to sockit chat: server RSS per connection
#
# sockit chat runs with its default storage (SQLite history in a temporary file, group commit) and
# --rate 0, since the loads send faster than its default 5 lines/s per client. ncat gets -m so that it
# takes as many clients (its default is 100), and clients connect 8 at a time: its listen backlog is
# 10, and a client that gives up on a queued connection makes it quit. Server CPU is read by the load
# generator from /proc/PID/stat at both ends of the measured window (--server-pid).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
SENDERS=${SENDERS:-10}
RATE=${RATE:-10}
DURATION=${DURATION:-10s}
REF_RUNS=${REF_RUNS:-3}
RAMP=${RAMP:-0.1 0.2 0.5 1 2 4 8 16}
RAMP_DURATION=${RAMP_DURATION:-5s}
SLO_P99_MS=${SLO_P99_MS:-100}
IDLE=${IDLE:-10000}
SERVERS=${SERVERS:-sockit ncat python}
THREADS=${THREADS:-}
QUICK=0

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "chat.sh: unknown argument $1 (try --help; settings are environment variables)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  CLIENTS=20 SENDERS=2 RATE=10 DURATION=1s REF_RUNS=1 RAMP="1 2" RAMP_DURATION=1s IDLE=200
fi

for tool in python3 ss $(echo " $SERVERS " | grep -o ' ncat '); do
  command -v "$tool" >/dev/null || { echo "chat.sh: $tool is missing (bash .ci/install-deps)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building (release)..." >&2
cargo build --release --quiet --bins
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SOCKIT=$TARGET_DIR/release/sockit

# shellcheck source=bench/lib.sh
source bench/lib.sh

THREAD_FLAG=()
[ -n "$THREADS" ] && THREAD_FLAG=(--threads "$THREADS")
STEP=0

# Starts a fresh server (ncat --chat does not always survive a thousand clients leaving at once, and
# no server should carry one step's backlog into the next); sets PORT and SERVER_PID.
start_server() { # server
  STEP=$((STEP + 1))
  read -r PORT <<<"$(free_ports 1)"
  local name="$1_$STEP"
  case "$1" in
    sockit) start "$name" "$PORT" "$SOCKIT" -q chat "127.0.0.1:$PORT" \
      --history "$WORK/history-$STEP.sqlite3" --rate 0 --max-conns $((CLIENTS + 100)) ;;
    base) start "$name" "$PORT" "${BASE:?set BASE to the sockit binary to compare with}" -q chat \
      "127.0.0.1:$PORT" --history "$WORK/history-$STEP.sqlite3" --rate 0 --max-conns $((CLIENTS + 100)) ;;
    ncat) start "$name" "$PORT" ncat -l --chat 127.0.0.1 "$PORT" -m $((CLIENTS + 100)) ;;
    python) start "$name" "$PORT" python3 bench/chat_threads.py "127.0.0.1:$PORT" ;;
  esac
  SERVER_PID=$(eval echo "\$PID_$name")
}

stop_server() {
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# One measured step against a fresh server; the report goes to $WORK/OUT.json.
measure() { # server out senders rate duration
  local server=$1 out=$2 senders=$3 rate=$4 duration=$5 extra=()
  [ "$server" = ncat ] && extra=(--connect-parallel 8)
  start_server "$server"
  echo "  $out (port $PORT, pid $SERVER_PID)..." >&2
  if ! "$SOCKIT" bench chat "127.0.0.1:$PORT" -c "$CLIENTS" --senders "$senders" --rate "$rate" \
    -d "$duration" --server-pid "$SERVER_PID" "${extra[@]}" "${THREAD_FLAG[@]}" --json \
    >"$WORK/$out.json"; then
    echo "  $out: the benchmark failed (server gone?)" >&2
    echo '{"failed": true}' >"$WORK/$out.json"
  fi
  stop_server
}

# Whether a step's report clears the bar.
holds() { # out
  python3 - "$WORK/$1.json" "$SLO_P99_MS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = (not d.get("failed") and d["connect_errors"] == 0 and d["delivery_ratio"] >= 0.999
      and d["latency"] and d["latency"]["p99_us"] <= float(sys.argv[2]) * 1000)
sys.exit(0 if ok else 1)
PY
}

echo "1. reference: $CLIENTS clients in one room, $SENDERS talking at $RATE lines/s, $DURATION x $REF_RUNS" >&2
for run in $(seq 1 "$REF_RUNS"); do
  for server in $SERVERS; do
    measure "$server" "reference-$server-$run" "$SENDERS" "$RATE" "$DURATION"
  done
done

echo "2. saturation: all $CLIENTS clients talking, at $RAMP lines/s each, $RAMP_DURATION per step" >&2
for server in $SERVERS; do
  for rate in $RAMP; do
    measure "$server" "ramp-$server-$rate" "$CLIENTS" "$rate" "$RAMP_DURATION"
    holds "ramp-$server-$rate" || break
  done
done

echo "3. one stream: $SENDERS senders flat out" >&2
for server in $SERVERS; do
  [ "$server" = python ] && continue # a thread per client: the reference and ramp say enough
  measure "$server" "stream-$server" "$SENDERS" 0 "$DURATION"
done

echo "4. idle: $IDLE clients connected to sockit chat" >&2
read -r P_IDLE <<<"$(free_ports 1)"
start idle "$P_IDLE" "$SOCKIT" -q chat "127.0.0.1:$P_IDLE" --history "$WORK/idle.sqlite3" --max-conns $((IDLE + 100))
sleep 0.5
RSS_BEFORE=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID_idle/status")
"$SOCKIT" bench chat "127.0.0.1:$P_IDLE" -c "$IDLE" --senders 0 -d 4s --json >"$WORK/idle.json" &
BENCH=$!
for _ in $(seq 1 600); do
  n=$(find "/proc/$PID_idle/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  [ "$n" -ge "$IDLE" ] && break
  kill -0 "$BENCH" 2>/dev/null || break # the load generator gave up
  sleep 0.1
done
sleep 1.5
RSS_IDLE=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID_idle/status")
wait "$BENCH" || echo '{"failed": true}' >"$WORK/idle.json"
echo "$RSS_BEFORE $RSS_IDLE" >"$WORK/idle.rss"

python3 - "$WORK" "$SLO_P99_MS" "$SERVERS" "$RAMP" "$REF_RUNS" <<'PY'
import json, os, statistics, sys
work, slo_ms, servers, ramp = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
runs = int(sys.argv[5])
names = {"sockit": "sockit chat", "base": "sockit chat (BASE)", "ncat": "ncat --chat", "python": "python threads"}

def load(out):
    path = f"{work}/{out}.json"
    if not os.path.exists(path):
        return None
    d = json.load(open(path))
    return None if d.get("failed") else d

def ms(d, k):
    lat = d["latency"] or {}
    return f"{lat[k] / 1000:.1f} ms" if k in lat else "n/a"

def cpu(d):
    c = d.get("server_cpu")
    if not c:
        return ("n/a", "n/a")
    per = c.get("us_per_op")
    return (f"{c['percent']:.0f} %", f"{per:.3f}" if per is not None else "n/a")

def errors(d):
    return d["connect_errors"] + d["disconnects"] + d["garbled"]

def holds(d):
    return (d is not None and d["connect_errors"] == 0 and d["delivery_ratio"] >= 0.999
            and d["latency"] and d["latency"]["p99_us"] <= slo_ms * 1000)

def table(title, rows, first="server"):
    print(f"\n{title}")
    hdr = (first, "offered/s", "delivered/s", "delivered", "p50", "p99", "max", "server CPU",
           "CPU µs/delivery", "errors")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for label, d in rows:
        if d is None:
            print(f"| {label} | failed |" + " |" * (len(hdr) - 2))
            continue
        c = cpu(d)
        print(f"| {label} | {d['offered_per_sec']:,.0f} | {d['delivered_per_sec']:,.0f} | "
              f"{d['delivery_ratio'] * 100:.1f} % | {ms(d, 'p50_us')} | {ms(d, 'p99_us')} | "
              f"{ms(d, 'max_us')} | {c[0]} | {c[1]} | {errors(d)} |")

table("1. reference load", [(f"{names[s]} #{r}", load(f"reference-{s}-{r}"))
                           for r in range(1, runs + 1) for s in servers])
print()
for s in servers:
    got = [d for d in (load(f"reference-{s}-{r}") for r in range(1, runs + 1)) if d and d["latency"]]
    if got:
        p99 = statistics.median(d["latency"]["p99_us"] / 1000 for d in got)
        ratio = min(d["delivery_ratio"] for d in got) * 100
        print(f"{names[s]}: median p99 {p99:.1f} ms over {len(got)} run(s), lowest delivered {ratio:.1f} %")

rows, peak, miss = [], {}, {}
for s in servers:
    for rate in ramp:
        d = load(f"ramp-{s}-{rate}")
        if d is None and not os.path.exists(f"{work}/ramp-{s}-{rate}.json"):
            break
        mark = "yes" if holds(d) else "NO"
        rows.append((f"{names[s]} @ {rate}/s/client (holds: {mark})", d))
        if holds(d):
            peak[s] = max(peak.get(s, 0), d["delivered_per_sec"])
        else:
            miss[s] = d["offered_per_sec"] if d else None
            break
table(f"2. saturation: every client talking (holds = >= 99.9 % delivered, p99 <= {slo_ms:g} ms)",
      rows, first="server @ rate")
print()
for s in servers:
    top = f"{peak[s]:,.0f}/s" if s in peak else "none of the steps"
    first_miss = f"; first miss at {miss[s]:,.0f}/s offered" if miss.get(s) else (
        "; never missed (raise RAMP)" if s not in miss else "")
    print(f"{names[s]}: sustained {top}{first_miss}")
if "sockit" in peak and "base" in peak:
    print(f"capacity ratio sockit / BASE: {peak['sockit'] / peak['base']:.2f}x")
if "sockit" in peak and "ncat" in servers:
    if "ncat" in peak:
        print(f"capacity ratio sockit / ncat: {peak['sockit'] / peak['ncat']:.0f}x"
              + (f" (at least {peak['sockit'] / miss['ncat']:.0f}x against the load ncat missed)"
                 if miss.get("ncat") else ""))
    elif miss.get("ncat"):
        print(f"capacity ratio sockit / ncat: more than {peak['sockit'] / miss['ncat']:.0f}x "
              "(ncat missed even the first step)")

table("3. one stream per sender, flat out (bulk relay; see --help)",
      [(names[s], load(f"stream-{s}")) for s in servers if s != "python"])

before, during = map(int, open(f"{work}/idle.rss").read().split())
d = load("idle")
if d is None:
    print("\n4. idle: the load generator failed; no figure")
    sys.exit(1)
print(f"\n4. idle: {d['connected']} clients connected to sockit chat: RSS {before / 1024:.1f} MiB -> "
      f"{during / 1024:.1f} MiB, {(during - before) * 1024 / max(d['connected'], 1) / 1024:.2f} KiB per connection")
PY
