#!/usr/bin/env bash
# Checks capkv histories (history.jsonl) with Porcupine, the Go original,
# as a second opinion next to `kv check` (porcupine-rs):
#
#   ./scripts/porcupine-go.sh [-timeout 5m] [-html DIR] RUN_DIR/history.jsonl...
#
# Installs golang-go if missing. Porcupine's source: $PORCUPINE_SRC (a local
# checkout), else a clone of github.com/anishathalye/porcupine at
# $PORCUPINE_REF (default v1.3.0) cached in ~/.cache/capkv-porcupine-go.
# Exit status: 0 linearizable, 1 not linearizable, 2 unknown or bad input.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/capkv-porcupine-go"
ref="${PORCUPINE_REF:-v1.3.0}"

if ! command -v go >/dev/null; then
    echo "==> installing golang-go" >&2
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y golang-go >&2
fi
src="${PORCUPINE_SRC:-}"
if [ -z "$src" ]; then
    src="$cache/porcupine-$ref"
    if [ ! -f "$src/go.mod" ]; then
        echo "==> cloning Porcupine $ref into $src" >&2
        git clone --quiet --depth 1 --branch "$ref" https://github.com/anishathalye/porcupine "$src" >&2
    fi
fi
src="$(cd "$src" && pwd)"
build="$cache/build"
rm -rf "$build" && mkdir -p "$build"
cp "$here/tools/porcupine-go/go.mod" "$here/tools/porcupine-go/main.go" "$build/"
(cd "$build" && go mod edit -replace "github.com/anishathalye/porcupine=$src" \
    && GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off go build -o porcupine-go . >&2)
exec "$build/porcupine-go" "$@"
