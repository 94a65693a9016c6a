#!/usr/bin/env bash
# benches/compare.sh — capkv (every level) against etcd 3.x on this machine,
# with the same load generator (`kv bench`), concurrency and value size,
# plus the machine's own floors measured by the same tool: fsync latency
# (append + fdatasync in the data directory) and the bare gRPC round trip
# (`kv bench --op ping`).
#
# Starts a 3-node capkv (`kv dev`) and then a 3-member etcd (--nodes), both on
# loopback, both durable (fsync per acknowledged write), with their data in
# one work directory on the same disk. Runs each op at each client count for
# each capkv level and for etcd, then prints a markdown table. Levels a node
# answers UNIMPLEMENTED show as "n/a (UNIMPLEMENTED)". Everything it starts
# is stopped on exit, also on Ctrl-C or failure.
#
# Usage: benches/compare.sh [options]
#   --duration D       measured time per run (default 10s)
#   --warmup D         warm-up per run (default 2s)
#   --clients "1 32 256"
#   --ops "set get"    any of set get cas mixed
#   --levels "eventual quorum linearizable"
#   --transports "session"   how capkv's client sends requests: session (one
#                      stream per connection, the client's default) and/or
#                      unary (one gRPC call per request) and/or plain (unary
#                      calls from the bare gRPC stub with client_id 0, as a
#                      client in another language sends); ping runs session and unary
#   --value-size B     (default 128)
#   --keys K           (default 1000)
#   --work-dir DIR     data of both clusters (default: a new temp dir; must be on disk, not tmpfs)
#   --keep             keep the work dir (logs, data, results.jsonl)
#   --json-out FILE    also write every run's JSON report to FILE (one per line, the run's context last)
#   --from-json FILE   run nothing: print the tables from a FILE written by --json-out
#   --no-build         use the kv binary already in $CARGO_TARGET_DIR/release
#   --no-etcd          capkv only (no etcd runs)
#   --produce-clients "32"   client counts of the topic produce runs ("" = none)
#   --produce-batches "1 64" records per produce request (each run waits for all acks)
#   --produce-value-size B   record size of the produce runs (default 1024)
#   --produce-producers "each 1"   how the produce clients share producers
#                      (capkv) and connections (NATS): "each" = one per
#                      client, N = N shared ones (`kv bench --producers N`)
#   --no-nats          no NATS JetStream produce runs
#   --nats-port P      first NATS client port (default 17301; clients P..P+2, routes P+10..P+12)
#   --capkv-port P     first capkv port (default 17101; clients P..P+2, peers P+1000..P+1002)
#   --tls              capkv with TLS on every port (kv dev --tls: mutual TLS
#                      between nodes, clients verify the nodes' CA); etcd and
#                      NATS stay plaintext, so their ratios are conservative
#   --etcd-port P      first etcd client port (default 17201; clients P..P+N-1, peers P+10..P+9+N)
#   --nodes N          capkv nodes and etcd members (default 3, at most 7); NATS stays 3 servers
#   --etcd-quota-bytes N   etcd's --quota-backend-bytes (default: etcd's own, 2 GiB);
#                      raise it for large data sets, or etcd refuses writes (NOSPACE)
#
# With produce runs it also measures the disk's sequential write bandwidth
# (dd: 1 GiB in 1 MiB O_DIRECT blocks, then fdatasync) and prints each
# batched produce row's MB/s as a share of it.
#
# The data directories' sizes (capkv: all nodes, before it stops; etcd:
# all members) are printed with the tables. Unless --keep, capkv's data is
# deleted once it stops, so that large runs need the disk of only one
# system at a time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/env.sh
source "$here/../scripts/env.sh"

DURATION=10s
WARMUP=2s
CLIENTS="1 32 256"
OPS="set get"
LEVELS="eventual quorum linearizable"
TRANSPORTS="session"
VALUE_SIZE=128
KEYS=1000
WORK_DIR=""
KEEP=0
JSON_OUT=""
FROM_JSON=""
BUILD=1
ETCD=1
CAPKV_PORT=17101
ETCD_PORT=17201
PRODUCE_CLIENTS="32"
PRODUCE_BATCHES="1 64"
PRODUCE_VALUE_SIZE=1024
PRODUCE_PRODUCERS="each 1"
NATS=1
NATS_PORT=17301
TLS=0
NODES=3
ETCD_QUOTA_BYTES=""
DISK_PROBE_MIB=1024
CAPKV_DISK_MIB=null
ETCD_DISK_MIB=null

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --levels) LEVELS=$2; shift 2 ;;
    --transports) TRANSPORTS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --work-dir) WORK_DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --json-out) JSON_OUT=$2; shift 2 ;;
    --from-json) FROM_JSON=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-etcd) ETCD=0; shift ;;
    --capkv-port) CAPKV_PORT=$2; shift 2 ;;
    --etcd-port) ETCD_PORT=$2; shift 2 ;;
    --produce-clients) PRODUCE_CLIENTS=$2; shift 2 ;;
    --produce-batches) PRODUCE_BATCHES=$2; shift 2 ;;
    --produce-value-size) PRODUCE_VALUE_SIZE=$2; shift 2 ;;
    --produce-producers) PRODUCE_PRODUCERS=$2; shift 2 ;;
    --no-nats) NATS=0; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    --etcd-quota-bytes) ETCD_QUOTA_BYTES=$2; shift 2 ;;
    --tls) TLS=1; shift ;;
    --nats-port) NATS_PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$NODES" in [1-7]) ;; *) echo "--nodes must be 1 to 7" >&2; exit 2 ;; esac

say() { echo "==> $*" >&2; }

# print_table RESULTS: the markdown tables from a results.jsonl.
print_table() {
  local results=$1
  # f2: two decimals; t: µs → "123 µs" or "4.50 ms".
  local defs='def f2: if . < 0 then "-" + (- . | f2) else (. * 100 | round) as $c | ($c % 100 | tostring) as $d
  | "\($c / 100 | floor).\(if ($d | length) < 2 then "0" + $d else $d end)" end;
def t: if . == null then "–" elif . < 1000 then "\(.) µs" else "\(. / 1000 | f2) ms" end;'
  jq -rs "$defs"'
    (map(select(.bench == "meta")) | last // {}) as $m
    | "### capkv\(if ($m.nodes // 3) != 3 then " (\($m.nodes) nodes)" else "" end)\(if $m.tls then " with TLS (mutual between nodes)" else "" end) vs etcd\(if ($m.nodes // 3) != 3 then " (\($m.nodes) members)" else "" end) (\($m.date // "?"), \($m.duration // "?") per run after \($m.warmup // "?") warm-up, \($m.value_size // "?") B values, \($m.keys // "?") keys)",
      "",
      "Machine: \($m.nproc // "?") cores (\($m.cpu // "?")), \($m.mem_gib // "?") GiB RAM, data on \($m.fs // "?"), Linux \($m.kernel // "?"); \($m.etcd // "etcd ?")."
        + " Load average before: \($m.load_before // "?"); after: \($m.load_after // "?")"
        + (if (($m.load_before // "0") | split(" ")[0] | tonumber) > ($m.nproc // 1) / 2
           then " — other work shared the CPUs: PRELIMINARY, noisy numbers." else "." end)
        + (if $m.capkv_disk_mib != null or $m.etcd_disk_mib != null
           then " Data directories at the end: capkv \($m.capkv_disk_mib // "–") MiB, etcd \($m.etcd_disk_mib // "–") MiB (all nodes)."
           else "" end)
        + (if $m.etcd_quota_bytes != null then " etcd quota raised to \($m.etcd_quota_bytes) bytes." else "" end),
      ""
  ' "$results"
  echo "| target | op | clients | ops/s | p50 | p99 | vs etcd | server CPU (cores) | ops per server core-s | client CPU (cores) | machine CPU busy |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  jq -rs "$defs"'
    (map(select(.bench == "etcd" and .error == null)) | map({key: "\(.op)/\(.clients)", value: .ops_per_sec}) | from_entries) as $etcd
    | .[] | select(.bench == "capkv" or .bench == "etcd")
    | (if .bench == "etcd" then "etcd (linearizable)" else "capkv \(.level)" + (if .transport == "unary" then " (unary calls)" elif .transport == "plain" then " (plain gRPC, no client id)" else "" end) end) as $who
    | if .error != null then
        (if .error_kind == "unimplemented" then "n/a (UNIMPLEMENTED)" else "failed: \(.error_kind // "error")" end) as $na
        | "| \($who) | \(.op) | \(.clients) | \($na) | | | | | | | |"
      else
        ($etcd["\(.op)/\(.clients)"]) as $e
        | (if .bench == "etcd" then "1.00×" elif $e == null or $e == 0 then "–" else "\(.ops_per_sec / $e | f2)×" end) as $ratio
        | (if (.server_cpu_cores // 0) > 0 then (.ops_per_sec / .server_cpu_cores | round) else "–" end) as $per_core
        | (if .server_cpu_cores == null then "–" else (.server_cpu_cores | f2) end) as $server_cpu
        | "| \($who) | \(.op) | \(.clients) | \(.ops_per_sec | round) | \(.p50_us | t) | \(.p99_us | t) | \($ratio) | \($server_cpu) | \($per_core) | \(.client_cpu_cores | f2) | \(.machine_cpu_busy_pct) % |"
          + (if .errors > 0 then " \(.errors) errors (\(.errors_by_kind | keys | join(", ")))" else "" end)
          + (if .server_died then " a server died during the run" else "" end)
      end
  ' "$results"
  if jq -es 'map(select(.op == "produce")) | length > 0' "$results" >/dev/null; then
    echo
    echo "Topic produce (keyless records, round-robin over 3 partitions × 3 replicas; a request is a batch of records sent together and ends when all are acknowledged):"
    echo
    echo "| system | acks | clients | producers (NATS: connections) | records/request | record size | records/s | MB/s | p50 (request) | p99 (request) | server CPU (cores) | client CPU (cores) | machine CPU busy |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    jq -rs "$defs"'
      .[] | select(.op == "produce")
      | (if .bench == "nats" then "NATS JetStream (\(.nats // "?"))" else "capkv topic" end) as $who
      | (if (.producers // .clients) == .clients then "one per client" else "\(.producers) shared" end) as $producers
      | if .error != null then "| \($who) | \(.level) | \(.clients) | | | | failed: \(.error_kind // "error") | | | | | | |"
        else "| \($who) | \(.level) | \(.clients) | \($producers) | \(.batch_records) | \(.value_size) B | \(.records_per_sec | round) | \(.mb_per_sec | f2) | \(.p50_us | t) | \(.p99_us | t) | \(if .server_cpu_cores == null then "–" else (.server_cpu_cores | f2) end) | \(.client_cpu_cores | f2) | \(.machine_cpu_busy_pct) % |"
          + (if .errors > 0 then " \(.errors) errors (\(.errors_by_kind | keys | join(", ")))" else "" end)
          + (if .server_died then " a server died during the run" else "" end) end
    ' "$results"
    jq -rs "$defs"'
      (map(select(.bench == "disk" and .error == null)) | last) as $d
      | if $d == null then empty else
          "", "MB/s as a share of the disk'"'"'s sequential write bandwidth (\($d.mb_per_sec | f2) MB/s, dd, below): "
          + (map(select(.op == "produce" and .error == null and .batch_records > 1))
             | map("\(if .bench == "nats" then "NATS" else "capkv \(.level)" end) \(.batch_records)/request \(.clients) clients \(.mb_per_sec / $d.mb_per_sec * 100 | round) %")
             | join("; ")) + "."
        end
    ' "$results"
  fi
  echo
  echo "Machine floors (same tool, same disk):"
  echo
  echo "| probe | clients | ops/s | p50 | p99 | p99.9 | client CPU (cores) | machine CPU busy |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  jq -rs "$defs"'
    .[] | select(.bench == "fsync" or .bench == "ping")
    | (if .bench == "fsync" then "fsync (append \(.value_size // "") B + fdatasync)"
       elif .transport == "unary" then "gRPC ping, unary call (bare tonic round trip, loopback)"
       else "gRPC ping over a session stream (bare round trip of the capkv client transport, loopback)" end) as $what
    | if .error != null then "| \($what) | \(.clients) | failed: \(.error_kind // "error") | | | | | |"
      else "| \($what) | \(.clients) | \(.ops_per_sec | round) | \(.p50_us | t) | \(.p99_us | t) | \(.p999_us | t) | \(.client_cpu_cores | f2) | \(.machine_cpu_busy_pct) % |" end
  ' "$results"
  jq -rs "$defs"'
    .[] | select(.bench == "disk")
    | if .error != null then "", "Sequential write (dd): failed."
      else "", "Sequential write (dd, \(.mib) MiB in 1 MiB O_DIRECT blocks, then fdatasync): \(.mb_per_sec | f2) MB/s." end
  ' "$results"
}

if [ -n "$FROM_JSON" ]; then
  print_table "$FROM_JSON"
  exit 0
fi

extra_packages=(jq curl)
[ "$ETCD" = 1 ] && extra_packages+=(etcd-server)
[ "$NATS" = 1 ] && [ -n "$PRODUCE_CLIENTS" ] && extra_packages+=(nats-server)
capkv_need_packages "${extra_packages[@]}"
[ "$BUILD" = 1 ] && capkv_build
KV="$CAPKV_BIN/kv"
[ -x "$KV" ] || { echo "compare.sh: $KV not found (drop --no-build)" >&2; exit 2; }
"$KV" bench --help >/dev/null 2>&1 || {
  echo "compare.sh: $KV has no 'bench' subcommand: build this branch (drop --no-build) or set CARGO_TARGET_DIR" >&2
  exit 2
}

if [ -z "$WORK_DIR" ]; then
  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/capkv-compare.XXXXXX")
  made_work_dir=1
else
  mkdir -p "$WORK_DIR"
  made_work_dir=0
fi
RESULTS="$WORK_DIR/results.jsonl"
work_fs=$(df -PT "$WORK_DIR" | awk 'NR == 2 {print $2 " on " $1}')
case "$work_fs" in
  tmpfs*|ramfs*) say "WARNING: $WORK_DIR is on $work_fs: fsync costs nothing there, nothing is durable; use --work-dir on a disk" ;;
esac
: > "$RESULTS"

# ---------------------------------------------------------------- clean-up
pids=()
stop_pids() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && stop_pids "${pids[@]}"
  if [ "$KEEP" = 1 ] || [ "$made_work_dir" = 0 ]; then
    say "work dir kept: $WORK_DIR"
  else
    rm -rf "$WORK_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- CPU use
# What limits a figure shows in where the CPU went: the whole machine's busy
# share (/proc/stat: everything but idle and iowait, so other load on a
# shared machine shows too) and the cores the servers used (utime + stime of
# SERVER_PIDS), both over the whole `kv bench` call (populate, warm-up,
# measurement).
CLK_TCK=$(getconf CLK_TCK)
SERVER_PIDS=""
machine_jiffies() {  # prints "busy total"
  awk '/^cpu /{t=0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}
server_ticks() {
  local t=0 p
  for p in $SERVER_PIDS; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# ---------------------------------------------------------------- the runs
# run LABEL LEVEL OP CLIENTS kv-bench-args...: one `kv bench`, its JSON
# report tagged with LABEL and LEVEL (and the CPU use) appended to
# results.jsonl. A set-up failure is recorded too (it carries error /
# error_kind).
run() {
  local label=$1 level=$2 op=$3 clients=$4; shift 4
  say "$label ${level:+$level }$op, $clients clients"
  local out rc=0 m0 m1 s0 s1 t0 t1
  m0=$(machine_jiffies); s0=$(server_ticks); t0=$(date +%s.%N)
  out=$("$KV" bench --op "$op" --clients "$clients" --output json --no-progress "$@" 2>>"$WORK_DIR/bench.err") || rc=$?
  m1=$(machine_jiffies); s1=$(server_ticks); t1=$(date +%s.%N)
  if [ -z "$out" ]; then
    out=$(jq -cn --arg e "kv bench exited $rc without a report; see $WORK_DIR/bench.err" '{error: $e, error_kind: "other"}')
  fi
  # A server that died during the run makes the row (and its CPU sum)
  # meaningless: flag it and keep the logs.
  local died="" p
  for p in $SERVER_PIDS; do kill -0 "$p" 2>/dev/null || died+="${died:+ }$p"; done
  if [ -n "$died" ]; then
    say "  WARNING: server process(es) $died died during this run; keeping $WORK_DIR for the logs"
    KEEP=1
    SERVER_PIDS=$(for p in $SERVER_PIDS; do kill -0 "$p" 2>/dev/null && echo "$p"; done | tr '\n' ' ')
  fi
  local cpu
  cpu=$(awk -v m0="$m0" -v m1="$m1" -v s0="$s0" -v s1="$s1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v died="$died" 'BEGIN {
    split(m0, a, " "); split(m1, b, " ");
    busy = (b[2] > a[2]) ? 100 * (b[1] - a[1]) / (b[2] - a[2]) : 0;
    cores = (t1 > t0) ? (s1 - s0) / hz / (t1 - t0) : 0;
    if (died != "") printf "{\"machine_cpu_busy_pct\": %.0f, \"server_cpu_cores\": null, \"server_died\": \"%s\"}", busy, died;
    else printf "{\"machine_cpu_busy_pct\": %.0f, \"server_cpu_cores\": %.2f}", busy, cores }')
  echo "$out" | jq -c --arg bench "$label" --arg level "$level" --arg op "$op" --argjson clients "$clients" \
    --argjson cpu "$cpu" '. + {bench: $bench, level: $level, op: $op, clients: $clients} + $cpu' >> "$RESULTS"
  [ "$rc" = 0 ] || say "  failed: $(echo "$out" | jq -r '.error // .first_error // "see bench.err"' | head -c 300)"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Physical floors, measured with the same tool on the same disk.
say "fsync floor in $WORK_DIR"
run fsync "" fsync 1 --data-dir "$WORK_DIR" --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup 1s
# The disk's sequential write bandwidth, the ceiling of batched produce:
# DISK_PROBE_MIB in 1 MiB direct writes, then fdatasync, timed here.
if [ -n "$PRODUCE_CLIENTS" ]; then
  say "sequential write floor in $WORK_DIR ($DISK_PROBE_MIB MiB, dd)"
  t0=$(date +%s.%N)
  if dd if=/dev/zero of="$WORK_DIR/dd.bin" bs=1M count="$DISK_PROBE_MIB" oflag=direct conv=fdatasync status=none; then
    t1=$(date +%s.%N)
    jq -cn --argjson mib "$DISK_PROBE_MIB" --argjson s "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" \
      '{bench: "disk", mib: $mib, seconds: $s, mb_per_sec: ($mib * 1048576 / 1e6 / $s)}' >> "$RESULTS"
  else
    jq -cn '{bench: "disk", error: "dd failed"}' >> "$RESULTS"
  fi
  rm -f "$WORK_DIR/dd.bin"
fi

# capkv
say "starting a $NODES-node capkv (kv dev, ports $CAPKV_PORT-$((CAPKV_PORT + NODES - 1)))"
dev_ok=0
dev_flags=()
[ "$TLS" = 1 ] && dev_flags=(--tls)
CAPKV_DEV_NODES=$NODES capkv_start_dev "$CAPKV_PORT" "$WORK_DIR/capkv" "$WORK_DIR/kv-dev" "${dev_flags[@]}" && dev_ok=1
dev_pid=$CAPKV_DEV_PID
pids+=("$dev_pid")
[ "$dev_ok" = 1 ] || exit 2
endpoints=$CAPKV_ENDPOINTS
# Every capkv run's connection settings: the dev cluster's CA with --tls.
capkv_conn=()
if [ "$TLS" = 1 ]; then
  ca=$(sed -n 's/^KV_CACERT=//p' "$WORK_DIR/kv-dev.out")
  [ -n "$ca" ] || { echo "compare.sh: kv dev --tls printed no KV_CACERT" >&2; exit 2; }
  capkv_conn=(--cacert "$ca")
fi
SERVER_PIDS=$(pgrep -P "$dev_pid" | tr '\n' ' ')

for transport in session unary; do
  for c in $CLIENTS; do
    run ping "" ping "$c" --endpoints "$endpoints" "${capkv_conn[@]}" --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP" \
      --transport "$transport"
  done
done
for transport in $TRANSPORTS; do
for level in $LEVELS; do
  for op in $OPS; do
    for c in $CLIENTS; do
      run capkv "$level" "$op" "$c" --target capkv --consistency "$level" --endpoints "$endpoints" "${capkv_conn[@]}" \
        --value-size "$VALUE_SIZE" --keys "$KEYS" --key-prefix "bench/$level/" --duration "$DURATION" --warmup "$WARMUP" \
        --transport "$transport"
      # A level that is not built fails the same way at every client count.
      if [ "$(tail -1 "$RESULTS" | jq -r '.error_kind // ""')" = unimplemented ]; then
        for c2 in $CLIENTS; do
          [ "$c2" = "$c" ] && continue
          jq -cn --arg level "$level" --arg op "$op" --argjson clients "$c2" \
            '{bench: "capkv", level: $level, op: $op, clients: $clients, error_kind: "unimplemented", error: "skipped: level not built"}' >> "$RESULTS"
        done
        break
      fi
    done
  done
done
done
# producers_flag MODE: the `kv bench` flag of a --produce-producers mode.
producers_flag() { [ "$1" = each ] || echo "--producers $1"; }
for c in $PRODUCE_CLIENTS; do
  for b in $PRODUCE_BATCHES; do
    for acks in 1 all; do
      for p in $PRODUCE_PRODUCERS; do
        # shellcheck disable=SC2046 # the flag is two words or none
        run topic "acks=$acks" produce "$c" --target capkv --endpoints "$endpoints" "${capkv_conn[@]}" --acks "$acks" --batch "$b" \
          --topic "bench-a$acks-b$b-c$c-p$p" --value-size "$PRODUCE_VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP" \
          $(producers_flag "$p")
      done
    done
  done
done
CAPKV_DISK_MIB=$(du -sm "$WORK_DIR/capkv" | cut -f1)
say "stopping capkv (data: $CAPKV_DISK_MIB MiB)"
stop_pids "$dev_pid"
pids=()
SERVER_PIDS=""
# The nodes' data goes (their logs stay) unless --keep.
[ "$KEEP" = 1 ] || rm -rf "$WORK_DIR"/capkv/node-*/

# etcd
if [ "$ETCD" = 1 ]; then
  etcd_endpoints=""
  cluster=""
  for i in $(seq 1 "$NODES"); do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 9 + i))"
    etcd_endpoints+="${etcd_endpoints:+,}127.0.0.1:$((ETCD_PORT + i - 1))"
  done
  say "starting a $NODES-member etcd ($(etcd --version | head -1), clients $etcd_endpoints)"
  etcd_flags=()
  [ -n "$ETCD_QUOTA_BYTES" ] && etcd_flags=(--quota-backend-bytes "$ETCD_QUOTA_BYTES")
  for i in $(seq 1 "$NODES"); do
    cport=$((ETCD_PORT + i - 1)); pport=$((ETCD_PORT + 9 + i))
    etcd --name "e$i" --data-dir "$WORK_DIR/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token capkv-compare \
      "${etcd_flags[@]}" > "$WORK_DIR/etcd-e$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in $(seq 1 "$NODES"); do
    ok=0
    for _ in $(seq 1 300); do
      if curl -fsS "http://127.0.0.1:$((ETCD_PORT + i - 1))/health" 2>/dev/null | grep -q '"health":"true"'; then ok=1; break; fi
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "etcd e$i did not become healthy; see $WORK_DIR/etcd-e$i.log" >&2; tail -5 "$WORK_DIR/etcd-e$i.log" >&2; exit 2; }
  done
  SERVER_PIDS="${pids[*]}"
  for op in $OPS; do
    for c in $CLIENTS; do
      run etcd "" "$op" "$c" --target etcd --endpoints "$etcd_endpoints" \
        --value-size "$VALUE_SIZE" --keys "$KEYS" --key-prefix "bench/" --duration "$DURATION" --warmup "$WARMUP"
    done
  done
  ETCD_DISK_MIB=$(du -sm "$WORK_DIR/etcd" | cut -f1)
  say "stopping etcd (data: $ETCD_DISK_MIB MiB)"
  stop_pids "${pids[@]}"
  pids=()
  SERVER_PIDS=""
fi

# NATS JetStream, 3 servers, R3 file-backed streams (one per partition).
if [ "$NATS" = 1 ] && [ -n "$PRODUCE_CLIENTS" ]; then
  nats_endpoints=""
  routes=""
  for i in 1 2 3; do
    nats_endpoints+="${nats_endpoints:+,}127.0.0.1:$((NATS_PORT + i - 1))"
    routes+="${routes:+, }nats://127.0.0.1:$((NATS_PORT + 9 + i))"
  done
  nats_version=$(nats-server --version 2>/dev/null | head -1)
  say "starting a 3-server NATS JetStream cluster ($nats_version, clients $nats_endpoints)"
  for i in 1 2 3; do
    mkdir -p "$WORK_DIR/nats/n$i"
    printf 'server_name: n%s\nlisten: 127.0.0.1:%s\njetstream { store_dir: "%s" }\ncluster { name: capkv-compare, listen: 127.0.0.1:%s, routes: [%s] }\n' \
      "$i" "$((NATS_PORT + i - 1))" "$WORK_DIR/nats/n$i" "$((NATS_PORT + 9 + i))" "$routes" > "$WORK_DIR/nats/n$i.conf"
    nats-server -c "$WORK_DIR/nats/n$i.conf" > "$WORK_DIR/nats-n$i.log" 2>&1 &
    pids+=("$!")
  done
  ok=0
  for _ in $(seq 1 300); do
    if grep -q "metadata leader" "$WORK_DIR"/nats-n*.log 2>/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "NATS elected no JetStream metadata leader; see $WORK_DIR/nats-n*.log" >&2; tail -5 "$WORK_DIR/nats-n1.log" >&2; exit 2; }
  SERVER_PIDS="${pids[*]}"
  for c in $PRODUCE_CLIENTS; do
    for b in $PRODUCE_BATCHES; do
      for p in $PRODUCE_PRODUCERS; do
        # shellcheck disable=SC2046 # the flag is two words or none
        run nats "R3" produce "$c" --target nats --endpoints "$nats_endpoints" --batch "$b" \
          --topic "bench-b$b-c$c-p$p" --value-size "$PRODUCE_VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP" \
          $(producers_flag "$p")
      done
    done
  done
  tmp=$(mktemp)
  jq -c --arg v "$nats_version" 'if .bench == "nats" then . + {nats: $v} else . end' "$RESULTS" > "$tmp" && mv "$tmp" "$RESULTS"
  say "stopping NATS"
  stop_pids "${pids[@]}"
  pids=()
  SERVER_PIDS=""
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The run's context, as the last line of results.jsonl (--from-json reads it).
jq -cn --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson nproc "$(nproc)" \
  --arg cpu "$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
  --argjson mem_gib "$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" \
  --arg fs "$work_fs" --arg kernel "$(uname -r)" --arg etcd "$(etcd --version 2>/dev/null | head -1 || true)" \
  --arg load_before "$load_before" --arg load_after "$load_after" \
  --arg duration "$DURATION" --arg warmup "$WARMUP" --argjson value_size "$VALUE_SIZE" --argjson keys "$KEYS" \
  --argjson tls "$TLS" --argjson nodes "$NODES" --argjson capkv_disk_mib "$CAPKV_DISK_MIB" \
  --argjson etcd_disk_mib "$ETCD_DISK_MIB" --arg etcd_quota "$ETCD_QUOTA_BYTES" \
  '{bench: "meta", tls: ($tls == 1), nodes: $nodes, capkv_disk_mib: $capkv_disk_mib, etcd_disk_mib: $etcd_disk_mib,
    etcd_quota_bytes: (if $etcd_quota == "" then null else ($etcd_quota | tonumber) end), date: $date, nproc: $nproc, cpu: $cpu, mem_gib: $mem_gib, fs: $fs, kernel: $kernel, etcd: $etcd,
    load_before: $load_before, load_after: $load_after, duration: $duration, warmup: $warmup,
    value_size: $value_size, keys: $keys}' >> "$RESULTS"
[ -n "$JSON_OUT" ] && cp "$RESULTS" "$JSON_OUT"
print_table "$RESULTS"
