#!/usr/bin/env bash
# benches/paired.sh — compare two kv binaries without the machine's drift.
#
# Alternated runs on a shared VM are biased: the machine's speed drifts over
# minutes, and the first of two back-to-back clusters tends to do better
# (docs/performance.md, "Order matters"). Here both clusters live at once
# and take turns: cluster A (binary --a) and cluster B (binary --b) start
# side by side; before each run the one not measured is SIGSTOPped (every
# process of it), so it costs nothing, and the order within each pair
# alternates (A B, B A, A B, ...). Each run is one `kv bench` of the
# measured binary against its own cluster. Prints one line per run, then
# the mean of each side over the pairs after --skip, and in how many of
# those pairs B was lower than A.
#
# Usage: benches/paired.sh --a BIN --b BIN [options]
#   --a BIN, --b BIN   the two kv binaries (e.g. two builds' target/release/kv)
#   --level L          eventual | quorum | linearizable (default quorum)
#   --op OP            kv bench op (default set)
#   --clients N        (default 32)
#   --pairs N          pairs of runs (default 12)
#   --skip N           first pairs left out of the means, as warm-up (default 2)
#   --duration D       per run, after a 1 s warm-up (default 4s)
#   --value-size B     kv bench --value-size (default 128, as kv bench)
#   --keys K           kv bench --keys (default 1000, as kv bench)
#   --port P           first client port of A (default 17501); B uses P+100
#   --bench BIN        run every `kv bench` with this binary instead of the
#                      measured one, so both sides share one load generator
#                      (it runs on the same cores: a costlier client lowers
#                      the servers' throughput too)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

A="" B="" BENCH="" LEVEL=quorum OP=set CLIENTS=32 PAIRS=12 SKIP=2 DURATION=4s PORT=17501 VALUE_SIZE=128 KEYS=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --a) A=$2; shift 2 ;;
    --b) B=$2; shift 2 ;;
    --level) LEVEL=$2; shift 2 ;;
    --op) OP=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$A" ] && [ -x "$B" ] || { echo "--a and --b must name kv binaries" >&2; exit 2; }
[ -z "$BENCH" ] || [ -x "$BENCH" ] || { echo "--bench must name a kv binary" >&2; exit 2; }
[ "$SKIP" -lt "$PAIRS" ] || { echo "--skip must be below --pairs" >&2; exit 2; }

declare -A BIN=([A]=$A [B]=$B) BASE=([A]=$PORT [B]=$((PORT + 100))) DEV=() ENDPOINTS=()
WORK=$(mktemp -d)
kids() { pgrep -P "${DEV[$1]}" || true; }
signal() { kill "-$1" "${DEV[$2]}" $(kids "$2") 2>/dev/null || true; }
cleanup() {
  for X in "${!DEV[@]}"; do signal CONT "$X"; kill -INT "${DEV[$X]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for X in A B; do
  CAPKV_KV=${BIN[$X]} capkv_start_dev "${BASE[$X]}" "$WORK/$X" "$WORK/dev-$X" || { DEV[$X]=$CAPKV_DEV_PID; exit 1; }
  DEV[$X]=$CAPKV_DEV_PID
  ENDPOINTS[$X]=$CAPKV_ENDPOINTS
done

signal STOP B
running=A
declare -A SUM=([A]=0 [B]=0)
lower=0
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
  declare -A GOT=()
  for X in $order; do
    if [ "$running" != "$X" ]; then signal STOP "$running"; signal CONT "$X"; running=$X; fi
    out=$("${BENCH:-${BIN[$X]}}" --endpoints "${ENDPOINTS[$X]}" -c "$LEVEL" bench --op "$OP" --clients "$CLIENTS" \
      --value-size "$VALUE_SIZE" --keys "$KEYS" --duration "$DURATION" --warmup 1s 2>&1) || { echo "$out" >&2; exit 1; }
    GOT[$X]=$(echo "$out" | awk '/throughput/ {print $2}')
    echo "pair $i $X ${BIN[$X]} $LEVEL $OP clients=$CLIENTS ${GOT[$X]} ops/s"
  done
  if [ "$i" -gt "$SKIP" ]; then
    for X in A B; do SUM[$X]=$(awk -v s="${SUM[$X]}" -v g="${GOT[$X]}" 'BEGIN {print s + g}'); done
    lower=$((lower + $(awk -v a="${GOT[A]}" -v b="${GOT[B]}" 'BEGIN {print (b < a) ? 1 : 0}')))
  fi
done
awk -v a="${SUM[A]}" -v b="${SUM[B]}" -v n=$((PAIRS - SKIP)) -v from=$((SKIP + 1)) -v to="$PAIRS" -v lower="$lower" \
  'BEGIN {printf "mean over pairs %d-%d: A %.0f ops/s, B %.0f ops/s (B/A %+.1f %%); B lower in %d of %d pairs\n",
          from, to, a / n, b / n, (b / a - 1) * 100, lower, n}'
