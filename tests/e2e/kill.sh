#!/usr/bin/env bash
# The kill test: connections survive a SIGKILL of the dataplane.
#
# The dataplane runs supervised (docs/RESTART.md): what is killed is the
# active worker process, the one running the packet code, and the standby
# takes over; the taps' carrier must never drop. The control runs the
# dataplane as one process, killed and restarted whole.
#
# Through net_tap with real kernels and the firewall policy of firewall.sh
# (new connections from the server side dropped, strict TCP window tracking),
# while 50 verified TCP streams, 10 more over IPv6 and 10 over an 802.1Q VLAN,
# iperf3, an active-mode FTP download, a UDP flow and a ping run, the
# dataplane is killed with SIGKILL and restarted.
#  * with checkpointd: every stream completes with every byte verified, the
#    FTP file's sha256 matches, iperf3 finishes, UDP replies resume, no RST
#    crosses the client's interface on a connection that was not over (both
#    FINs already sent) but iperf3's own end-of-test aborts (its server
#    closing with data unread, every byte in: tests/e2e/pcap.py), and the
#    kernels count no other reset or abort; the outage is measured on the
#    server tap;
#  * the control, checkpointing off: the same run breaks connections.
# Then checkpointd itself is killed and restarted under traffic: forwarding
# never stops; then the port owner itself is killed (its worker processes go
# with it) and started again, the full restart path, and nothing is lost.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT
set -E
trap 'echo "kill.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

[ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
[ -x "$LZ_CKPT_BIN" ] || lz_fail "$LZ_CKPT_BIN not built (cargo build --release)"
command -v vsftpd >/dev/null || lz_fail "vsftpd missing: run scripts/setup.sh"
command -v tcpdump >/dev/null || lz_fail "tcpdump missing: run scripts/setup.sh"
# The RST classifier this test trusts, on captures whose answers are known.
python3 "$LZ_PCAP" selftest || lz_fail "tests/e2e/pcap.py classifies RSTs wrongly"
# Seconds of traffic, when the dataplane dies, how many verified streams.
LZ_SECS=${LZ_KILL_SECS:-12}
LZ_KILL_AT=${LZ_KILL_AT:-4}
LZ_CONNS=${LZ_KILL_CONNS:-50}
CONNS=$LZ_CONNS; SECS=$LZ_SECS; RATE=$LZ_RATE
export LZ_MORE_FLOWS=1
lz_ns_up
lz_kill_servers
want=$LZ_FTP_SHA
POLICY=$LZ_ZONE_POLICY
# checkpointd's Prometheus endpoint, on a loopback port of this run's own.
export LZ_METRICS="127.0.0.1:$(( 20000 + LZ_ID % 20000 ))"

# Just before the kill, what an operator sees: lazarusctl against both daemons
# while the transfers run.
lz_before_kill() {
    [ "$1" = on ] || return 0
    lz_ctl status --json >"$LZ_WORK/ctl.status.json"
    lz_ctl conns --json >"$LZ_WORK/ctl.conns.json"
    lz_ctl conns >"$LZ_WORK/ctl.conns.txt"
    lz_ctl stats --json >"$LZ_WORK/ctl.stats.json"
    curl -sf "http://$LZ_METRICS/metrics" >"$LZ_WORK/metrics.before"
}

# ---------------------------------------------------------------- checkpointing on
export LZ_CHECKPOINT=true
lz_config "" "$POLICY"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
lz_kill_traffic on

curl -sf "http://$LZ_METRICS/metrics" >"$LZ_WORK/metrics.after" || lz_fail "no metrics from checkpointd at $LZ_METRICS"
streams=$(cat "$LZ_WORK/on.streams.json")
ok=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$streams")
[ "$ok" = "$CONNS" ] || { cat "$LZ_WORK/on.streams.err"; tail -30 "$LZ_WORK/dataplane.log"; lz_fail "checkpointing on: $ok of $CONNS streams verified: $streams"; }
for more in 6:IPv6 v:"VLAN $LZ_VLAN"; do
    m=$(cat "$LZ_WORK/on.streams${more%%:*}.json" 2>/dev/null || echo '{}')
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j.get("ok") == j.get("conns") == 10, j' "$m" \
        || lz_fail "checkpointing on: the ${more#*:} streams broke across the kill: $m"
done
got=$(sha256sum < "$LZ_WORK/on.ftp.bin" | cut -c1-64)
[ "$got" = "$want" ] || lz_fail "checkpointing on: the active-mode FTP download is wrong or incomplete"
python3 -c 'import sys; done=float(open(sys.argv[1]).read().split()[1]); kill=float(open(sys.argv[2]).read().split()[1]); assert done > kill + 1, (done, kill)' \
    "$LZ_WORK/on.ftp.done" "$LZ_WORK/on.times" || lz_fail "the FTP transfer ended before the kill: it proves nothing"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert "error" not in j, j["error"]; print(int(j["end"]["sum_received"]["bytes"]))' "$LZ_WORK/on.iperf3.json" >"$LZ_WORK/on.iperf3.bytes" \
    || { cat "$LZ_WORK/on.iperf3.json" | tail -5; lz_fail "checkpointing on: iperf3 failed"; }
[ "$(cat "$LZ_WORK/on.rc")" = 0 ] || lz_fail "checkpointing on: $(cat "$LZ_WORK/on.rc") client(s) exited non-zero"
udp=$(cat "$LZ_WORK/on.udp.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["last_reply_s"] > j["duration_s"] - 1, j' "$udp" \
    || lz_fail "checkpointing on: the UDP flow did not resume after the restart: $udp"
read -r rst rst_late rst_aborts <"$LZ_WORK/on.rst"; kresets=$(cat "$LZ_WORK/on.resets")
[ "$rst" = 0 ] && [ "$kresets" = 0 ] || {
    # When against the kill (lz_rst_on_wire printed which connections and
    # when): enough to tell a reset the restart caused from one an
    # application chose.
    echo "kill/start times: $(tr '\n' ' ' < "$LZ_WORK/on.times")"
    cat "$LZ_WORK/on.resets.detail" 2>/dev/null
    lz_fail "checkpointing on: $rst RST segment(s) on the client's wire, $kresets reset(s) counted by the kernels"; }
outage=$(lz_outage_ms "$LZ_WORK/on.fwd.pcap" "$LZ_WORK/on.times")
blackout=$(lz_blackout_ms "$LZ_WORK/on.fwd.pcap" "$LZ_WORK/on.times")
carrier=$(cat "$LZ_WORK/on.carrier.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["samples"] > 500 and not any(j["down"].values()), j' "$carrier" \
    || lz_fail "the taps' carrier dropped across the kill of the worker process: $carrier"
# A takeover, not a restart: far below the ~200 ms of EAL's start (the goal,
# 20 ms, is the demo's to report; this bound only catches a fall back).
python3 -c 'import sys; b=float(sys.argv[1]); assert 0 <= b <= 100, b' "$blackout" \
    || lz_fail "blackout on the server tap ${blackout} ms: the standby did not take over at once"
ping_loss=$(grep -o '[0-9]* received' "$LZ_WORK/on.ping.txt" | head -1)
restored=$(grep -o 'restore done.*' "$LZ_WORK/dataplane.log" | tail -1)
lz_log "on: $CONNS/$CONNS streams verified ($((RATE * SECS)) B each), 10/10 over IPv6, 10/10 over VLAN $LZ_VLAN, FTP sha256 ok, iperf3 $(cat "$LZ_WORK/on.iperf3.bytes") B, 0 RST on a live connection ($rst_late after both FINs, $rst_aborts iperf3 end-of-test aborts with every byte in), 0 other resets or aborts counted by the kernels"
lz_log "on: blackout on the server tap ${blackout} ms, longest silence ${outage} ms, carrier up throughout ($carrier); udp $udp; ping $(grep -o '[0-9]* packets transmitted, [0-9]* received' "$LZ_WORK/on.ping.txt"); $restored"
echo "$outage" >"$LZ_WORK/outage_ms"

# Prometheus scrapes of checkpointd, before the kill and after the restart:
# both processes' counters (the dataplane's through its telemetry), moving, and
# the restore's figures.
python3 - "$LZ_WORK" "$CONNS" <<'PY' || lz_fail "checkpointd's metrics: see above"
import sys
w, conns = sys.argv[1], int(sys.argv[2])
def scrape(f):
    m = {}
    for line in open(f):
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        m[name] = m.get(name, 0.0) + float(value)
    return m
a, b = scrape(w + "/metrics.before"), scrape(w + "/metrics.after")
for m in (a, b):
    assert m.get("lazarus_dataplane_up") == 1, "dataplane not up in a scrape"
assert a["lazarus_store_connections"] >= conns, a["lazarus_store_connections"]
assert b["lazarus_ring_applied_total"] > a["lazarus_ring_applied_total"], "checkpointd's applied deltas did not move"
assert a.get("lazarus_dataplane_rx", 0) > 0 and b.get("lazarus_dataplane_rx", 0) > 0, "dataplane rx not moving"
assert b["lazarus_dataplane_checkpoint_restored"] >= conns, b.get("lazarus_dataplane_checkpoint_restored")
assert "lazarus_dataplane_checkpoint_restore_us" in b
print(f"metrics: deltas applied {a['lazarus_ring_applied_total']:.0f} -> {b['lazarus_ring_applied_total']:.0f}, "
      f"restored {b['lazarus_dataplane_checkpoint_restored']:.0f} in {b['lazarus_dataplane_checkpoint_restore_us']:.0f} us")
PY

# lazarusctl saw the live transfers: both daemons up, the 50 streams and the
# FTP control connection ESTABLISHED in checkpointd's store, decoded the way
# conntrack -L prints them, and the dataplane's counters through telemetry.
python3 - "$LZ_WORK" "$CONNS" "$LZ_CLIENT_IP" "$LZ_SERVER_IP" <<'PY' || lz_fail "lazarusctl during the transfer: see above"
import json, sys
w, conns, cip, sip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
st = json.load(open(w + "/ctl.status.json"))
assert st["checkpointd"]["up"] and st["dataplane"]["up"], st
assert st["checkpointd"]["status"]["store"]["conns"] >= conns, st["checkpointd"]["status"]["store"]
c = json.load(open(w + "/ctl.conns.json"))["conns"]
streams = [x for x in c if x["proto"] == "tcp" and x["dport"] == 7000 and x["src"] == cip and x["dst"] == sip]
est = [x for x in streams if x["state"] == "ESTABLISHED" and x["assured"]]
assert len(est) == conns, f"{len(est)} of {conns} streams ESTABLISHED in lazarusctl conns: {streams[:3]}"
# The IPv6 and VLAN streams are stored as such: the VLAN one keyed by its tag.
v6 = [x for x in c if x["family"] == "ipv6" and x["dport"] == 7000 and x["state"] == "ESTABLISHED"]
tagged = [x for x in c if x.get("vlan") == 100 and x["dport"] == 7000 and x["state"] == "ESTABLISHED"]
assert len(v6) == 10 and len(tagged) == 10, f"{len(v6)} IPv6 and {len(tagged)} VLAN 100 streams stored, 10 each expected"
ftp = [x for x in c if x["proto"] == "tcp" and x["dport"] == 21]
assert ftp and ftp[0].get("helper") == "ftp", f"no FTP control connection with the ftp helper: {ftp}"
text = open(w + "/ctl.conns.txt").read()
assert text.count("dport=7000") >= conns and "ESTABLISHED" in text and "[ASSURED]" in text, text[:500]
s = json.load(open(w + "/ctl.stats.json"))
assert s["stats"]["rx"] > 0, s
print(f"lazarusctl during the transfer: {len(est)} streams ESTABLISHED, FTP helper on, dataplane rx {s['stats']['rx']}")
PY

# -------------------------------------------- checkpointd killed and restarted
lz_log "checkpointd: SIGKILL and restart under traffic"
lz_in_client python3 "$LZ_STREAMS" tcp-client --server "$LZ_SERVER_IP" --port 7000 --conns 10 \
    --bytes $((RATE * 8)) --rate $RATE --stall 10 >"$LZ_WORK/ck.streams.json" &
ck_client=$!
sleep 2
lz_ckpt_kill
sleep 0.5
lz_ckpt_start
sleep 1.5
# The dataplane was never stopped; now kill the port owner itself: its worker
# processes go with it, and the full restart path (a new port owner, as
# systemd would start) must find everything in the restarted checkpointd,
# including what was written while it was down.
# (lz_dp_kill fails if worker processes outlive their port owner.)
lz_dp_kill
lz_dp_start
lz_join_taps
wait "$ck_client" || true
ck=$(cat "$LZ_WORK/ck.streams.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["ok"] == j["conns"], j' "$ck" \
    || lz_fail "checkpointd restart, then a SIGKILL of the port owner: streams broke: $ck"
lz_log "checkpointd restart under traffic, then a SIGKILL of the port owner and a full restart: 10/10 streams verified, its worker processes gone with it"
lz_dp_stop
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || lz_fail "checkpointd did not exit 0 on SIGTERM"; LZ_CKPT_PID=

# --------------------------------------------------------- the control: off
# Checkpointing off, and one process restarted whole: connections break, and
# the carrier drops while no process holds the taps (the sampler can see it).
export LZ_CHECKPOINT=false LZ_SUPERVISE=0
lz_config "" "$POLICY"
lz_dp_start
lz_join_taps
lz_wait_path
lz_kill_traffic off
streams_off=$(cat "$LZ_WORK/off.streams.json")
ok_off=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$streams_off")
[ "$ok_off" -lt "$CONNS" ] || lz_fail "control: with checkpointing off all $CONNS streams survived the kill; the test cannot tell"
carrier_off=$(cat "$LZ_WORK/off.carrier.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert all(j["down"].values()), j' "$carrier_off" \
    || lz_fail "control: the carrier never dropped across a full restart; the carrier check cannot tell: $carrier_off"
got_off=$(sha256sum < "$LZ_WORK/off.ftp.bin" 2>/dev/null | cut -c1-64 || true)
lz_log "control (checkpoint off): $ok_off of $CONNS streams survived: $streams_off; FTP $([ "$got_off" = "$want" ] && echo intact || echo broken)"
lz_dp_stop
echo "PASS kill: $CONNS streams + 10 IPv6 + 10 VLAN-tagged + FTP + iperf3 + UDP + ping survive SIGKILL of the dataplane (blackout ${blackout} ms, longest silence ${outage} ms, carrier never down, 0 RST on a live connection); checkpointd restart safe; control without checkpointing breaks ($ok_off/$CONNS)"
