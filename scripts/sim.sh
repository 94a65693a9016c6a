#!/usr/bin/env bash
# Nightly simulations:
# - the joined quorum + Raft protocol (src/levels/join_sim, deterministic, no
#   I/O): JOIN_SEEDS seeds (default 1000000, a few minutes), with the join and
#   without it (the negative control must be caught). Rerun a failure with
#   CAPKV_JOIN_SIM_SEED=<seed> cargo test --release -p capkv --lib levels::join_sim -- --nocapture
# - the whole-node ring: SEEDS seeds per level (default 1000) of the
#   in-process ring (jepsen/tests/simulation.rs), deterministic: a failure
#   prints its seed and CAPKV_SIM_SEED=<seed> bash scripts/sim.sh replays
#   it exactly (same history, same virtual times).
set -euo pipefail
source "$(dirname "$0")/env.sh"
capkv_need_packages
cd "$capkv_root"
CAPKV_JOIN_SIM_SEEDS="${JOIN_SEEDS:-1000000}" cargo test --release -p capkv --lib levels::join_sim -- --nocapture
export CAPKV_SIM_SEEDS="${SEEDS:-1000}"
cargo test --release -p capkv-jepsen --test simulation -- --nocapture
