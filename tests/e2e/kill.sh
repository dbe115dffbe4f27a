#!/usr/bin/env bash
# The kill test: connections survive a SIGKILL of the dataplane.
#
# Through net_tap with real kernels and the firewall policy of firewall.sh
# (new connections from the server side dropped, strict TCP window tracking),
# while 50 verified TCP streams, iperf3, an active-mode FTP download, a UDP
# flow and a ping run, the dataplane is killed with SIGKILL and restarted.
#  * with checkpointd: every stream completes with every byte verified, the
#    FTP file's sha256 matches, iperf3 finishes, UDP replies resume, no RST
#    crosses the client's interface; the outage is measured on the server tap;
#  * the control, checkpointing off: the same run breaks connections.
# Then checkpointd itself is killed and restarted under traffic: forwarding
# never stops, and a second dataplane kill afterwards still loses nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'lz_cleanup; pkill -f "vsftpd $LZ_WORK" 2>/dev/null || true' EXIT
set -E
trap 'echo "kill.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

[ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
[ -x "$LZ_CKPT_BIN" ] || lz_fail "$LZ_CKPT_BIN not built (cargo build --release)"
command -v vsftpd >/dev/null || lz_fail "vsftpd missing: run scripts/setup.sh"
command -v tcpdump >/dev/null || lz_fail "tcpdump missing: run scripts/setup.sh"
STREAMS="$LZ_ROOT/tests/e2e/streams.py"
# Seconds of traffic, and when the dataplane dies.
SECS=${LZ_KILL_SECS:-12}
KILL_AT=${LZ_KILL_AT:-4}
CONNS=${LZ_KILL_CONNS:-50}
RATE=150000

lz_ns_up
export LZ_CLIENT_ZONE=inside LZ_SERVER_ZONE=outside
POLICY='
[[zone]]
name = "inside"
default = "accept"

[[zone]]
name = "outside"
default = "drop"
'

mkdir -p "$LZ_WORK/ftp" /var/run/vsftpd/empty
head -c $((RATE * SECS)) /dev/urandom > "$LZ_WORK/ftp/file.bin"
chmod 755 "$LZ_WORK" "$LZ_WORK/ftp"; chmod 644 "$LZ_WORK/ftp/file.bin"
cat > "$LZ_WORK/vsftpd.conf" <<CONF
listen=YES
listen_ipv6=NO
listen_address=$LZ_SERVER_IP
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$LZ_WORK/ftp
local_enable=NO
write_enable=NO
pasv_enable=YES
port_enable=YES
connect_from_port_20=NO
anon_max_rate=$RATE
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
CONF
lz_in_server vsftpd "$LZ_WORK/vsftpd.conf" >"$LZ_WORK/vsftpd.log" 2>&1 &
LZ_PIDS+=($!)
lz_in_server python3 "$STREAMS" tcp-server --bind "$LZ_SERVER_IP" --port 7000 &
LZ_PIDS+=($!)
lz_in_server python3 "$STREAMS" udp-server --bind "$LZ_SERVER_IP" --port 7001 &
LZ_PIDS+=($!)
lz_in_server iperf3 -s -B "$LZ_SERVER_IP" >/dev/null 2>&1 &
LZ_PIDS+=($!)
want=$(sha256sum < "$LZ_WORK/ftp/file.bin" | cut -c1-64)

resets() { # TCP resets the kernels of both namespaces sent or saw, so far
    local n=0 v
    for ns in "$LZ_NS_C" "$LZ_NS_S"; do
        v=$(ip netns exec "$ns" nstat -az TcpOutRsts TcpEstabResets 2>/dev/null | awk 'NR>1 && $1 ~ /^Tcp/ {s+=$2} END {print s+0}')
        n=$((n + v))
    done
    echo "$n"
}

# Runs the traffic, kills the dataplane at KILL_AT and restarts it. $1: tag.
# Leaves results in $LZ_WORK/$1.*.
run_traffic() {
    local tag=$1 pids=() t0
    lz_in_client tcpdump -i "$LZ_VE_C" -n -U -s 96 -w "$LZ_WORK/$tag.rst.pcap" 'tcp[tcpflags] & tcp-rst != 0' >/dev/null 2>&1 &
    local dump_rst=$!
    # What the dataplane forwards to the server side, for the outage.
    tcpdump -i "$LZ_TAP_S" -Q in -n -s 64 -w "$LZ_WORK/$tag.fwd.pcap" >/dev/null 2>&1 &
    local dump_fwd=$!
    sleep 1
    local rst0; rst0=$(resets)
    t0=$(date +%s.%N)
    lz_in_client python3 "$STREAMS" tcp-client --server "$LZ_SERVER_IP" --port 7000 --conns "$CONNS" \
        --bytes $((RATE * SECS)) --rate $RATE --stall 10 >"$LZ_WORK/$tag.streams.json" 2>"$LZ_WORK/$tag.streams.err" &
    pids+=($!)
    lz_in_client timeout $((SECS + 15)) iperf3 -c "$LZ_SERVER_IP" -P 4 -b 10M -t "$SECS" -J >"$LZ_WORK/$tag.iperf3.json" 2>"$LZ_WORK/$tag.iperf3.err" &
    pids+=($!)
    # Active mode: the data connection comes from the server side, which the
    # policy admits only as related. vsftpd paces it (anon_max_rate), so the
    # transfer is on the wire when the dataplane dies.
    ( rc=0; lz_in_client timeout $((SECS + 15)) curl -s -P - -o "$LZ_WORK/$tag.ftp.bin" "ftp://$LZ_SERVER_IP/file.bin" || rc=$?
      echo "$rc $(date +%s.%N)" >"$LZ_WORK/$tag.ftp.done"; exit $rc ) &
    pids+=($!)
    lz_in_client python3 "$STREAMS" udp-client --server "$LZ_SERVER_IP" --port 7001 --interval 0.01 --duration "$SECS" >"$LZ_WORK/$tag.udp.json" &
    pids+=($!)
    lz_in_client ping -i 0.01 -w "$SECS" -q "$LZ_SERVER_IP" >"$LZ_WORK/$tag.ping.txt" 2>&1 &
    pids+=($!)
    sleep "$KILL_AT"
    lz_log "$tag: SIGKILL the dataplane under traffic"
    lz_dp_kill
    echo "kill $(date +%s.%N)" >"$LZ_WORK/$tag.times"
    lz_dp_start
    echo "started $(date +%s.%N)" >>"$LZ_WORK/$tag.times"
    lz_join_taps
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=$((rc + 1)); done
    echo "$rc" >"$LZ_WORK/$tag.rc"
    echo "$(( $(resets) - rst0 ))" >"$LZ_WORK/$tag.resets"
    sleep 0.5
    kill -TERM "$dump_rst" "$dump_fwd" 2>/dev/null || true
    wait "$dump_rst" "$dump_fwd" 2>/dev/null || true
    lz_log "$tag: traffic done in $(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))")s"
}

# The longest silence in what the dataplane forwarded, in ms (pcap, any link type).
outage_ms() {
    python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
e = "<" if d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
nano = d[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
off, ts = 24, []
while off + 16 <= len(d):
    s, u, incl, _ = struct.unpack(e + "IIII", d[off:off + 16])
    ts.append(s + u / (1e9 if nano else 1e6))
    off += 16 + incl
gaps = [b - a for a, b in zip(ts, ts[1:])]
print(round(max(gaps) * 1000, 1) if gaps else -1)
PY
}

rst_on_wire() { # RST segments captured on the client's interface
    tcpdump -r "$1" -n 2>/dev/null | wc -l
}

# ---------------------------------------------------------------- checkpointing on
export LZ_CHECKPOINT=true
lz_config "" "$POLICY"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
run_traffic on

streams=$(cat "$LZ_WORK/on.streams.json")
ok=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$streams")
[ "$ok" = "$CONNS" ] || { cat "$LZ_WORK/on.streams.err"; tail -30 "$LZ_WORK/dataplane.log"; lz_fail "checkpointing on: $ok of $CONNS streams verified: $streams"; }
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
rst=$(rst_on_wire "$LZ_WORK/on.rst.pcap"); kresets=$(cat "$LZ_WORK/on.resets")
[ "$rst" = 0 ] && [ "$kresets" = 0 ] || lz_fail "checkpointing on: $rst RST segment(s) on the client's wire, $kresets reset(s) counted by the kernels"
outage=$(outage_ms "$LZ_WORK/on.fwd.pcap")
ping_loss=$(grep -o '[0-9]* received' "$LZ_WORK/on.ping.txt" | head -1)
restored=$(grep -o 'restore done.*' "$LZ_WORK/dataplane.log" | tail -1)
lz_log "on: $CONNS/$CONNS streams verified ($((RATE * SECS)) B each), FTP sha256 ok, iperf3 $(cat "$LZ_WORK/on.iperf3.bytes") B, 0 RST"
lz_log "on: outage on the server tap ${outage} ms; udp $udp; ping $(grep -o '[0-9]* packets transmitted, [0-9]* received' "$LZ_WORK/on.ping.txt"); $restored"
echo "$outage" >"$LZ_WORK/outage_ms"

# -------------------------------------------- checkpointd killed and restarted
lz_log "checkpointd: SIGKILL and restart under traffic"
lz_in_client python3 "$STREAMS" tcp-client --server "$LZ_SERVER_IP" --port 7000 --conns 10 \
    --bytes $((RATE * 8)) --rate $RATE --stall 10 >"$LZ_WORK/ck.streams.json" &
ck_client=$!
sleep 2
lz_ckpt_kill
sleep 0.5
lz_ckpt_start
sleep 1.5
# The dataplane was never stopped; now kill it too: the restarted checkpointd
# must hold everything, including what was written while it was down.
lz_dp_kill
lz_dp_start
lz_join_taps
wait "$ck_client" || true
ck=$(cat "$LZ_WORK/ck.streams.json")
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["ok"] == j["conns"], j' "$ck" \
    || lz_fail "checkpointd restart, then a dataplane kill: streams broke: $ck"
lz_log "checkpointd restart under traffic, then a dataplane kill: 10/10 streams verified"
lz_dp_stop
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || lz_fail "checkpointd did not exit 0 on SIGTERM"; LZ_CKPT_PID=

# --------------------------------------------------------- the control: off
export LZ_CHECKPOINT=false
lz_config "" "$POLICY"
lz_dp_start
lz_join_taps
lz_wait_path
run_traffic off
streams_off=$(cat "$LZ_WORK/off.streams.json")
ok_off=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$streams_off")
[ "$ok_off" -lt "$CONNS" ] || lz_fail "control: with checkpointing off all $CONNS streams survived the kill; the test cannot tell"
got_off=$(sha256sum < "$LZ_WORK/off.ftp.bin" 2>/dev/null | cut -c1-64 || true)
lz_log "control (checkpoint off): $ok_off of $CONNS streams survived: $streams_off; FTP $([ "$got_off" = "$want" ] && echo intact || echo broken)"
lz_dp_stop
echo "PASS kill: $CONNS streams + FTP + iperf3 + UDP + ping survive SIGKILL of the dataplane (outage ${outage} ms, 0 RST); checkpointd restart safe; control without checkpointing breaks ($ok_off/$CONNS)"
