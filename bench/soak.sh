#!/usr/bin/env bash
# Soak: sockit chat (default SQLite history, TCP and web page) under an hour of mixed load from
# bench/soak.py — a resident crowd, churners that join, talk, rename, part and leave, stalled
# readers, web and TCP clients — with the server's RSS and descriptors sampled every minute. Fails
# if memory grows after warm-up or descriptors are not given back once everyone has left.
#
#   bench/soak.sh                        one hour, a sample a minute
#   DURATION=600 SAMPLE=10 bench/soak.sh
# CI runs a two-minute version of the same checks (tests/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-3600}
SAMPLE=${SAMPLE:-60}
cargo build --release --quiet --bins
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
./target/release/sockit chat --history "$dir/chat.sqlite3" --web 127.0.0.1:0 127.0.0.1:0 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do grep -q "web page at" "$dir/log" && break; sleep 0.1; done
tcp=$(grep -o "listening on [^ ]*" "$dir/log" | head -1 | cut -d' ' -f3)
web=$(grep -o "web page at http://[^/]*" "$dir/log" | head -1 | sed 's|.*http://||')
echo "sockit chat pid $pid: tcp $tcp, web $web; ${DURATION}s, a sample every ${SAMPLE}s" >&2
python3 bench/soak.py --tcp "$tcp" --web "$web" --pid "$pid" --duration "$DURATION" --sample "$SAMPLE" \
    --json-out "${JSON_OUT:-/dev/null}"
