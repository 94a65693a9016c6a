#!/usr/bin/env bash
# Runs the whole test suite (unit, multi-process integration, checker
# reference histories, short Jepsen runs). Installs build prerequisites if
# missing. Usage: ./scripts/test.sh [extra nextest args]
set -euo pipefail
source "$(dirname "$0")/env.sh"
# nftables: the Jepsen partition nemesis cuts links between node addresses.
capkv_need_packages nftables
cd "$capkv_root"
if [ ! -d ../shared/porcupine-data ] && [ -z "${CAPKV_PORCUPINE_DATA:-}" ]; then
  echo "WARNING: ../shared/porcupine-data not found: the checker's reference-verdict test will be SKIPPED" >&2
fi
cargo fmt --all -- --check
capkv_build
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --profile "${NEXTEST_PROFILE:-default}" "$@"
else
  cargo test --release --workspace "$@"
fi
