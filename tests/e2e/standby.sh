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

trap lz_cleanup EXIT

remote_of() { # $1: control socket reply; prints the remote dict's field $2
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["remote"][sys.argv[2]])' "$1" "$2"
}


lz_ns_up
lz_kill_servers
lz_redis_up
export LZ_CHECKPOINT=true

# ------------------------------------------------- A active, B a hot standby
lz_pair_start "$(lz_remote_toml active A)" "$(lz_remote_toml standby B)"
for _ in $(seq 1 100); do
    st=$(lz_as_b lz_ckpt_ask '{"cmd":"status"}')
    [ "$(remote_of "$st" following)" = True ] && break
    sleep 0.1
done
[ "$(remote_of "$st" following)" = True ] || lz_fail "B's checkpointd is not following the remote store: $st"
lz_as_b lz_ctl status >"$LZ_WORK/b.status.txt" 2>&1 || true
grep -q "remote: up, standby, following" "$LZ_WORK/b.status.txt" || { cat "$LZ_WORK/b.status.txt"; lz_fail "lazarusctl status on B does not show a standby following the remote store"; }
# The outage is measured where the server's traffic leaves the bridge,
# whichever appliance forwards it.
export LZ_FWD_IF=${LZ_VE_S}p LZ_FWD_DIR=out
LZ_KEEP_A_SEGMENTS=1 LZ_DISRUPT=lz_failover lz_kill_traffic on
v=$(lz_verdict on)
st=$(lz_as_b lz_ckpt_ask '{"cmd":"status"}')
[ "$v" = OK ] || { cat "$LZ_WORK/takeover.txt"; tail -20 "$LZ_B_WORK/checkpointd.log"; tail -20 "$LZ_B_WORK/dataplane.log"; lz_fail "takeover by B: $v; B: $st"; }
restored=$(grep -o 'restore done connections=[0-9]*' "$LZ_B_WORK/dataplane.log" | tail -1 | grep -o '[0-9]*$')
[ "${restored:-0}" -ge "$LZ_CONNS" ] || lz_fail "B's dataplane restored only ${restored:-0} connections"
outage=$(lz_outage_ms "$LZ_WORK/on.fwd.pcap" "$LZ_WORK/on.times")
lz_log "takeover by B: $LZ_CONNS/$LZ_CONNS streams verified, FTP sha256 ok, 0 resets; $(cat "$LZ_WORK/takeover.txt"); B restored $restored; p99 mirror lag $(remote_of "$st" mirror_lag_p99_us) us"
epoch_b=$(remote_of "$st" epoch)

# ------------------------------- the old active comes back: fenced, nothing written
snapshot() { for k in $(lz_redis_cli --scan --pattern "lazarus:{$LZ_REMOTE_NS:*}" | sort); do lz_redis_cli --raw HGETALL "$k" | sha256sum; done | sha256sum; }
# B, the active now, keeps writing as its connections close and expire:
# it is frozen while A comes back, so a change can only be A's.
kill -STOP "$LZ_B_CKPT_PID"
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
after=$(snapshot)
kill -CONT "$LZ_B_CKPT_PID"
[ "$after" = "$before" ] || lz_fail "the fenced old active changed the remote copy"
lz_log "old active back with its old store: fenced at epoch $epoch_b, $(remote_of "$st" fenced_writes) write(s) refused and counted, the remote copy unchanged"
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=
lz_as_b lz_dp_stop
kill -TERM "$LZ_B_CKPT_PID"; wait "$LZ_B_CKPT_PID" || true; LZ_B_CKPT_PID=
rm -rf "$LZ_CKPT_DIR" "$LZ_B_CKPT_DIR"
ip link set "$LZ_B_TAP_C" nomaster; ip link set "$LZ_B_TAP_S" nomaster

# ------------------------------- A with two workers, B with one: placed by RSS
# B's dataplane puts each connection on the worker its own ports' RSS sends
# it to, not the worker A stored it for. (No FTP here: with two workers an
# active-mode data connection may hash to the worker without its expectation.)
ip link set "$LZ_TAP_C" up; ip link set "$LZ_TAP_S" up
LZ_REMOTE_NS=$LZ_REMOTE_NS-placed  # a copy of its own: the first one is B's now
LZ_A_WORKERS=2 lz_pair_start "$(lz_remote_toml active A2)" "$(lz_remote_toml standby B2)"
lz_as_b lz_ckpt_ask '{"cmd":"status"}' >/dev/null
a_then_failover() { lz_ckpt_ask '{"cmd":"status"}' >"$LZ_WORK/a.status.json"; lz_failover; }
LZ_NO_FTP=1 LZ_CONNS=20 LZ_DISRUPT=a_then_failover lz_kill_traffic placed
v=$(LZ_NO_FTP=1 LZ_CONNS=20 lz_verdict placed)
st=$(lz_as_b lz_ckpt_ask '{"cmd":"status"}')
[ "$v" = OK ] || { tail -20 "$LZ_B_WORK/dataplane.log"; lz_fail "takeover by a one-worker B from a two-worker A: $v; B: $st"; }
a_w=$(python3 -c 'import json,sys; print(*(r["applied"] for r in json.load(open(sys.argv[1]))["rings"]))' "$LZ_WORK/a.status.json")
[ "$(echo "$a_w" | awk '{print ($1 > 0 && $2 > 0)}')" = 1 ] || lz_fail "A's two workers did not both carry connections (deltas applied per ring: $a_w): the test cannot tell"
[ "$(remote_of "$st" mirror_unplaced)" -ge 20 ] || lz_fail "B's mirror kept A's worker numbers: $st"
lz_log "A with two workers (deltas per ring: $a_w) to B with one: 20/20 streams verified, UDP, ping, 0 resets; $(remote_of "$st" mirror_unplaced) records placed by B's RSS"
lz_dp_kill 2>/dev/null || true; lz_ckpt_kill 2>/dev/null || true
lz_as_b lz_dp_stop
kill -TERM "$LZ_B_CKPT_PID"; wait "$LZ_B_CKPT_PID" || true; LZ_B_CKPT_PID=
rm -rf "$LZ_CKPT_DIR" "$LZ_B_CKPT_DIR"
ip link set "$LZ_B_TAP_C" nomaster; ip link set "$LZ_B_TAP_S" nomaster

# ------------------------------------------------- control: B without the remote copy
ip link set "$LZ_TAP_C" up; ip link set "$LZ_TAP_S" up
lz_pair_start "" ""
LZ_CONNS=20 LZ_B_REMOTE=0 LZ_DISRUPT=lz_failover lz_kill_traffic off
v=$(LZ_CONNS=20 lz_verdict off)
[ "$v" != OK ] || lz_fail "control: B took over without a mirror and nothing broke: the test cannot tell"
lz_log "control (no remote copy): $v"
echo "PASS standby: whole-box loss of A, B took over ($(cat "$LZ_WORK/takeover.txt")): 50 verified streams + FTP + iperf3 + UDP + ping, 0 resets, outage $outage ms; old active fenced; two-worker A to one-worker B placed by RSS; control without the remote copy: $v"
