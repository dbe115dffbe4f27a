#!/usr/bin/env bash
# An upgrade under traffic, from the previous release to this build: a running
# pair (checkpointd and the dataplane) of the release tagged v0.1.0 (layout 3,
# portion format 1) carries 50 verified TCP streams, an active-mode FTP
# download, iperf3, a UDP flow and a ping; then, as an operator would with the
# new package installed, the old dataplane is stopped, the old checkpointd
# stopped, and this build's checkpointd (which translates the segments in
# place) and supervised dataplane (which restores every connection, format 1
# read as format 2) started. Every stream completes with every byte
# verified, the FTP file's sha256 matches, no reset; the outage (the longest
# silence on the server tap) is printed.
#
# The release is built from its tag into a cache outside the tree
# (${XDG_CACHE_HOME:-~/.cache}/lazarus), once. A clone without the tag says
# so and skips this half; the format-level half always runs: this build's
# pair is stopped, its segments rewritten by the previous versions' encoders
# kept in the code (layout 3 headers, format-1 portions), and started again
# under traffic.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT
set -E
trap 'echo "upgrade.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

[ -x "$LZ_BIN" ] && [ -x "$LZ_CKPT_BIN" ] || lz_fail "build first (cargo build --release)"
LZ_SECS=${LZ_UPGRADE_SECS:-8}
LZ_KILL_AT=3
LZ_CONNS=50
TAG=v0.1.0

# The previous release's binaries, built once into the cache; prints their
# directory, or nothing when this clone has no tag.
previous_release() {
    local commit cache src
    commit=$(git -C "$LZ_ROOT" rev-parse -q --verify "$TAG^{commit}" 2>/dev/null) || return 0
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/lazarus/$TAG-${commit:0:12}
    if [ ! -x "$cache/bin/lazarus-dataplane" ] || [ ! -x "$cache/bin/lazarus-checkpointd" ]; then
        lz_log "building $TAG ($commit) into $cache (once)" >&2
        src=$cache/src; rm -rf "$src"; mkdir -p "$src" "$cache/bin"
        git -C "$LZ_ROOT" archive "$commit" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR=$cache/target cargo build --release --locked -q -p dataplane -p checkpointd) >&2 \
            || lz_fail "cannot build $TAG from its tag"
        cp "$cache/target/release/lazarus-dataplane" "$cache/target/release/lazarus-checkpointd" "$cache/bin/"
        rm -rf "$src"
    fi
    echo "$cache/bin"
}

# The traffic's verdicts, as kill.sh judges them; $1: tag.
judge() {
    local tag=$1 ok rst kres
    ok=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["ok"])' "$LZ_WORK/$tag.streams.json")
    [ "$ok" = "$LZ_CONNS" ] || { cat "$LZ_WORK/$tag.streams.err"; tail -30 "$LZ_WORK/dataplane.log"; lz_fail "$tag: $ok of $LZ_CONNS streams verified"; }
    [ "$(sha256sum < "$LZ_WORK/$tag.ftp.bin" | cut -c1-64)" = "$LZ_FTP_SHA" ] || lz_fail "$tag: the FTP download is wrong or incomplete"
    python3 -c 'import sys; done=float(open(sys.argv[1]).read().split()[1]); kill=float(open(sys.argv[2]).read().split()[1]); assert done > kill + 1, (done, kill)' \
        "$LZ_WORK/$tag.ftp.done" "$LZ_WORK/$tag.times" || lz_fail "$tag: the FTP transfer ended before the upgrade: it proves nothing"
    read -r rst _ _ <"$LZ_WORK/$tag.rst"; kres=$(cat "$LZ_WORK/$tag.resets")
    [ "$rst" = 0 ] && [ "$kres" = 0 ] || lz_fail "$tag: $rst RST on the client's wire, $kres resets counted by the kernels"
    restored=$(grep -o 'restore done connections=[0-9]*' "$LZ_WORK/dataplane.log" | tail -1 | grep -o '[0-9]*$')
    [ "${restored:-0}" -ge "$LZ_CONNS" ] || lz_fail "$tag: only ${restored:-0} connections restored"
    outage=$(lz_outage_ms "$LZ_WORK/$tag.fwd.pcap" "$LZ_WORK/$tag.times")
    lz_log "$tag: $ok/$LZ_CONNS streams verified, FTP sha256 ok, 0 resets, $restored connections restored; outage (longest silence on the server tap) $outage ms"
    echo "$outage" >"$LZ_WORK/$tag.outage_ms"
}

lz_ns_up
lz_kill_servers
export LZ_CHECKPOINT=true
lz_config "" "$LZ_ZONE_POLICY"
summary=()

# ------------------------------------------ from the previous release's binaries
old=$(previous_release)
if [ -z "$old" ]; then
    lz_log "no $TAG tag in this clone (CI clones may lack tags): the upgrade from $TAG's binaries is skipped; the format-level upgrade runs"
    summary+=("release upgrade skipped (no $TAG tag)")
else
    LZ_CKPT_BIN=$old/lazarus-checkpointd lz_ckpt_start
    LZ_BIN=$old/lazarus-dataplane LZ_SUPERVISE=0 lz_dp_start
    lz_join_taps
    lz_wait_path
    base=$(wc -l <"$LZ_WORK/checkpointd.log")
    LZ_DISRUPT=lz_upgrade lz_kill_traffic release
    tail -n +"$((base + 1))" "$LZ_WORK/checkpointd.log" | grep -q "translated from layout 3" \
        || lz_fail "this build's checkpointd did not translate $TAG's segments (layout 3)"
    judge release
    summary+=("from $TAG's binaries: outage $(cat "$LZ_WORK/release.outage_ms") ms")
    lz_dp_stop
    kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=
    rm -rf "$LZ_CKPT_DIR"
fi

# ---------------------------- format level: the previous versions' encoders
lz_ckpt_start
LZ_SUPERVISE=1 lz_dp_start
lz_join_taps
lz_wait_path
lz_build_previous_format
lz_between() {
    lz_write_previous_format
    lz_log "format: $(cat "$LZ_WORK/previous_format.txt")"
}
base=$(wc -l <"$LZ_WORK/checkpointd.log")
LZ_DISRUPT=lz_upgrade lz_kill_traffic format
tail -n +"$((base + 1))" "$LZ_WORK/checkpointd.log" | grep -q "translated from layout 3" || lz_fail "the rewritten segments were not translated from layout 3"
judge format
summary+=("format level (layout 3, portion format 1): outage $(cat "$LZ_WORK/format.outage_ms") ms")
lz_dp_stop
echo "PASS upgrade: 50 verified streams + FTP + iperf3 + UDP + ping through each upgrade, 0 resets; $(IFS=';'; echo "${summary[*]}")"
