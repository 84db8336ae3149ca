#!/usr/bin/env bash
# Chat cluster benchmark: sockit chat on two nodes sharing one redis-server (AOF, appendfsync
# always), against one sockit chat node with its default SQLite history, at the same load, side by
# side; then the most messages per second one room takes through the cluster, against the raw
# publish script (the same Lua, driven flat out by redis-benchmark).
#
#   bench/chat-cluster.sh            both phases, 2 to 4 minutes
#   RUNS=1 DURATION=5s bench/chat-cluster.sh
#   FSYNC=everysec bench/chat-cluster.sh    Redis with appendfsync everysec (and the nodes relaxed)
#
# Phase 1, the issue's load: CLIENTS (1000) in one room, SENDERS (10) at RATE (10) lines/s, spread
# over the two nodes (client i on node i mod 2, so senders and receivers are on both), RUNS times,
# single node and cluster taking turns; the medians of delivery ratio and p50/p99 delivery latency.
# Phase 2, one room at rising rates: 20 clients, 10 of them sending ROOM_RAMP lines/s each (x10
# for the room), through the cluster; the room's rate is the highest step with >= 99.9 % delivered
# and p99 <= SLO_P99_MS (flat out, --rate 0, is not a rate: the lines pile up in the sockets and
# latency grows for as long as it runs). The raw figure is redis-benchmark running the publish
# script (50 clients, a record of the same size) against the same Redis, one room's keys; the
# ratio is the room's rate over it.
#
# Measured on the project's 2-core machine (2026-12-04 19:59, RUNS=3 DURATION=10s, Redis 7.0.15,
# appendfsync always; two nodes, the load generator and Redis share the two cores):
#   phase 1  single node: 100 % delivered, p50 5.2 ms, p99 10.9 ms (medians of 3)
#            cluster:     100 % delivered, p50 5.5 ms, p99 11.2 ms: +0.2 ms (target +1.5 ms), but
#            per run +9.4, -0.7, +2.4 ms, and +4.0 ms (medians) in the run before: not reliably met
#   phase 2  one room through the cluster: 30,000 messages/s held (p99 84 ms; 35,000/s: p99 1.5 s)
#            against the raw script's 75,000/s: 0.40x (target 0.80x: a miss). Before the feed
#            delivered what had arrived in one go: 10,000/s (0.13x).
# Where the time goes: each message crosses both nodes' feeds (each node gets every room's
# messages: one pattern subscription), is encoded and decoded as JSON twice, and waits for
# Redis's fsync; the raw script's 50 clients have no subscribers to feed and no sockets to fan
# out to, on the same two cores.
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools; .ci/install-deps
# installs them). Loopback only. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-1000}
SENDERS=${SENDERS:-10}
RATE=${RATE:-10}
FSYNC=${FSYNC:-always}
ROOM_RAMP=${ROOM_RAMP:-500 1000 1500 2000 2500 3000 3500 4000}
SLO_P99_MS=${SLO_P99_MS:-100}
RAW_REQUESTS=${RAW_REQUESTS:-200000}

# shellcheck source=bench/lib.sh
. bench/lib.sh

for tool in redis-server redis-benchmark redis-cli python3 ss; do
  command -v "$tool" >/dev/null || { echo "chat-cluster.sh: $tool is missing (bash .ci/install-deps)" >&2; exit 1; }
done
BIN=$(sockit_bin)
DURABILITY=fsync
[ "$FSYNC" = always ] || DURABILITY=relaxed

read -r P_REDIS P_A P_B P_ONE <<<"$(free_ports 4)"
mkdir -p "$WORK/redis"
start redis "$P_REDIS" redis-server --port "$P_REDIS" --bind 127.0.0.1 --dir "$WORK/redis" \
  --save "" --appendonly yes --appendfsync "$FSYNC"
URL="redis://127.0.0.1:$P_REDIS"

# One node of the cluster, or the single node (SQLite history in the work folder).
node() { # name port args...
  local name=$1 port=$2
  shift 2
  start "$name" "$port" "$BIN" chat "127.0.0.1:$port" --rate 0 --quiet "$@"
}
stop() { # name
  local pid_var="PID_$1"
  kill -TERM -- "-${!pid_var}" 2>/dev/null || true
  wait "${!pid_var}" 2>/dev/null || true
}

# One `sockit bench chat` run; prints "ratio p50_ms p99_ms sent_per_s".
load() { # clients senders rate targets...
  local clients=$1 senders=$2 rate=$3
  shift 3
  "$BIN" bench chat "$@" -c "$clients" --senders "$senders" --rate "$rate" -d "$DURATION" --json \
    2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
lat = r.get("latency") or {}
print("%.4f %.2f %.2f %.0f" % (r["delivery_ratio"], lat.get("p50_us", 0) / 1000,
      lat.get("p99_us", 0) / 1000, r["sent"] / r["duration_secs"]))'
}

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

echo "phase 1: $CLIENTS clients in one room, $SENDERS senders x $RATE lines/s, $DURATION, $RUNS run(s); Redis appendfsync $FSYNC"
printf '%-4s %-8s %10s %10s %10s\n' run setup delivered p50_ms p99_ms
declare -A RATIO P50 P99
for run in $(seq 1 "$RUNS"); do
  node one "$P_ONE" --history "$WORK/one-$run.sqlite3"
  read -r r p50 p99 _ <<<"$(load "$CLIENTS" "$SENDERS" "$RATE" "127.0.0.1:$P_ONE")"
  stop one
  printf '%-4s %-8s %10s %10s %10s\n' "$run" single "$r" "$p50" "$p99"
  RATIO[single]+="$r " P50[single]+="$p50 " P99[single]+="$p99 "

  redis-cli -p "$P_REDIS" FLUSHALL >/dev/null
  node a "$P_A" --cluster "$URL" --cluster-durability "$DURABILITY"
  node b "$P_B" --cluster "$URL" --cluster-durability "$DURABILITY"
  read -r r p50 p99 _ <<<"$(load "$CLIENTS" "$SENDERS" "$RATE" "127.0.0.1:$P_A" "127.0.0.1:$P_B")"
  stop a
  stop b
  printf '%-4s %-8s %10s %10s %10s\n' "$run" cluster "$r" "$p50" "$p99"
  RATIO[cluster]+="$r " P50[cluster]+="$p50 " P99[cluster]+="$p99 "
done
echo
echo "medians:"
for setup in single cluster; do
  # shellcheck disable=SC2086
  printf '%-8s delivered %s  p50 %s ms  p99 %s ms\n' "$setup" "$(median ${RATIO[$setup]})" \
    "$(median ${P50[$setup]})" "$(median ${P99[$setup]})"
done
# shellcheck disable=SC2086
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("cluster p99 - single p99: %+.2f ms (target: within +1.5 ms)" % (b - a))' \
  "$(median ${P99[single]})" "$(median ${P99[cluster]})"

echo
echo "phase 2: the most one room sustains through the cluster (20 clients, 10 senders, rising rates, $DURATION each)"
printf '%-12s %10s %10s %10s\n' lines/s delivered p99_ms sent/s
BEST=0
for per_sender in $ROOM_RAMP; do
  redis-cli -p "$P_REDIS" FLUSHALL >/dev/null
  node a "$P_A" --cluster "$URL" --cluster-durability "$DURABILITY"
  node b "$P_B" --cluster "$URL" --cluster-durability "$DURABILITY"
  read -r r _ p99 sent <<<"$(load 20 10 "$per_sender" "127.0.0.1:$P_A" "127.0.0.1:$P_B")"
  stop a
  stop b
  printf '%-12s %10s %10s %10s\n' "$((per_sender * 10))" "$r" "$p99" "$sent"
  # Sustained: (nearly) everything delivered within the bar.
  if python3 -c 'import sys; r, p, slo = map(float, sys.argv[1:]); sys.exit(0 if r >= 0.999 and p <= slo else 1)' "$r" "$p99" "$SLO_P99_MS"; then
    BEST=$sent
  else
    break
  fi
done
# The raw script: the one the nodes run, loaded into Redis, driven by 50 redis-benchmark clients
# on one room's keys with a record of the size the load generator's lines make.
SHA=$(redis-cli -p "$P_REDIS" SCRIPT LOAD "$(cat src/chat/cluster/publish.lua)")
# (No commas or quotes: redis-benchmark's CSV names the test by its arguments.)
PAYLOAD=$(python3 -c 'print("x" * 140)')
RAW=$(redis-benchmark -p "$P_REDIS" -c 50 -n "$RAW_REQUESTS" --csv \
  EVALSHA "$SHA" 3 'sockit:{raw}:meta' 'sockit:{raw}:log' 'sockit:{raw}:dup:__rand_int__' \
  'sockit:{raw}:ch' "$PAYLOAD" 10000 epoch 300 |
  python3 -c 'import csv, sys; rows = list(csv.reader(sys.stdin)); print(rows[-1][1])')
printf 'one room through the cluster: %s messages/s sustained (p99 <= %s ms, >= 99.9 %% delivered)\n' "$BEST" "$SLO_P99_MS"
printf 'raw publish script (redis-benchmark, 50 clients): %s/s\n' "$RAW"
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("cluster / raw script: %.2fx (target: >= 0.80x)" % (a / b))' "$BEST" "$RAW"
