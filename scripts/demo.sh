#!/usr/bin/env bash
# A local 3-node capkv cluster and a tour of its consistency levels, in one
# command. Installs build prerequisites if missing, builds (release), starts
# `kv dev`, runs the tour, and stops everything on exit.
#
#   ./scripts/demo.sh            # the tour, then stop
#   ./scripts/demo.sh --keep     # the tour, then keep the cluster running (Ctrl-C stops it)
#
# CAPKV_DEMO_PORT sets the first node's client port (default 7001; peers use
# the ports 1000 above the client ports).
set -euo pipefail
source "$(dirname "$0")/env.sh"
capkv_need_packages
capkv_build

keep=false
[ "${1:-}" = "--keep" ] && keep=true
KV="$CAPKV_BIN/kv"
port="${CAPKV_DEMO_PORT:-7001}"
dir=$(mktemp -d -t capkv-demo-XXXXXX)
dev_pid=""

cleanup() {
  if [ -n "$dev_pid" ]; then
    for f in "$dir"/node-*.pid; do [ -f "$f" ] && kill -CONT "$(cat "$f")" 2>/dev/null || true; done
    kill -TERM "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$KV" dev --data-dir "$dir" --base-port "$port" >"$dir/dev.out" 2>"$dir/dev.err" &
dev_pid=$!
for _ in $(seq 1 600); do
  grep -q '^KV_ENDPOINTS=' "$dir/dev.out" 2>/dev/null && break
  if ! kill -0 "$dev_pid" 2>/dev/null; then cat "$dir/dev.err" >&2; exit 1; fi
  sleep 0.1
done
grep -q '^KV_ENDPOINTS=' "$dir/dev.out" || { echo "cluster did not start" >&2; cat "$dir/dev.err" >&2; exit 1; }
export KV_ENDPOINTS=$(sed -n 's/^KV_ENDPOINTS=//p' "$dir/dev.out")
n1=$(echo "$KV_ENDPOINTS" | cut -d, -f1)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ kv %s\n' "$*"; "$KV" "$@" || printf '  (exit status %s)\n' "$?"; }

say "A 3-node cluster is up: KV_ENDPOINTS=$KV_ENDPOINTS"
run cluster status

say "Eventual: local write, acknowledged at once, replicated in the background"
run -c eventual set greeting hello
run -c eventual get greeting

say "Quorum (ABD register): read and write a majority, no leader; CAS goes through consensus"
run -c quorum set colour blue
run -c quorum get colour
run -c quorum cas colour --expect blue green

say "One keyspace: a key written at any level is the same key at every level"
run -c linearizable get colour

say "Linearizable (Raft): compare-and-set is atomic cluster-wide"
run -c linearizable set counter 1
run -c linearizable cas counter --expect 1 2
run -c linearizable cas counter --expect 1 3
run -c linearizable get counter

# SIGSTOP takes effect when one thread of the process takes the signal; the
# others may answer for a few more milliseconds. Wait until all are stopped.
wait_stopped() {
  local pid=$1 t
  for _ in $(seq 1 500); do
    local running=0
    for t in /proc/"$pid"/task/*/stat; do
      [ "$(sed 's/.*) //' "$t" | cut -c1)" = T ] || running=1
    done
    [ "$running" = 0 ] && return 0
    sleep 0.01
  done
}

say "CAP as a runtime option: pause nodes 2 and 3, talk to node 1 only"
kill -STOP "$(cat "$dir/node-2.pid")" "$(cat "$dir/node-3.pid")"
wait_stopped "$(cat "$dir/node-2.pid")"
wait_stopped "$(cat "$dir/node-3.pid")"
run --endpoints "$n1" --timeout 2s -c linearizable get counter
run --endpoints "$n1" --timeout 2s -c quorum get colour
run --endpoints "$n1" -c eventual set during-partition still-available
run --endpoints "$n1" -c eventual get during-partition

say "Heal: resume nodes 2 and 3; the eventual write reaches them (hinted handoff)"
kill -CONT "$(cat "$dir/node-2.pid")" "$(cat "$dir/node-3.pid")"
n3=$(echo "$KV_ENDPOINTS" | cut -d, -f3)
for _ in $(seq 1 100); do
  "$KV" --endpoints "$n3" -c eventual get during-partition >/dev/null 2>&1 && break
  sleep 0.1
done
run --endpoints "$n3" -c eventual get during-partition
run --timeout 5s -c quorum get colour

say "Topics: a partitioned log replicated with an in-sync replica set"
run topic create orders --partitions 3 --replication-factor 3 --min-insync 2
printf '$ printf "paid\\nshipped\\ndelivered\\n" | kv topic produce orders --acks all --key order-7\n'
printf 'paid\nshipped\ndelivered\n' | "$KV" topic produce orders --acks all --key order-7 || printf '  (exit status %s)\n' "$?"
run topic consume orders --from-beginning --exit-at-end
run topic describe orders

if $keep; then
  say "The cluster keeps running; in another shell: export KV_ENDPOINTS=$KV_ENDPOINTS"
  echo "Ctrl-C stops it."
  wait "$dev_pid" || true
  dev_pid=""
fi
say "Done."
