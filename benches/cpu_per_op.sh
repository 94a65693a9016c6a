#!/usr/bin/env bash
# benches/cpu_per_op.sh — where the machine's CPU goes per operation.
#
# Starts a 3-node capkv (`kv dev`), runs one `kv bench` (no warm-up), and
# reads the CPU time (user + system, from /proc/PID/stat) each node process
# used during the run, plus the load generator's own. Prints ops/s and
# microseconds of CPU per operation for the Raft leader, each other node
# and the load generator, and how busy the machine's cores were. (For
# get and mixed, the pre-population of --keys is inside the measured time.)
#
# On a machine where every process shares a few cores, throughput is the
# machine's CPU divided by the CPU one operation costs; this says which
# process to make cheaper. Everything it starts is stopped on exit.
#
# Usage: benches/cpu_per_op.sh [options]
#   --op OP            kv bench op (default set)
#   --consistency L    eventual | quorum | linearizable (default linearizable)
#   --clients N        (default 32)
#   --duration D       (default 10s)
#   --value-size B     (default 128)
#   --keys K           (default 1000)
#   --port P           first capkv port (default 17101; clients P..P+2, peers P+1000..P+1002)
#   --no-build         use the kv binary already in $CARGO_TARGET_DIR/release
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

OP=set LEVEL=linearizable CLIENTS=32 DURATION=10s VALUE_SIZE=128 KEYS=1000 PORT=17101 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --op) OP=$2; shift 2 ;;
    --consistency) LEVEL=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cpu_per_op.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

capkv_need_packages jq time bc procps
[ "$BUILD" = 1 ] && capkv_build
KV="$CAPKV_BIN/kv"
[ -x "$KV" ] || { echo "cpu_per_op.sh: $KV not found (drop --no-build)" >&2; exit 2; }

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/capkv-cpu.XXXXXX")
dev_pid=
cleanup() {
  if [ -n "$dev_pid" ]; then
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dev_ok=0
capkv_start_dev "$PORT" "$WORK_DIR/capkv" "$WORK_DIR/dev" && dev_ok=1
dev_pid=$CAPKV_DEV_PID
[ "$dev_ok" = 1 ] || exit 1
endpoints=$CAPKV_ENDPOINTS
# One linearizable write: the Raft leader exists before the clock starts.
for _ in $(seq 1 100); do
  "$KV" --endpoints "$endpoints" --consistency linearizable set cpu-per-op-probe x >/dev/null 2>&1 && break
  sleep 0.2
done

tick=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
node_pids=$(pgrep -P "$dev_pid")
declare -A before
for p in $node_pids; do before[$p]=$(cpu_ticks "$p"); done

start_ns=$(date +%s%N)
report=$(/usr/bin/time -f '%U %S' -o "$WORK_DIR/bench.time" "$KV" bench --op "$OP" --consistency "$LEVEL" \
  --clients "$CLIENTS" --endpoints "$endpoints" --value-size "$VALUE_SIZE" --keys "$KEYS" \
  --duration "$DURATION" --warmup 0s --output json --no-progress 2>"$WORK_DIR/bench.err") || {
  cat "$WORK_DIR/bench.err" >&2
  exit 1
}
wall_s=$(echo "scale=3; ($(date +%s%N) - $start_ns) / 1000000000" | bc)
ops=$(jq -r '.ops' <<<"$report")
[ "$ops" -gt 0 ] || { echo "cpu_per_op.sh: no operation succeeded" >&2; exit 1; }
leader=$("$KV" --endpoints "$endpoints" --output json cluster status 2>/dev/null |
  jq -r '.nodes[] | select(.raft.role == "leader") | .id' || true)

echo "$OP at $LEVEL, $CLIENTS clients, $DURATION: $(jq -r '.ops_per_sec | floor' <<<"$report") ops/s" \
  "(p50 $(jq -r '.p50_us' <<<"$report") µs, p99 $(jq -r '.p99_us' <<<"$report") µs, errors $(jq -r '.errors' <<<"$report"))"
total_s=0
printf '%-22s %10s %14s\n' process cpu_s cpu_us_per_op
for p in $node_pids; do
  id=$(tr '\0' ' ' <"/proc/$p/cmdline" | sed -n 's/.*--id \([0-9]*\).*/\1/p')
  s=$(echo "scale=3; ($(cpu_ticks "$p") - ${before[$p]}) / $tick" | bc)
  role=follower
  [ "$id" = "$leader" ] && role=leader
  printf '%-22s %10s %14s\n' "node $id ($role)" "$s" "$(echo "scale=1; $s * 1000000 / $ops" | bc)"
  total_s=$(echo "$total_s + $s" | bc)
done
read -r user sys <"$WORK_DIR/bench.time"
bench_s=$(echo "$user + $sys" | bc)
printf '%-22s %10s %14s\n' "load generator" "$bench_s" "$(echo "scale=1; $bench_s * 1000000 / $ops" | bc)"
total_s=$(echo "$total_s + $bench_s" | bc)
printf '%-22s %10s %14s\n' "all" "$total_s" "$(echo "scale=1; $total_s * 1000000 / $ops" | bc)"
cores=$(nproc)
echo "machine busy: $(echo "scale=0; 100 * $total_s / ($wall_s * $cores)" | bc) % of $cores cores over ${wall_s} s"
