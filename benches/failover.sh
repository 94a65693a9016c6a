#!/usr/bin/env bash
# benches/failover.sh — what clients see when a node is killed under load.
#
# Starts a 3-node capkv (`kv dev`), runs one `kv bench` with a timeline
# (`--timeline-ms`: successes and errors per interval, by when they
# finished), and `kill -9`s one node part-way through: the Raft leader
# (default) or a follower. Prints the longest stretch in which no request
# of any client succeeded (the unavailability clients saw, to one
# interval), when it began relative to the kill, and the errors; writes the
# timeline as a table and, when gnuplot is there (installed if missing, as
# gnuplot-nox), as a PNG of successes and errors per 100 ms. Everything it
# starts is stopped on exit.
#
# Usage: benches/failover.sh [options]
#   --level L          eventual | quorum | linearizable (default linearizable)
#   --op OP            kv bench op: set, get, cas, mixed (default set)
#   --clients N        (default 32)
#   --duration D       measured time (default 20s)
#   --kill-after S     seconds into the measured time (default 8)
#   --victim V         leader | follower (default leader)
#   --bucket-ms MS     timeline interval (default 10)
#   --out PREFIX       write PREFIX.tsv (and PREFIX.png); default: in the work dir, kept
#   --port P           first client port (default 17401; peers P+1000..)
#   --no-build         use the kv binary already in $CARGO_TARGET_DIR/release
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

LEVEL=linearizable OP=set CLIENTS=32 DURATION=20s KILL_AFTER=8 VICTIM=leader BUCKET_MS=10 OUT="" PORT=17401 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --level) LEVEL=$2; shift 2 ;;
    --op) OP=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --kill-after) KILL_AFTER=$2; shift 2 ;;
    --victim) VICTIM=$2; shift 2 ;;
    --bucket-ms) BUCKET_MS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$VICTIM" in leader|follower) ;; *) echo "--victim is leader or follower" >&2; exit 2 ;; esac

capkv_need_packages jq
if ! command -v gnuplot >/dev/null 2>&1; then
  capkv_need_packages gnuplot-nox || echo "gnuplot is not available: no PNG, the table only" >&2
fi
if [ "$BUILD" -eq 1 ]; then
  (cd "$here/.." && cargo build --release --bin kv)
fi
KV="$CARGO_TARGET_DIR/release/kv"
[ -x "$KV" ] || { echo "no kv binary at $KV (build it, or drop --no-build)" >&2; exit 1; }

WORK=$(mktemp -d)
OWN_OUT=1
[ -n "$OUT" ] || { OUT="$WORK/failover-$LEVEL-$OP"; OWN_OUT=0; }
DEV=""
cleanup() {
  local status=$?
  [ -n "$DEV" ] && kill -INT "$DEV" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    rm -rf "$WORK/data"
    echo "failed; logs kept in $WORK" >&2
  elif [ "$OWN_OUT" -eq 1 ]; then
    rm -rf "$WORK"
  else
    # The result was written into the work dir: it stays, the data goes.
    rm -rf "$WORK/data"
  fi
}
trap cleanup EXIT
# Ready once every node knows the Raft leader (kv dev prints its endpoints then).
capkv_start_dev "$PORT" "$WORK/data" "$WORK/dev" || { DEV=$CAPKV_DEV_PID; exit 1; }
DEV=$CAPKV_DEV_PID
EP=$CAPKV_ENDPOINTS

"$KV" --endpoints "$EP" -c "$LEVEL" bench --op "$OP" --clients "$CLIENTS" --duration "$DURATION" --warmup 1s \
  --timeline-ms "$BUCKET_MS" --output json --no-progress >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH=$!

# Past the bench's 1 s warm-up, find the victim, then kill it KILL_AFTER
# later. Where the kill fell in the measured phase is worked out afterwards
# from the report's start_unix_ms and the wall clock at the kill.
now_ms() { date +%s%3N; }
sleep 1
status=$("$KV" --endpoints "$EP" cluster status 2>/dev/null || true)
ID=$(echo "$status" | awk -v want="role=$VICTIM" '/^[0-9]/ {id = $1} index($0, want) && !found {print id; found = 1}')
[ -n "$ID" ] || { echo "no $VICTIM in the cluster status:" >&2; echo "$status" >&2; exit 1; }
PID=$(ps -o pid=,args= --ppid "$DEV" | awk -v id="$ID" 'index($0, "--id " id " ") {print $1}')
[ -n "$PID" ] || { echo "no process for node $ID" >&2; exit 1; }
sleep "$KILL_AFTER"
KILLED_AT=$(now_ms)
kill -9 "$PID"
echo "killed node $ID ($VICTIM, pid $PID)" >&2
wait "$BENCH" || { echo "kv bench failed:" >&2; cat "$WORK/bench.err" "$WORK/bench.json" >&2; exit 1; }

R="$WORK/bench.json"
START=$(jq '.timeline.start_unix_ms' "$R")
KILL_S=$(awk -v k="$KILLED_AT" -v s="$START" 'BEGIN {printf "%.2f", (k - s) / 1000}')
# Table: time (s), successes and errors per interval, over --duration (the
# tail after it, where the clients stop, is left out).
jq -r '.timeline as $t | range(0; [($t.ok | length), (.duration_s * 1000 / $t.bucket_ms | floor)] | min)
  | "\(. * $t.bucket_ms / 1000)\t\($t.ok[.])\t\($t.errors[.])"' "$R" >"$OUT.tsv"

jq -r --arg level "$LEVEL" --arg victim "$VICTIM" --arg id "$ID" --arg kill "$KILL_S" '
  "\($level) \(.op), \(.clients) clients: \(.ops) ok, \(.errors) errors (\(.errors_by_kind | to_entries | map("\(.key) \(.value)") | join(", ") | if . == "" then "none" else . end)), \(.ops_per_sec | floor) ops/s",
  "  \($victim) (node \($id)) killed \($kill) s into the measured time",
  (if .timeline.longest_stall == null
   then "  longest stall: none (some request succeeded in every \(.timeline.bucket_ms) ms)"
   else "  longest stall: \(.timeline.longest_stall.length_ms) ms without a success (to \(.timeline.bucket_ms) ms), from \(.timeline.longest_stall.start_ms / 1000) s"
   end),
  "  p99 \(.p99_us) us, max \(.max_us) us"' "$R"
echo "  timeline: $OUT.tsv"

if command -v gnuplot >/dev/null 2>&1; then
  # Per 100 ms, as rates per second.
  awk -v b="$BUCKET_MS" 'BEGIN {w = int(100 / b); if (w < 1) w = 1}
    {ok += $2; err += $3; n++; if (n == w) {printf "%.1f\t%.0f\t%.0f\n", $1, ok * 1000 / (w * b), err * 1000 / (w * b); ok = 0; err = 0; n = 0}}' \
    "$OUT.tsv" >"$WORK/rate.tsv"
  gnuplot <<EOF
set terminal pngcairo size 900,420 font ",10"
set output "$OUT.png"
set title "capkv $LEVEL $OP, $CLIENTS clients: kill -9 of the $VICTIM at ${KILL_S} s"
set xlabel "seconds into the measured time"
set ylabel "requests per second (per 100 ms)"
set yrange [0:*]
set key top right
set arrow from $KILL_S, graph 0 to $KILL_S, graph 1 nohead lc rgb "red" dt 2
plot "$WORK/rate.tsv" using 1:2 with lines lw 2 title "succeeded", \
     "$WORK/rate.tsv" using 1:3 with lines lw 1 title "failed"
EOF
  echo "  plot: $OUT.png"
fi
