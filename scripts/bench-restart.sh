#!/usr/bin/env bash
# Restart figures measured on the wire (docs/RESTART.md, docs/BENCHMARKS.md):
# the supervised dataplane's takeover (SIGKILL of the active worker process)
# alternated with a plain full restart (SIGKILL of a one-process dataplane,
# started again), each under kernel TCP streams, a UDP flow and a ping
# through the taps of tests/e2e/lib.sh; then an upgrade at the format level
# (the pair stopped, its segments rewritten as v0.1.0 wrote them, this
# build's pair started). For each: the blackout (the silence the kill made,
# from a capture of the server tap), the longest silence around it, whether
# the taps' carrier dropped, and the streams that survived.
#
# usage: sudo scripts/bench-restart.sh [--rounds N] [--secs S] [--markdown]
set -euo pipefail
ROUNDS=5; SECS=6; MD=0
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --secs) SECS=$2; shift 2 ;;
        --markdown) MD=1; shift ;;
        *) echo "bench-restart: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-restart: needs root (namespaces, hugepages, DPDK)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
source "$(dirname "$0")/../tests/e2e/lib.sh"
trap lz_cleanup EXIT
lz_build_previous_format
LZ_SECS=$SECS; LZ_KILL_AT=$(( SECS / 3 )); LZ_CONNS=20
lz_ns_up
lz_kill_servers
export LZ_CHECKPOINT=true
lz_config "" "$LZ_ZONE_POLICY"
lz_ckpt_start

# One measured disruption ($1: what, $2: tag); appends "what blackout silence
# carrier_down streams_ok" to the figures. Not in a subshell: the
# disruption restarts processes whose pids the caller keeps.
measure() {
    local what=$1 tag=$2 ok down
    lz_kill_traffic "$tag" >&2
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$LZ_WORK/$tag.streams.json" 2>/dev/null || echo 0)
    down=$(python3 -c 'import json,sys; print(int(any(json.load(open(sys.argv[1]))["down"].values())))' "$LZ_WORK/$tag.carrier.json")
    echo "$what $(lz_blackout_ms "$LZ_WORK/$tag.fwd.pcap" "$LZ_WORK/$tag.times") $(lz_outage_ms "$LZ_WORK/$tag.fwd.pcap" "$LZ_WORK/$tag.times") $down $ok" \
        | tee -a "$LZ_WORK/figures" >&2
}
start() { lz_dp_start; lz_join_taps; lz_wait_path; }

: >"$LZ_WORK/figures"
for r in $(seq 1 "$ROUNDS"); do
    for mode in takeover full; do
        if [ $mode = takeover ]; then LZ_SUPERVISE=1; else LZ_SUPERVISE=0; fi
        start
        measure "$mode" "$mode$r"
        lz_dp_stop
    done
done
lz_between() { lz_write_previous_format; }
LZ_SUPERVISE=1 start
LZ_DISRUPT=lz_upgrade measure upgrade upgrade
lz_dp_stop

python3 - "$LZ_WORK/figures" "$ROUNDS" "$LZ_CONNS" "$MD" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
rounds, conns, md = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def fig(mode):
    r = [x for x in rows if x[0] == mode]
    b, s = [float(x[1]) for x in r], [float(x[2]) for x in r]
    return (st.median(b), min(b), max(b), st.median(s), max(s), sum(int(x[3]) for x in r), sum(int(x[4]) == conns for x in r), len(r))
t, f, u = fig("takeover"), fig("full"), fig("upgrade")
def line(name, x):
    return (f"| {name} | {x[0]:.1f} ms ({x[1]:.1f}–{x[2]:.1f}) | {x[3]:.1f} ms (max {x[4]:.1f}) | "
            f"{'down in ' + str(x[5]) + ' of ' + str(x[7]) if x[5] else 'never down'} | {x[6]}/{x[7]} |")
print(f"{rounds} alternated rounds, {conns} verified TCP streams + UDP + ping each; figures from the server tap's capture")
if md:
    print("| disruption | blackout, median (range) | longest silence, median (max) | taps' carrier | rounds with every stream verified |")
    print("|---|---|---|---|---|")
print(line("takeover (SIGKILL of the active worker process)", t))
print(line("full restart (SIGKILL of a one-process dataplane, started again)", f))
print(line("upgrade at the format level (stop, segments as v0.1.0 wrote them, start)", u))
print(f"takeover / full restart: blackout {t[0] / f[0]:.3f}, longest silence {t[3] / f[3]:.3f}")
PY
