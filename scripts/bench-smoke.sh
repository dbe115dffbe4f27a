#!/usr/bin/env bash
# Smoke run of every benchmark command documented in docs/BENCHMARKS.md and
# docs/LOAD.md: each runs for a second or two with tiny arguments, so that a
# command that no longer starts (a config default changed, an example's
# arguments changed, a bench that panics in its setup) fails here rather than
# in front of whoever wants a figure. The figures printed mean nothing and are
# not judged; only exit codes are. Exits non-zero when any command fails.
#
# usage: scripts/bench-smoke.sh [--no-build]
# Root, hugepages (scripts/setup.sh). Builds the release binaries, examples
# and criterion benches first (a no-op when they are current) unless
# --no-build; honours CARGO_TARGET_DIR.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
EX=$REL/examples
export LAZARUS_BIN=$REL/lazarus-dataplane LAZARUS_CKPT_BIN=$REL/lazarus-checkpointd
export LZ_BIN=$LAZARUS_BIN LZ_CKPT_BIN=$LAZARUS_CKPT_BIN
BUILD=1
case ${1:-} in --no-build) BUILD=0 ;; "") ;; *) echo "bench-smoke: unknown argument $1" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "bench-smoke: needs root (hugepages, DPDK)" >&2; exit 1; }

W=$(mktemp -d /tmp/lazarus-bench-smoke.XXXXXX)
trap 'rm -rf "$W"' EXIT

if [ "$BUILD" = 1 ]; then
    echo "=== build (release binaries, examples, criterion benches)"
    cargo build --release --workspace --locked --bins --examples || { echo "bench-smoke: build failed"; exit 1; }
    cargo bench --workspace --locked --bench '*' --no-run || { echo "bench-smoke: bench build failed"; exit 1; }
fi

passed=(); failed=()
start=$(date +%s.%N)
# run NAME CMD...: runs CMD, output in $W/NAME.log (its tail shown on failure).
run() {
    local name=$1 t0 rc=0; shift
    t0=$(date +%s.%N)
    "$@" >"$W/log" 2>&1 || rc=$?
    local secs; secs=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
    if [ $rc -eq 0 ]; then
        passed+=("$name"); printf 'ok     %5ss  %s\n' "$secs" "$name"
    else
        failed+=("$name"); printf 'FAILED %5ss  %s (exit %s):\n' "$secs" "$name" "$rc"
        tail -25 "$W/log" | sed 's/^/    /'
    fi
}

# The frames pipeline.py sends: checksums right (scripts/lib/frames.py).
run "frames.py selftest" python3 scripts/lib/frames.py

# Through the PMD (benches/pipeline.py): plain forwarding, the firewall,
# checkpointing off and on, a protected bulk upload.
run "pipeline.py (plain forwarding)" benches/pipeline.py --smoke --markdown
run "pipeline.py --flows 1000" benches/pipeline.py --smoke --flows 1000 --markdown
run "pipeline.py --flows 1000 --churn 2" benches/pipeline.py --smoke --flows 1000 --churn 2 --markdown
run "pipeline.py --protect 128" benches/pipeline.py --smoke --protect 128 --markdown
# The remote copy (redis-server on loopback): replication, and a takeover.
run "remote.py" benches/remote.py --smoke
run "remote.py --takeover 2000" benches/remote.py --smoke --takeover 2000

# Criterion, every bench target of the workspace (by target name: the crates
# may move). conntrack and ring: 10 samples of 10 ms, no plots. checkpoint
# sets 8 s and 20 s measurement times in code, which the command line cannot
# shorten: profile mode runs each of its benchmarks for 1 s, no analysis.
QUICK=(--warm-up-time 0.01 --measurement-time 0.01 --sample-size 10 --nresamples 100 --noplot)
run "cargo bench --bench conntrack --bench ring" cargo bench --workspace --locked --bench conntrack --bench ring -- "${QUICK[@]}"
run "cargo bench --bench checkpoint" cargo bench --workspace --locked --bench checkpoint -- --profile-time 1

# The examples, with the documented argument shapes made tiny.
run "overhead_paired 1 2 50" "$EX/overhead_paired" 1 2 50
run "MODE=per-packet overhead_paired" env MODE=per-packet "$EX/overhead_paired" 1 2 50
run "TABLES=two overhead_paired" env TABLES=two "$EX/overhead_paired" 1 2 50
run "RING_SLOTS DRAINER=inline overhead_paired" env RING_SLOTS=131072 DRAINER=inline "$EX/overhead_paired" 1 2 50
run "profile_pipeline 1000 10" "$EX/profile_pipeline" 1000 10
run "profile_churn off 1 2" "$EX/profile_churn" off 1 2
run "profile_churn ring 1 2" "$EX/profile_churn" ring 1 2
run "profile_restore 10000 1 1" "$EX/profile_restore" 10000 1 1
run "profile_restore 10000 2 1" "$EX/profile_restore" 10000 2 1
CG=(valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out.%p" --collect-atstart=no)
run "callgrind profile_pipeline" "${CG[@]}" '--toggle-collect=*run_bursts*' "$EX/profile_pipeline" 100 10
run "callgrind profile_churn" "${CG[@]}" '--toggle-collect=*run_passes*' '--toggle-collect=*profile_churn::drain*' "$EX/profile_churn" ring 1 2
run "callgrind profile_restore" "${CG[@]}" '--toggle-collect=*rebuild*' "$EX/profile_restore" 1000

# Under load (scripts/bench-load.sh, docs/LOAD.md): stateless bridge, and a
# SIGKILL with checkpointing off (over veth: Debian's testpmd memif server
# may segfault when its client is killed, see scripts/test.sh).
run "bench-load.sh --conntrack off" scripts/bench-load.sh --seconds 2 --conntrack off --markdown
run "bench-load.sh --kill --checkpoint off --link veth" scripts/bench-load.sh --seconds 2 --kill --checkpoint off --link veth --markdown
# Restarts on the wire (docs/RESTART.md): one takeover, one full restart, one upgrade.
run "bench-restart.sh --rounds 1" scripts/bench-restart.sh --rounds 1 --secs 3
# Replication's bytes beside conntrackd FTFW (installs conntrackd).
run "bench-replication.sh --seconds 1" scripts/bench-replication.sh --seconds 1 --rate 200

secs=$(python3 -c "print(round($(date +%s.%N) - $start))")
if [ ${#failed[@]} -eq 0 ]; then
    echo "bench smoke: ${#passed[@]} commands ran, 0 failed in ${secs}s (figures not judged)"
else
    echo "bench smoke: ${#passed[@]} ran, ${#failed[@]} failed (${failed[*]}) in ${secs}s"
    exit 1
fi
