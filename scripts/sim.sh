#!/usr/bin/env bash
# Nightly whole-node simulation: SEEDS seeds per level (default 1000) of the
# in-process ring (jepsen/tests/simulation.rs). A failure prints its seed;
# rerun it with CAPKV_SIM_SEED=<seed> bash scripts/sim.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"
capkv_need_packages
cd "$capkv_root"
export CAPKV_SIM_SEEDS="${SEEDS:-1000}"
cargo test --release -p capkv-jepsen --test simulation -- --nocapture
