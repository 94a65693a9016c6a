# Shared set-up for the scripts: sourced, not run.
# Installs what the build needs on a fresh Debian machine when missing
# (RocksDB's bindings need libclang; tonic/prost code generation needs protoc)
# and reuses one cargo target dir outside the clone.

capkv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/capkv-target}"
export CAPKV_BIN="$CARGO_TARGET_DIR/release"

capkv_need_packages() {
  local missing=()
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  # clang-sys loads the unversioned libclang.so (or libclang-N.so), which only
  # libclang-dev provides: the versioned .so.1 that clang pulls in is not enough.
  local lib found=0
  for lib in /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-*.so /usr/lib/*-linux-gnu/libclang.so \
    /usr/lib/*-linux-gnu/libclang-*.so; do
    [ -e "$lib" ] && found=1
  done
  [ "$found" -eq 1 ] || missing+=(libclang-dev)
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing build prerequisites: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

capkv_build() {
  echo "==> building capkv (release; target dir $CARGO_TARGET_DIR)" >&2
  (cd "$capkv_root" && cargo build --release --workspace --bins)
}

# Starts a 3-node `kv dev` on client ports PORT..PORT+2 (peer ports
# PORT+1000..PORT+1002) with its data in DIR, its
# output in LOG.out / LOG.err, and waits until it prints its endpoints.
# Sets CAPKV_DEV_PID (also on failure, for the caller's cleanup) and
# CAPKV_ENDPOINTS; returns 1 with the reason on stderr if it died or did not
# become ready within 90 s. CAPKV_DEV_NODES sets the node count (default 3);
# CAPKV_KV another kv binary to run (default $CAPKV_BIN/kv).
capkv_start_dev() {
  local port=$1 dir=$2 log=$3
  shift 3
  "${CAPKV_KV:-$CAPKV_BIN/kv}" dev --nodes "${CAPKV_DEV_NODES:-3}" --base-port "$port" --data-dir "$dir" "$@" >"$log.out" 2>"$log.err" &
  CAPKV_DEV_PID=$!
  CAPKV_ENDPOINTS=
  for _ in $(seq 1 900); do
    CAPKV_ENDPOINTS=$(sed -n 's/^KV_ENDPOINTS=//p' "$log.out" 2>/dev/null || true)
    [ -n "$CAPKV_ENDPOINTS" ] && return 0
    kill -0 "$CAPKV_DEV_PID" 2>/dev/null || { echo "kv dev died:" >&2; tail -20 "$log.err" >&2; return 1; }
    sleep 0.1
  done
  echo "kv dev did not become ready" >&2
  return 1
}
