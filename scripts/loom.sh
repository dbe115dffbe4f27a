#!/usr/bin/env bash
# The delta ring's protocol under the loom model checker: the real producer
# and consumer (shm-layout/tests/loom_ring.rs) across two loom threads.
# Builds into target/loom, so the normal build is not invalidated.
# LOOM_MAX_PREEMPTIONS (default 3) bounds the interleavings explored.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$PWD/target/loom}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
exec cargo test -p shm-layout --release --test loom_ring -- --test-threads=1 "$@"
