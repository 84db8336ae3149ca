#!/usr/bin/env bash
# Port-scan benchmark: every port (1-65535) of 127.0.0.1 with a few listeners open, scanned by
# sockit scan, by nmap's connect scan (`nmap -sT -T5 -p- 127.0.0.1`) and by the tutorial's
# 100-thread Python scanner (bench/scan_threads.py), side by side, round after round. Each round
# checks that each scanner found exactly the open set (the listeners, plus whatever else already
# listens on 127.0.0.1 or on every address, read from `ss` before the round), and prints the wall
# time; at the end, medians and sockit's speed-up over each.
#
#   bench/scan.sh                   5 rounds
#   RUNS=3 bench/scan.sh
#   PYTHON=0 bench/scan.sh          without the Python scanner (6-9 s a round)
#   SOCKIT=/path/to/sockit bench/scan.sh   that binary instead of building target/release/sockit
#
# Needs nmap (Debian: apt-get install nmap); CI does not run benchmarks, so .ci/install-deps does
# not install it. Only loopback is scanned.
#
# Measured on the project's 2-core machine, shared with another engineer's builds (load 4-6),
# 5 rounds, nmap 7.93:
#   sockit  median 0.56 s, fastest 0.48 s   every round exactly the open set
#   nmap    median 1.69 s, fastest 1.48 s   (1.5 s fast runs, 2.7-2.8 s slow ones)
#   python  median 2.55 s, fastest 2.34 s   wrong in every round: self-connects taken as open ports
#   sockit 3.0x nmap's median, 2.65x its fastest round; 4.6x the Python scanner.
# Where sockit's time goes (strace -c -f, perf record -g): two connect(2) calls per closed port and
# nothing else (a refused socket is reused: no socket/close per port; no epoll for answers already
# there; results batched to the collector), about 0.5 s of CPU for 65535 ports, 90 % of it in the
# kernel's TCP connect and RST path (route lookup, ephemeral port choice, the loopback RST), split
# evenly over the two cores. A single-threaded C loop of blocking socket/connect/close over the
# same ports costs 0.7-0.8 s of CPU here (2.3-2.7 s of wall time under that load): sockit spends
# less per port than that loop and spreads it over both cores, so what is left is the kernel's own
# cost per connect, divided by the cores.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
PYTHON=${PYTHON:-1}
LISTENERS=${LISTENERS:-5}

# shellcheck source=bench/lib.sh
. bench/lib.sh

BIN=$(sockit_bin)
command -v nmap >/dev/null || { echo "bench: nmap is not installed (apt-get install nmap)" >&2; exit 1; }

# A few listeners, held by one Python process for the whole run.
read -r -a OPEN <<<"$(free_ports "$LISTENERS")"
cat >"$WORK/listen.py" <<'PY'
import socket, sys, time
socks = []
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(p)))
    s.listen(128)
    socks.append(s)
time.sleep(3600)
PY
start listeners "${OPEN[0]}" python3 "$WORK/listen.py" "${OPEN[@]}"
for p in "${OPEN[@]}"; do wait_port "$p"; done

# What is open on 127.0.0.1 now: our listeners and any other program's.
expected() {
  ss -Hltn 2>/dev/null | awk '{print $4}' |
    grep -E '^(127\.0\.0\.1|0\.0\.0\.0|\*|\[::\]|\[::ffff:127\.0\.0\.1\]):[0-9]+$' |
    sed 's/.*://' | sort -n -u | tr '\n' ' '
}

now() { date +%s.%N; }
# "1.234" seconds between two `now` readings.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

declare -A TIMES
check() { # name found
  local want
  want=$(expected)
  if [ "$2" = "$want" ]; then echo "ok"; else echo "WRONG (found: $2; open: $want)"; fi
}

for round in $(seq 1 "$RUNS"); do
  t=$(now)
  found=$("$BIN" scan 127.0.0.1 -p- --jsonl --no-progress 2>/dev/null |
    grep '"type":"port"' | grep -o '"port":[0-9]*' | cut -d: -f2 | sort -n | tr '\n' ' ')
  s=$(since "$t")
  TIMES[sockit]+="$s "
  printf 'round %d  sockit  %6.3f s  %s\n' "$round" "$s" "$(check sockit "$found")"

  t=$(now)
  found=$(nmap -n -Pn -sT -T5 -p- -oG - 127.0.0.1 2>/dev/null |
    grep -o 'Ports: .*' | tr ',' '\n' | grep -o '[0-9]*/open' | cut -d/ -f1 | sort -n | tr '\n' ' ')
  s=$(since "$t")
  TIMES[nmap]+="$s "
  printf 'round %d  nmap    %6.3f s  %s\n' "$round" "$s" "$(check nmap "$found")"

  if [ "$PYTHON" = 1 ]; then
    t=$(now)
    found=$(python3 bench/scan_threads.py 127.0.0.1 1 65535 | tr '\n' ' ')
    s=$(since "$t")
    TIMES[python]+="$s "
    printf 'round %d  python  %6.3f s  %s\n' "$round" "$s" "$(check python "$found")"
  fi
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fastest() { tr ' ' '\n' <<<"$1" | grep . | sort -g | head -1; }
echo
printf '%-8s %10s %10s %s\n' tool median fastest "all rounds (s)"
for tool in sockit nmap python; do
  [ -n "${TIMES[$tool]:-}" ] || continue
  printf '%-8s %9.3fs %9.3fs %s\n' "$tool" "$(median "${TIMES[$tool]}")" "$(fastest "${TIMES[$tool]}")" "${TIMES[$tool]}"
done
ms=$(median "${TIMES[sockit]}")
awk -v s="$ms" -v n="$(median "${TIMES[nmap]}")" -v f="$(fastest "${TIMES[nmap]}")" \
  'BEGIN { printf "sockit is %.2fx faster than nmap (median vs median), %.2fx vs nmap'"'"'s fastest round\n", n / s, f / s }'
if [ -n "${TIMES[python]:-}" ]; then
  awk -v s="$ms" -v p="$(median "${TIMES[python]}")" 'BEGIN { printf "sockit is %.2fx faster than the 100-thread Python scanner (medians)\n", p / s }'
fi
