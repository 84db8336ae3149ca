#!/usr/bin/env bash
# File transfer benchmark (issue #16, "Targets"): 1 GiB of random data over loopback, side by side
# in one run:
#   sockit    sockit send FILE -> sockit recv DIR (blake3 at both ends; the receiver writes a
#             partial, verifies, fsyncs, renames); the copy is also compared with cmp, untimed
#   socat-1M  socat -u -b 1048576 OPEN:FILE TCP:... -> socat -u -b 1048576 TCP-LISTEN:... OPEN:OUT
#             (a raw pipe: nothing verified)
#   socat     the same with socat's default 8 KiB buffers
#   cp        a local cp of the same file
# Source and copies are in /dev/shm, so the disk is out of the comparison. One warm-up round, then
# ROUNDS (3) interleaved rounds (sockit, socat-1M, socat, cp, then again); the best of them counts.
# Each run's time is from starting the sender (the receiver already listens) until both ends have
# exited. Then the durable variant: the files on the real disk (a folder under $TMPDIR or DISK_DIR),
# sockit (whose receiver fsyncs) against `cp` followed by `sync FILE` (that file's data and
# metadata, not the whole machine's dirty pages, which other jobs on a shared machine would add).
#
#   bench/transfer.sh                    1 GiB, 3 rounds, then the durable variant
#   SIZE_MB=256 ROUNDS=1 bench/transfer.sh
#   DURABLE=0 bench/transfer.sh          without the durable variant
#   SHM_RUNS=0 bench/transfer.sh         only the durable variant
#   SOCKIT=/path/to/sockit bench/transfer.sh   that binary instead of building target/release/sockit
#   RUN_LIMIT=120 TOTAL_LIMIT=1200       seconds allowed per run (killed after) and for the whole script
#
# CPU seconds (user+system, both ends together) come from GNU time when /usr/bin/time is there.
# Only the side-by-side ratios count: the figures move between machines and with the load.
# Targets: sockit >= 0.45x socat-1M and >= 0.8x socat (default), verified at both ends.
# Needs socat (Debian: apt-get install socat) and python3 (for free ports, via bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
DURABLE=${DURABLE:-1}
SHM_RUNS=${SHM_RUNS:-1}
RUN_LIMIT=${RUN_LIMIT:-120}
TOTAL_LIMIT=${TOTAL_LIMIT:-1200}

# shellcheck source=bench/lib.sh
. bench/lib.sh

SHM=$(mktemp -d /dev/shm/sockit-bench.XXXXXX)
DISK_WORK=""
cleanup_transfer() {
  rm -rf "$SHM"
  [ -n "$DISK_WORK" ] && rm -rf "$DISK_WORK"
  cleanup
}
trap cleanup_transfer EXIT

for tool in socat python3 cmp; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench/transfer.sh needs $tool (Debian: apt-get install $tool)" >&2
    exit 1
  }
done
BIN=$(sockit_bin)
BIN=$(realpath "$BIN")
GTIME=""
if /usr/bin/time -f %U true >/dev/null 2>&1; then GTIME=/usr/bin/time; fi

BYTES=$((SIZE_MB * 1024 * 1024))
need_kb=$((SIZE_MB * 1024 * 3))
avail_kb=$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')
if [ "$avail_kb" -lt "$need_kb" ]; then
  echo "bench: /dev/shm has $((avail_kb / 1024)) MiB free, needs $((need_kb / 1024))" >&2
  exit 1
fi

# Past the whole-script limit: stop with what we have.
check_total() {
  if [ "$SECONDS" -gt "$TOTAL_LIMIT" ]; then
    echo "bench: over TOTAL_LIMIT=${TOTAL_LIMIT}s, stopping" >&2
    exit 1
  fi
}

now() { date +%s.%N; }

# Random data, fast: AES-CTR keystream (openssl), else the kernel's.
make_random() { # path bytes
  if command -v openssl >/dev/null 2>&1; then
    # openssl ends on SIGPIPE once head has its bytes: that is the normal end here.
    { openssl enc -aes-128-ctr -nosalt -pass pass:sockit-bench -pbkdf2 </dev/zero 2>/dev/null || true; } |
      head -c "$2" >"$1"
  else
    head -c "$2" /dev/urandom >"$1"
  fi
  [ "$(stat -c %s "$1")" -eq "$2" ] || { echo "bench: could not write $2 bytes to $1" >&2; exit 1; }
}

# A receiver in its own session, under the per-run limit; its pid in RX_PID.
start_rx() { # name port command...
  local name=$1 port=$2
  shift 2
  if [ -n "$GTIME" ]; then
    setsid timeout "$RUN_LIMIT" "$GTIME" -f '%U %S' -o "$WORK/$name.rx.cpu" "$@" >"$WORK/$name.rx.log" 2>&1 &
  else
    setsid timeout "$RUN_LIMIT" "$@" >"$WORK/$name.rx.log" 2>&1 &
  fi
  RX_PID=$!
  PIDS+=("$RX_PID")
  # Like lib.sh's wait_port (without connecting), but says why when the receiver is gone.
  local i
  for i in $(seq 1 300); do
    if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then return 0; fi
    kill -0 "$RX_PID" 2>/dev/null || fail_run "$name" "the receiver exited before listening"
    sleep 0.05
  done
  fail_run "$name" "nothing listens on port $port after 15 s"
}

# Runs the sender under the limit.
run_tx() { # name command...
  local name=$1
  shift
  if [ -n "$GTIME" ]; then
    timeout "$RUN_LIMIT" "$GTIME" -f '%U %S' -o "$WORK/$name.tx.cpu" "$@" >"$WORK/$name.tx.log" 2>&1
  else
    timeout "$RUN_LIMIT" "$@" >"$WORK/$name.tx.log" 2>&1
  fi
}

cpu_of() { # name: CPU seconds of the last run's ends (0 when unknown)
  local total=0 f
  for f in "$WORK/$1.rx.cpu" "$WORK/$1.tx.cpu"; do
    [ -s "$f" ] || continue
    total=$(awk -v t="$total" 'END { print t + $1 + $2 }' "$f")
  done
  echo "$total"
}

fail_run() { # name what
  echo "bench: $1 failed: $2" >&2
  [ -n "${RX_PID:-}" ] && kill -TERM -- "-$RX_PID" 2>/dev/null
  for f in "$WORK/$1".*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
  exit 1
}

# One run of TOOL from SRC into the folder DST; prints "seconds cpu_seconds".
one_run() { # tool src dst_dir verify(0/1)
  local tool=$1 src=$2 dst=$3 verify=$4 port t0 t1 out
  rm -rf "$dst"
  mkdir -p "$dst"
  rm -f "$WORK/$tool".*.cpu
  out="$dst/$(basename "$src")"
  case $tool in
    sockit | sockit-durable)
      read -r port <<<"$(free_ports 1)"
      start_rx "$tool" "$port" "$BIN" recv "$dst" --listen "127.0.0.1:$port"
      t0=$(now)
      run_tx "$tool" "$BIN" send "$src" "127.0.0.1:$port" || fail_run "$tool" "send exit $?"
      wait "$RX_PID" || fail_run "$tool" "recv exit $?"
      t1=$(now)
      ;;
    socat-1M | socat)
      local b=()
      [ "$tool" = socat-1M ] && b=(-b 1048576)
      read -r port <<<"$(free_ports 1)"
      start_rx "$tool" "$port" socat -u "${b[@]}" "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "OPEN:$out,creat,trunc"
      t0=$(now)
      run_tx "$tool" socat -u "${b[@]}" "OPEN:$src,rdonly" "TCP:127.0.0.1:$port" || fail_run "$tool" "sender exit $?"
      wait "$RX_PID" || fail_run "$tool" "receiver exit $?"
      t1=$(now)
      ;;
    cp)
      t0=$(now)
      run_tx cp cp "$src" "$out" || fail_run cp "exit $?"
      t1=$(now)
      ;;
    cp-sync)
      t0=$(now)
      run_tx cp-sync sh -c 'cp "$1" "$2" && sync "$2"' sh "$src" "$out" || fail_run cp-sync "exit $?"
      t1=$(now)
      ;;
  esac
  PIDS=()
  [ -f "$out" ] || fail_run "$tool" "no $out"
  [ "$(stat -c %s "$out")" -eq "$(stat -c %s "$src")" ] || fail_run "$tool" "$out has the wrong size"
  if [ "$verify" = 1 ]; then
    cmp -s "$src" "$out" || fail_run "$tool" "$out differs from $src"
  fi
  awk -v a="$t0" -v b="$t1" -v c="$(cpu_of "$tool")" 'BEGIN { printf "%.3f %.2f\n", b - a, c }'
}

# Rounds of TOOLS from SRC (in folder BASE); results in $WORK/results.NAME as "tool seconds cpu".
rounds() { # label base src tools...
  local label=$1 base=$2 src=$3 round tool r
  shift 3
  local tools=("$@")
  : >"$WORK/results.$label"
  for round in $(seq 0 "$ROUNDS"); do
    for tool in "${tools[@]}"; do
      check_total
      # The warm-up (round 0) is checked with cmp and not counted; the last round is checked too.
      local verify=0
      { [ "$round" = 0 ] || [ "$round" = "$ROUNDS" ]; } && verify=1
      r=$(one_run "$tool" "$src" "$base/out-$tool" "$verify")
      rm -rf "$base/out-$tool"
      if [ "$round" = 0 ]; then
        printf '  warm-up  %-15s %8.3f s\n' "$tool" "${r%% *}"
      else
        printf '  round %d  %-15s %8.3f s\n' "$round" "$tool" "${r%% *}"
        echo "$tool $r" >>"$WORK/results.$label"
      fi
    done
  done
}

# The table of the best rounds for LABEL.
table() { # label tools...
  local label=$1 tool
  shift
  printf '%-15s %9s %9s %12s   %s\n' tool "best s" "MB/s" "CPU s (best)" "all rounds (s)"
  for tool in "$@"; do
    awk -v t="$tool" -v bytes="$BYTES" '$1 == t {
        all = all sprintf(" %.3f", $2)
        if (best == "" || $2 < best) { best = $2; cpu = $3 } }
      END { printf "%-15s %9.3f %9.0f %12.2f  %s\n", t, best, bytes / best / 1e6, cpu, all }' \
      "$WORK/results.$label"
  done
}

best() { # label tool
  awk -v t="$2" '$1 == t && (b == "" || $2 < b) { b = $2 } END { print b }' "$WORK/results.$1"
}

echo "bench/transfer.sh: ${SIZE_MB} MiB of random data, $(nproc) CPUs, warm-up + $ROUNDS interleaved rounds, best counts"
echo "sockit: $BIN"
make_random "$SHM/src.bin" "$BYTES"

if [ "$SHM_RUNS" = 1 ]; then
  echo
  echo "in /dev/shm (no disk):"
  rounds shm "$SHM" "$SHM/src.bin" sockit socat-1M socat cp
  echo
  table shm sockit socat-1M socat cp
  s=$(best shm sockit)
  awk -v s="$s" -v m="$(best shm socat-1M)" -v d="$(best shm socat)" -v c="$(best shm cp)" 'BEGIN {
    printf "\nsockit / socat -b 1M   %.2fx  (target >= 0.45x)  %s\n", m / s, (m / s >= 0.45) ? "met" : "NOT met"
    printf "sockit / socat default %.2fx  (target >= 0.80x)  %s\n", d / s, (d / s >= 0.8) ? "met" : "NOT met"
    printf "sockit / cp            %.2fx\n", c / s
  }'
fi

if [ "$DURABLE" = 1 ]; then
  base=${DISK_DIR:-${TMPDIR:-/tmp}}
  DISK_WORK=$(mktemp -d "$base/sockit-bench-disk.XXXXXX")
  fs=$(df -PT "$DISK_WORK" | awk 'NR == 2 { print $2 }')
  if [ "$fs" = tmpfs ]; then
    echo "bench: $DISK_WORK is on tmpfs, not a disk; set DISK_DIR" >&2
    exit 1
  fi
  avail_kb=$(df -Pk "$DISK_WORK" | awk 'NR == 2 { print $4 }')
  if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "bench: $DISK_WORK has too little space for the durable variant, skipped" >&2
    exit 0
  fi
  cp "$SHM/src.bin" "$DISK_WORK/src.bin"
  sync "$DISK_WORK/src.bin"
  rm -f "$SHM/src.bin"
  echo
  echo "durable, on the disk ($fs, $DISK_WORK): sockit (fsync before rename) vs cp + sync FILE"
  rounds disk "$DISK_WORK" "$DISK_WORK/src.bin" sockit-durable cp-sync
  echo
  table disk sockit-durable cp-sync
  awk -v s="$(best disk sockit-durable)" -v c="$(best disk cp-sync)" \
    'BEGIN { printf "\nsockit (durable) / cp + sync %.2fx\n", c / s }'
fi
echo "total ${SECONDS}s"
