#!/usr/bin/env bash
# Changes a cluster's membership under load, as an operator would:
# a 3-node cluster serves a linearizable `kv bench`; it grows to 5 nodes
# (`kv serve --join` + `kv cluster add`), the Raft leader (a founder) is
# killed for good and replaced by node 6 (`kv cluster replace`), then it
# shrinks back to 3 (`kv cluster remove` of nodes 4 and 5). At the end it prints the
# benchmark's report (errors by kind) and checks that keys written at every
# level before the changes read back from the new node.
#
# Usage: ./scripts/membership-demo.sh [BASE_PORT]   (default 17400; uses
# BASE_PORT..+5 for clients and +1000..+1005 for peers, on 127.0.0.1)
# Environment: CLIENTS (default 16), DURATION of the benchmark (default 60s),
# KEEP=1 keeps the data directory.
set -euo pipefail
source "$(dirname "$0")/env.sh"
capkv_need_packages
capkv_build

port=${1:-17400}
clients=${CLIENTS:-16}
duration=${DURATION:-60s}
dir=$(mktemp -d /tmp/capkv-membership.XXXXXX)
kv="$CAPKV_BIN/kv"
pids=()
cleanup() {
  for p in "${pids[@]}" ${CAPKV_DEV_PID:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "data and logs kept in $dir" >&2 || rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }
addr() { echo "127.0.0.1:$((port + $1 - 1))"; }
peer() { echo "127.0.0.1:$((port + 1000 + $1 - 1))"; }

step "starting a 3-node cluster (kv dev) in $dir"
capkv_start_dev "$port" "$dir/dev" "$dir/dev"
founders="$CAPKV_ENDPOINTS"
export KV_ENDPOINTS="$founders"
"$kv" cluster members

step "writing keys at every level before the changes"
for level in linearizable quorum eventual; do
  for i in 1 2 3; do "$kv" -c "$level" set "demo/$level/$i" "v$i" >/dev/null; done
done

step "kv bench: linearizable set, $clients clients, $duration, through nodes 1-3"
"$kv" -c linearizable bench --op set --clients "$clients" --duration "$duration" --warmup 0 \
  --no-progress >"$dir/bench.txt" 2>"$dir/bench.err" &
bench=$!
pids+=("$bench")

join_node() { # ID: start `kv serve --join` for node ID on its own ports
  local id=$1
  "$kv" serve --id "$id" --listen "$(addr "$id")" --peer-listen "$(peer "$id")" \
    --data-dir "$dir/n$id" --join "$founders" 2>"$dir/n$id.log" &
  pids+=("$!")
  echo "node $id: pid $!, client $(addr "$id"), peer $(peer "$id")"
}

step "growing to 5: nodes 4 and 5 join"
for id in 4 5; do
  join_node "$id"
  "$kv" cluster add --id "$id" --address "$(addr "$id")" --peer-address "$(peer "$id")" --wait 2m
done
"$kv" cluster members

leader=$("$kv" cluster members | awk '$3 == "yes" { print $1 }')
case "$leader" in 1 | 2 | 3) ;; *) echo "expected a founder to lead, got '$leader'" >&2; exit 1 ;; esac
step "node $leader, the Raft leader, dies for good (kill -9)"
kill -9 "$(cat "$dir/dev/node-$leader.pid")"
alive=""
for id in 1 2 3 4 5; do [ "$id" = "$leader" ] || alive="$alive${alive:+,}$(addr "$id")"; done
export KV_ENDPOINTS="$alive"
step "replacing node $leader by node 6"
join_node 6
"$kv" cluster replace --id "$leader" --new-id 6 --address "$(addr 6)" --peer-address "$(peer 6)" --wait 2m
"$kv" cluster members

step "shrinking back to 3: removing nodes 4 and 5"
for id in 4 5; do "$kv" cluster remove --id "$id"; done
left=""
for id in 1 2 3; do [ "$id" = "$leader" ] || left="$left${left:+,}$(addr "$id")"; done
export KV_ENDPOINTS="$left,$(addr 6)"
"$kv" cluster members

step "keys written before the changes, read through node 6 (joined last)"
for level in linearizable quorum eventual; do
  for i in 1 2 3; do
    got=""
    for _ in $(seq 1 100); do # the eventual cell arrives by anti-entropy
      got=$("$kv" --endpoints "$(addr 6)" -c "$level" get "demo/$level/$i" 2>/dev/null || true)
      [ "$got" = "v$i" ] && break
      sleep 0.2
    done
    [ "$got" = "v$i" ] || { echo "demo/$level/$i: expected v$i, read '$got'" >&2; exit 1; }
  done
  echo "$level: demo/$level/1..3 read back from node 6"
done

step "waiting for the benchmark to finish"
wait "$bench"
cat "$dir/bench.txt"
errors=$(sed -n 's/.*ok, \([0-9]*\) errors).*/\1/p' "$dir/bench.txt")
echo "failed linearizable requests during the changes: ${errors:-?}"
step "members at the end"
"$kv" cluster members
echo
echo "membership demo done"
