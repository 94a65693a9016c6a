#!/usr/bin/env bash
# benches/soak.sh — a long run at a fraction of peak: does memory or disk
# keep growing?
#
# Starts a 3-node capkv (`kv dev`), measures the peak of the workload with a
# short flat-out `kv bench`, then runs the same workload paced at
# --fraction of that peak (`kv bench --rate`) for --duration. Every
# --sample-s seconds it records each node's resident memory (VmRSS) and
# data directory size (du). Writes PREFIX.tsv (one row per sample) and
# PREFIX-rate.tsv (successes per second and errors per sample interval,
# from the bench's timeline), prints the first, largest and last sample per node and the
# bench's summary, and plots PREFIX.png (gnuplot, installed if missing as
# gnuplot-nox). Everything it starts is stopped on exit.
#
# Usage: benches/soak.sh [options]
#   --duration D       soak length (default 1h)
#   --fraction F       share of the measured peak to run at (default 0.5)
#   --rate OPS         run at this many requests/s instead of measuring the peak
#   --peak-duration D  the flat-out run that measures the peak (default 20s)
#   --level L          eventual | quorum | linearizable (default linearizable)
#   --op OP            kv bench op: set, get, cas, mixed (default mixed)
#   --read-ratio R     gets among mixed requests (default 0.5)
#   --clients N        (default 32)
#   --keys K           (default 100000)
#   --value-size B     (default 128)
#   --sample-s S       seconds between samples (default 60)
#   --out PREFIX       write PREFIX.tsv, PREFIX-rate.tsv, PREFIX.png (default: in the work dir, kept)
#   --port P           first client port (default 17451; peers P+1000..)
#   --no-build         use the kv binary already in $CARGO_TARGET_DIR/release
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

DURATION=1h FRACTION=0.5 RATE="" PEAK_DURATION=20s LEVEL=linearizable OP=mixed READ_RATIO=0.5 CLIENTS=32
KEYS=100000 VALUE_SIZE=128 SAMPLE_S=60 OUT="" PORT=17451 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --fraction) FRACTION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --peak-duration) PEAK_DURATION=$2; shift 2 ;;
    --level) LEVEL=$2; shift 2 ;;
    --op) OP=$2; shift 2 ;;
    --read-ratio) READ_RATIO=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --sample-s) SAMPLE_S=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$SAMPLE_S" in '' | *[!0-9]* | 0) echo "--sample-s must be a whole number of seconds ≥ 1" >&2; exit 2 ;; esac

capkv_need_packages jq
if ! command -v gnuplot >/dev/null 2>&1; then
  capkv_need_packages gnuplot-nox || echo "gnuplot is not available: no PNG, the tables only" >&2
fi
if [ "$BUILD" -eq 1 ]; then
  (cd "$here/.." && cargo build --release --bin kv)
fi
KV="$CARGO_TARGET_DIR/release/kv"
[ -x "$KV" ] || { echo "no kv binary at $KV (build it, or drop --no-build)" >&2; exit 1; }

WORK=$(mktemp -d)
OWN_OUT=1
[ -n "$OUT" ] || { OUT="$WORK/soak-$LEVEL-$OP"; OWN_OUT=0; }
DEV="" BENCH=""
cleanup() {
  local status=$?
  [ -n "$BENCH" ] && kill -INT "$BENCH" 2>/dev/null || true
  [ -n "$DEV" ] && kill -INT "$DEV" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    rm -rf "$WORK/data"
    echo "failed; logs kept in $WORK" >&2
  elif [ "$OWN_OUT" -eq 1 ]; then
    rm -rf "$WORK"
  else
    rm -rf "$WORK/data"
  fi
}
trap cleanup EXIT
capkv_start_dev "$PORT" "$WORK/data" "$WORK/dev" || { DEV=$CAPKV_DEV_PID; exit 1; }
DEV=$CAPKV_DEV_PID
EP=$CAPKV_ENDPOINTS

bench() {
  "$KV" --endpoints "$EP" -c "$LEVEL" bench --op "$OP" --clients "$CLIENTS" --keys "$KEYS" \
    --value-size "$VALUE_SIZE" --read-ratio "$READ_RATIO" --output json --no-progress "$@"
}
if [ -z "$RATE" ]; then
  echo "==> measuring the peak: $LEVEL $OP, $CLIENTS clients, $PEAK_DURATION flat out" >&2
  bench --duration "$PEAK_DURATION" --warmup 2s >"$WORK/peak.json" 2>"$WORK/peak.err" \
    || { echo "the peak run failed:" >&2; cat "$WORK/peak.err" >&2; exit 1; }
  PEAK=$(jq '.ops_per_sec' "$WORK/peak.json")
  RATE=$(awk -v p="$PEAK" -v f="$FRACTION" 'BEGIN {printf "%.0f", p * f}')
  echo "    peak $(printf '%.0f' "$PEAK") ops/s; soaking at $RATE ops/s" >&2
fi

# Node i's process (a child of kv dev started with its --id) and data dir.
node_pids=() node_dirs=()
for i in 1 2 3; do
  pid=$(ps -o pid=,args= --ppid "$DEV" | awk -v id="$i" 'index($0, "--id " id " ") {print $1}')
  [ -n "$pid" ] || { echo "no process for node $i" >&2; exit 1; }
  node_pids+=("$pid")
  node_dirs+=("$WORK/data/node-$i")
done

echo "==> soaking: $LEVEL $OP at $RATE ops/s for $DURATION, a sample every ${SAMPLE_S}s" >&2
bench --duration "$DURATION" --warmup 0s --rate "$RATE" --timeline-ms "$((SAMPLE_S * 1000))" >"$WORK/soak.json" 2>"$WORK/soak.err" &
BENCH=$!
START=$(date +%s)
printf 'minute\trss_mib_1\trss_mib_2\trss_mib_3\tdisk_mib_1\tdisk_mib_2\tdisk_mib_3\n' >"$OUT.tsv"
sample() {
  local row i rss disk
  row=$(awk -v t="$(($(date +%s) - START))" 'BEGIN {printf "%.2f", t / 60}')
  for i in 0 1 2; do
    rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/${node_pids[$i]}/status" 2>/dev/null || echo NaN)
    row+=$'\t'"${rss:-NaN}"
  done
  for i in 0 1 2; do
    disk=$(du -sk "${node_dirs[$i]}" 2>/dev/null | awk '{printf "%.1f", $1 / 1024}')
    row+=$'\t'"${disk:-NaN}"
  done
  echo "$row" >>"$OUT.tsv"
}
sample
while kill -0 "$BENCH" 2>/dev/null; do
  # Sleep in 1 s steps so the end of the bench is noticed at once.
  for _ in $(seq 1 "$SAMPLE_S"); do
    kill -0 "$BENCH" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$BENCH" 2>/dev/null && sample
done
sample
wait "$BENCH" || { echo "kv bench failed:" >&2; cat "$WORK/soak.err" "$WORK/soak.json" >&2; BENCH=""; exit 1; }
BENCH=""
for i in 0 1 2; do
  kill -0 "${node_pids[$i]}" 2>/dev/null || { echo "node $((i + 1)) died during the soak; logs in $WORK" >&2; exit 1; }
done

R="$WORK/soak.json"
jq -r '.timeline as $t | range(0; [($t.ok | length), (.duration_s * 1000 / $t.bucket_ms | floor)] | min)
  | "\(. * $t.bucket_ms / 60000)\t\($t.ok[.] / ($t.bucket_ms / 1000))\t\($t.errors[.])"' "$R" >"$OUT-rate.tsv"
jq -r --arg rate "$RATE" '
  "\(.consistency) \(.op), \(.clients) clients paced at \($rate) ops/s for \(.duration_s) s: \(.ops) ok (\(.ops_per_sec | floor) ops/s), \(.errors) errors (\(.errors_by_kind | to_entries | map("\(.key) \(.value)") | join(", ") | if . == "" then "none" else . end))",
  "  p50 \(.p50_us) us, p99 \(.p99_us) us, p99.9 \(.p999_us) us, max \(.max_us) us"' "$R"
awk -F'\t' 'NR == 2 {for (i = 2; i <= 7; i++) first[i] = $i}
  NR > 1 {for (i = 2; i <= 7; i++) {if ($i + 0 > max[i]) max[i] = $i + 0; last[i] = $i}}
  END {
    for (n = 1; n <= 3; n++)
      printf "  node %d: RSS %s → %s MiB (max %s), data %s → %s MiB (max %s)\n", n,
        first[n + 1], last[n + 1], max[n + 1], first[n + 4], last[n + 4], max[n + 4]
  }' "$OUT.tsv"
echo "  samples: $OUT.tsv; successes per ${SAMPLE_S} s: $OUT-rate.tsv"

if command -v gnuplot >/dev/null 2>&1; then
  gnuplot <<EOF
set terminal pngcairo size 900,900 font ",10"
set output "$OUT.png"
set multiplot layout 3,1 title "capkv soak: $LEVEL $OP, $CLIENTS clients at $RATE ops/s, $KEYS keys × $VALUE_SIZE B"
set xlabel "minutes"
set key top left
set yrange [0:*]
set ylabel "resident memory (MiB)"
plot for [n=1:3] "$OUT.tsv" using 1:(column(n + 1)) skip 1 with linespoints title sprintf("node %d", n)
set ylabel "data directory (MiB)"
plot for [n=1:3] "$OUT.tsv" using 1:(column(n + 4)) skip 1 with linespoints title sprintf("node %d", n)
set ylabel "requests/s (per sample interval)"
plot "$OUT-rate.tsv" using 1:2 with steps lw 2 title "succeeded", "$OUT-rate.tsv" using 1:3 with steps title "failed (per interval)"
unset multiplot
EOF
  echo "  plot: $OUT.png"
fi
