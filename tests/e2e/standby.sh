#!/usr/bin/env bash
# The whole box dies: a standby appliance takes over every connection.
#
# Appliance A (dataplane + checkpointd) forwards between the client and the
# server namespaces and copies every connection to Debian's redis-server in a
# namespace of its own (docs/CHECKPOINT.md#remote). Appliance B, with its own
# EAL prefix, taps and segments, runs beside it: its supervised dataplane up
# with its ports out of the bridges, its checkpointd a standby following the
# remote copy into its store (a hot mirror). Under 50 verified TCP streams,
# an active-mode FTP download, iperf3, a UDP flow and a ping through A, A's
# dataplane and checkpointd are SIGKILLed and A's segments deleted; the test
# moves the bridge membership to B's taps (what a VRRP failover does) and
# runs `lazarusctl takeover` against B: every connection continues, every
# byte verified, FTP sha256 ok, no reset.
# Then the old active comes back with its old store and finds itself fenced
# (epoch owned by B): refused, counted, logged, the remote copy unchanged.
# The control: B without the remote copy takes the wire with nothing to
# restore, and the connections break.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
set -E
trap 'echo "standby.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

[ -x "$LZ_BIN" ] && [ -x "$LZ_CKPT_BIN" ] && [ -x "$LZ_CTL" ] || lz_fail "build first (cargo build --release)"
command -v redis-server >/dev/null || lz_fail "redis-server missing: run scripts/setup.sh"
LZ_SECS=${LZ_STANDBY_SECS:-9}
LZ_KILL_AT=3
LZ_CONNS=50

# Appliance B: what lib.sh's functions read, swapped in by as_b.
B_ID=$(( (LZ_ID + 1) % 100000 ))
B_TAP_C=lztc$B_ID; B_TAP_S=lzts$B_ID
B_CKPT_DIR=/dev/hugepages/lz$B_ID-ckpt
B_WORK=$LZ_WORK/b; mkdir -p "$B_WORK"
B_DP_PID=; B_CKPT_PID=; B_LOG_BASE=0
as_b() {
    local a=("$LZ_ID" "$LZ_TAP_C" "$LZ_TAP_S" "$LZ_CKPT_DIR" "$LZ_WORK" "$LZ_DP_PID" "$LZ_CKPT_PID" "${LZ_DP_LOG_BASE:-0}")
    LZ_ID=$B_ID LZ_TAP_C=$B_TAP_C LZ_TAP_S=$B_TAP_S LZ_CKPT_DIR=$B_CKPT_DIR LZ_WORK=$B_WORK
    LZ_DP_PID=$B_DP_PID LZ_CKPT_PID=$B_CKPT_PID LZ_DP_LOG_BASE=$B_LOG_BASE
    local rc=0
    "$@" || rc=$?
    B_DP_PID=$LZ_DP_PID B_CKPT_PID=$LZ_CKPT_PID B_LOG_BASE=${LZ_DP_LOG_BASE:-0}
    LZ_ID=${a[0]} LZ_TAP_C=${a[1]} LZ_TAP_S=${a[2]} LZ_CKPT_DIR=${a[3]} LZ_WORK=${a[4]}
    LZ_DP_PID=${a[5]} LZ_CKPT_PID=${a[6]} LZ_DP_LOG_BASE=${a[7]}
    return $rc
}
b_cleanup() {
    local rc=$?
    {
        for p in $B_DP_PID $B_CKPT_PID; do kill -KILL "$p" || true; done
        pgrep -f -- "--file-prefix lz$B_ID " | xargs -r kill -KILL || true
    } 2>/dev/null
    ip link del "$B_TAP_C" 2>/dev/null || true
    ip link del "$B_TAP_S" 2>/dev/null || true
    rm -f /dev/hugepages/lz${B_ID}map_* 2>/dev/null || true
    rm -rf "/var/run/dpdk/lz$B_ID" "$B_CKPT_DIR" "$LZ_CKPT_DIR.old" 2>/dev/null || true
    return $rc
}
trap 'b_cleanup; lz_cleanup' EXIT

remote_of() { # $1: control socket reply; prints the remote dict's field $2
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["remote"][sys.argv[2]])' "$1" "$2"
}

# Whole-box loss of A, then B takes the wire and the connections.
failover() {
    lz_dp_kill
    lz_ckpt_kill
    [ -z "$(lz_worker_pids)" ] || { sleep 0.2; [ -z "$(lz_worker_pids)" ] || lz_fail "A's worker processes outlived their port owner"; }
    # Kept aside (out of checkpoint.dir) for the old active's return below.
    if [ "${KEEP_A_SEGMENTS:-0}" = 1 ]; then mv "$LZ_CKPT_DIR" "$LZ_CKPT_DIR.old"; else rm -rf "$LZ_CKPT_DIR"; fi
    ip link set "$LZ_TAP_C" nomaster; ip link set "$LZ_TAP_S" nomaster
    ip link set "$LZ_TAP_C" down; ip link set "$LZ_TAP_S" down
    as_b lz_join_taps
    if [ "${B_REMOTE:-1}" = 1 ]; then
        as_b lz_ctl takeover >"$LZ_WORK/takeover.txt" 2>&1 || { cat "$LZ_WORK/takeover.txt"; tail -20 "$B_WORK/checkpointd.log"; lz_fail "lazarusctl takeover failed"; }
    fi
}

verdict() {
    local tag=$1 ok rst kres sha
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("ok", 0))' "$LZ_WORK/$tag.streams.json" 2>/dev/null || echo 0)
    read -r rst _ _ <"$LZ_WORK/$tag.rst"; kres=$(cat "$LZ_WORK/$tag.resets")
    sha=$(sha256sum < "$LZ_WORK/$tag.ftp.bin" 2>/dev/null | cut -c1-64)
    if [ "$ok" = "$LZ_CONNS" ] && [ "$sha" = "$LZ_FTP_SHA" ] && [ "$rst" = 0 ] && [ "$kres" = 0 ]; then
        echo OK
    else
        echo "$ok/$LZ_CONNS streams, ftp $([ "$sha" = "$LZ_FTP_SHA" ] && echo ok || echo broken), $rst RST on the wire, $kres resets"
    fi
}

start_pair() { # $1 A's extra TOML, $2 B's
    lz_config "" "$LZ_ZONE_POLICY
$1"
    lz_ckpt_start
    lz_dp_start
    lz_join_taps
    as_b lz_config "" "$LZ_ZONE_POLICY
$2"
    as_b lz_ckpt_start
    as_b lz_dp_start
    lz_wait_path
}

lz_ns_up
lz_kill_servers
lz_redis_up
export LZ_CHECKPOINT=true

# ------------------------------------------------- A active, B a hot standby
start_pair "$(lz_remote_toml active A)" "$(lz_remote_toml standby B)"
for _ in $(seq 1 100); do
    st=$(as_b lz_ckpt_ask '{"cmd":"status"}')
    [ "$(remote_of "$st" following)" = True ] && break
    sleep 0.1
done
[ "$(remote_of "$st" following)" = True ] || lz_fail "B's checkpointd is not following the remote store: $st"
# The outage is measured where the server's traffic leaves the bridge,
# whichever appliance forwards it.
export LZ_FWD_IF=${LZ_VE_S}p LZ_FWD_DIR=out
KEEP_A_SEGMENTS=1 LZ_DISRUPT=failover lz_kill_traffic on
v=$(verdict on)
st=$(as_b lz_ckpt_ask '{"cmd":"status"}')
[ "$v" = OK ] || { cat "$LZ_WORK/takeover.txt"; tail -20 "$B_WORK/checkpointd.log"; tail -20 "$B_WORK/dataplane.log"; lz_fail "takeover by B: $v; B: $st"; }
restored=$(grep -o 'restore done connections=[0-9]*' "$B_WORK/dataplane.log" | tail -1 | grep -o '[0-9]*$')
[ "${restored:-0}" -ge "$LZ_CONNS" ] || lz_fail "B's dataplane restored only ${restored:-0} connections"
outage=$(lz_outage_ms "$LZ_WORK/on.fwd.pcap" "$LZ_WORK/on.times")
lz_log "takeover by B: $LZ_CONNS/$LZ_CONNS streams verified, FTP sha256 ok, 0 resets; $(cat "$LZ_WORK/takeover.txt"); B restored $restored; p99 mirror lag $(remote_of "$st" mirror_lag_p99_us) us"
epoch_b=$(remote_of "$st" epoch)

# ------------------------------- the old active comes back: fenced, nothing written
snapshot() { for k in $(lz_redis_cli --scan --pattern "lazarus:{$LZ_REMOTE_NS:*}" | sort); do lz_redis_cli --raw HGETALL "$k" | sha256sum; done | sha256sum; }
before=$(snapshot)
rm -rf "$LZ_CKPT_DIR"; mv "$LZ_CKPT_DIR.old" "$LZ_CKPT_DIR"
lz_ckpt_start
for _ in $(seq 1 50); do
    st=$(lz_ckpt_ask '{"cmd":"status"}')
    [ "$(remote_of "$st" fenced)" = True ] && [ "$(remote_of "$st" fenced_writes)" -ge "$LZ_CONNS" ] && break
    sleep 0.1
done
[ "$(remote_of "$st" fenced)" = True ] || lz_fail "the old active was not fenced: $st"
[ "$(remote_of "$st" fenced_writes)" -ge "$LZ_CONNS" ] || lz_fail "the old active's writes were not refused and counted: $st"
grep -q 'is fenced off' "$LZ_WORK/checkpointd.log" || lz_fail "the old active did not log that it is fenced off"
sleep 0.5
[ "$(snapshot)" = "$before" ] || lz_fail "the fenced old active changed the remote copy"
lz_log "old active back with its old store: fenced at epoch $epoch_b, $(remote_of "$st" fenced_writes) write(s) refused and counted, the remote copy unchanged"
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=
as_b lz_dp_stop
kill -TERM "$B_CKPT_PID"; wait "$B_CKPT_PID" || true; B_CKPT_PID=
rm -rf "$LZ_CKPT_DIR" "$B_CKPT_DIR"
ip link set "$B_TAP_C" nomaster; ip link set "$B_TAP_S" nomaster

# ------------------------------------------------- control: B without the remote copy
ip link set "$LZ_TAP_C" up; ip link set "$LZ_TAP_S" up
start_pair "" ""
LZ_CONNS=20 B_REMOTE=0 LZ_DISRUPT=failover lz_kill_traffic off
v=$(LZ_CONNS=20 verdict off)
[ "$v" != OK ] || lz_fail "control: B took over without a mirror and nothing broke: the test cannot tell"
lz_log "control (no remote copy): $v"
echo "PASS standby: whole-box loss of A, B took over ($(cat "$LZ_WORK/takeover.txt")): 50 verified streams + FTP + iperf3 + UDP + ping, 0 resets, outage $outage ms; old active fenced; control without the remote copy: $v"
