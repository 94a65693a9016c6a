#!/usr/bin/env bash
# benches/scaling.sh — how throughput changes with the cluster's size.
#
# Runs benches/compare.sh once per node count (capkv nodes and etcd members
# alike; NATS is left out), keeps each run's JSON, and plots ops/s against
# the node count, one line per system × op × clients, as a PNG (gnuplot,
# installed as gnuplot-nox when missing), plus a table on stdout. Every
# option after `--` goes to compare.sh as is.
#
# Usage: benches/scaling.sh [--nodes "3 5"] [--out PREFIX] [-- compare.sh options]
#   --nodes "3 5"      node counts, each 1 to 7 (default "3 5")
#   --out PREFIX       write PREFIX-N.jsonl per count and PREFIX.png (default ./scaling)
#   --from-json        run nothing: plot the PREFIX-N.jsonl files already there
# e.g. benches/scaling.sh --out docs/img/scaling -- --no-build --levels "quorum linearizable" \
#        --ops "set get" --clients "32 256" --duration 6s
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

NODES="3 5" OUT=./scaling RUN=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --from-json) RUN=0; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help; compare.sh options go after --)" >&2; exit 2 ;;
  esac
done

capkv_need_packages jq
if [ "$RUN" -eq 1 ]; then
  for n in $NODES; do
    echo "==> $n nodes" >&2
    "$here/compare.sh" --nodes "$n" --no-nats --produce-clients "" --json-out "$OUT-$n.jsonl" "$@"
  done
fi

# One row per system × op × clients × nodes: "label nodes ops_per_sec".
rows=$(mktemp)
trap 'rm -f "$rows" "$rows".*' EXIT
for n in $NODES; do
  [ -r "$OUT-$n.jsonl" ] || { echo "no $OUT-$n.jsonl" >&2; exit 1; }
  jq -r --argjson n "$n" 'select(.bench == "capkv" or .bench == "etcd") | select(.ops_per_sec != null)
    | "\(if .bench == "etcd" then "etcd" else "capkv-\(.level)" end)-\(.op)-\(.clients)c \($n) \(.ops_per_sec | floor)"' \
    "$OUT-$n.jsonl" >>"$rows"
done

echo "| series | $(for n in $NODES; do printf '%s nodes | ' "$n"; done)"
echo "| --- | $(for _ in $NODES; do printf -- '---: | '; done)"
for s in $(awk '{print $1}' "$rows" | awk '!seen[$0]++'); do
  printf '| %s | ' "$s"
  for n in $NODES; do printf '%s | ' "$(awk -v s="$s" -v n="$n" '$1 == s && $2 == n {print $3}' "$rows")"; done
  echo
done

if ! command -v gnuplot >/dev/null 2>&1; then
  capkv_need_packages gnuplot-nox || { echo "gnuplot is not available: the table only" >&2; exit 0; }
fi
plot=""
for s in $(awk '{print $1}' "$rows" | awk '!seen[$0]++'); do
  f="$rows.$s"
  awk -v s="$s" '$1 == s {print $2, $3}' "$rows" >"$f"
  dash=1; case "$s" in etcd*) dash=2 ;; esac
  plot+="${plot:+, }\"$f\" using 1:2 with linespoints dt $dash lw 2 title \"$s\""
done
gnuplot <<EOF
set terminal pngcairo size 900,520 font ",10"
set output "$OUT.png"
set title "ops/s against cluster size (every node on this machine's $(nproc) cores)"
set xlabel "nodes (capkv) / members (etcd)"
set ylabel "ops/s"
set xtics ($(echo "$NODES" | tr ' ' ','))
set yrange [0:*]
set key outside right
plot $plot
EOF
echo "plot: $OUT.png" >&2
