#!/usr/bin/env bash
# The main job: Lazarus shown live. Two network namespaces with real kernels,
# checkpointd and the dataplane (a stateful firewall) between them, 50 TCP
# streams whose every byte is verified, an active-mode FTP download, iperf3, a
# UDP flow and a ping running through it; then the process running the
# packet code (the active worker process of the supervised dataplane,
# docs/RESTART.md) is killed with SIGKILL, the standby takes over, and a
# report says what survived and how long the wire went silent. Then the
# whole box dies: checkpointd has been copying every connection to a
# redis-server in a namespace of its own (another device), a standby
# appliance follows that copy; the first appliance's processes are killed
# and its segments deleted, the standby takes the wire and every connection
# (docs/CHECKPOINT.md), and a second report says what survived. Then the
# server behind the firewall dies: redis-server, a [[protected]] service
# (docs/PROTECT.md), is SIGKILLed and restarted under 10 counting sessions,
# and a third report says whether every session carried on. Sets the
# machine up first (packages, hugepages, build); cleans up after itself.
#
#   sudo scripts/demo.sh            (DEMO_SECS=20 for a longer run;
#                                    LZ_SUPERVISE=0 for one process restarted whole)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --locked 2>&1 | tail -1
cargo build --release --locked -q -p lazarus-core --example protect_bridge
[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=PATH,DEMO_SECS,LZ_SUPERVISE "$0" "$@"

source tests/e2e/lib.sh
trap 'kill "${PROGRESS_PID:-}" 2>/dev/null || true; lz_cleanup' EXIT
LZ_SECS=${DEMO_SECS:-15}
LZ_KILL_AT=$(( LZ_SECS / 3 ))
LZ_CONNS=50

lz_log "namespaces $LZ_NS_C ($LZ_CLIENT_IP, zone inside) and $LZ_NS_S ($LZ_SERVER_IP, zone outside), joined only through the dataplane"
lz_ns_up
lz_kill_servers
export LZ_CHECKPOINT=true
lz_redis_up
lz_log "redis-server up in namespace $LZ_NS_R ($LZ_REDIS_IP, ACL user lazarus): the remote store"
lz_pair_start "$(lz_remote_toml active A)" "$(lz_remote_toml standby B)"
lz_log "appliance A: checkpointd (pid $LZ_CKPT_PID) copying every connection to Redis, segments in $LZ_CKPT_DIR"
lz_log "appliance B: a standby (checkpointd pid $LZ_B_CKPT_PID following Redis into its mirror; dataplane pid $LZ_B_DP_PID, ports out of the bridges)"
lz_log "dataplane up (pid $LZ_DP_PID$([ "$LZ_SUPERVISE" = 1 ] && echo ", the port owner; active worker process $(lz_active_worker)")): policy drops new connections from the server side, strict TCP window tracking"

store_conns() { lz_ckpt_ask '{"cmd":"status"}' 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["conns"])' 2>/dev/null || echo "?"; }
lz_before_kill() {
    store_conns >"$LZ_WORK/before_kill"
    # What an operator sees (docs/TELEMETRY.md): checkpointd's copy of the
    # connections, decoded the way conntrack -L prints them.
    lz_ctl conns >"$LZ_WORK/ctl.conns.txt" 2>&1 || true
    lz_log "lazarusctl conns, just before the kill ($(grep -c . "$LZ_WORK/ctl.conns.txt") lines; three of them):"
    grep -E 'dport=(21|7000) ' "$LZ_WORK/ctl.conns.txt" | head -3 | sed 's/^/    /' || true
}

# The progress line: time, whether the dataplane runs, what checkpointd holds,
# and the packets the dataplane forwarded so far.
progress() {
    local t0; t0=$(date +%s)
    while sleep 1; do
        local up=down rx=
        [ -n "$(pgrep -f "lazarus-dataplane.*lz$LZ_ID" | head -1)" ] && up=up
        rx=$(grep -o ' stats elapsed=[^ ]* rx=[0-9]*' "$LZ_WORK/dataplane.log" 2>/dev/null | tail -1 | grep -o 'rx=[0-9]*' || true)
        printf '  [%3ss] dataplane %-4s | checkpointd store: %s connections | last stats: %s\n' "$(( $(date +%s) - t0 ))" "$up" "$(store_conns)" "${rx:-rx=0}"
    done
}
lz_log "traffic for ${LZ_SECS}s: $LZ_CONNS verified TCP streams, active FTP, iperf3 -P 4, UDP, ping; SIGKILL at ${LZ_KILL_AT}s"
progress &
PROGRESS_PID=$!
lz_kill_traffic demo
kill "$PROGRESS_PID" 2>/dev/null || true; wait "$PROGRESS_PID" 2>/dev/null || true; PROGRESS_PID=

W=$LZ_WORK
ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$W/demo.streams.json")
ftp_ok=no; [ "$(sha256sum < "$W/demo.ftp.bin" | cut -c1-64)" = "$LZ_FTP_SHA" ] && ftp_ok=yes
iperf=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$W/demo.iperf3.json" 2>/dev/null || echo 0)
verified=$(( ok * LZ_RATE * LZ_SECS ))
[ "$ftp_ok" = yes ] && verified=$(( verified + $(stat -c %s "$W/ftp/file.bin") ))
read -r rst rst_late rst_aborts <"$W/demo.rst"; kres=$(cat "$W/demo.resets")
outage=$(lz_outage_ms "$W/demo.fwd.pcap" "$W/demo.times")
blackout=$(lz_blackout_ms "$W/demo.fwd.pcap" "$W/demo.times")
carrier=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("never down (%d samples)" % j["samples"] if not any(j["down"].values()) else "DOWN in %s of %d samples" % (j["down"], j["samples"]))' "$W/demo.carrier.json")
goal() { python3 -c 'import sys; print("ok" if 0 <= float(sys.argv[1]) <= float(sys.argv[2]) else "MISSED")' "$1" "$2"; }
restored=$(grep -o 'restore done connections=[0-9]*' "$W/dataplane.log" | tail -1 | grep -o '[0-9]*$')
restore_ms=$(grep -o 'restore done connections=[0-9]* ms=[0-9.]*' "$W/dataplane.log" | tail -1 | grep -o '[0-9.]*$')
udp=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%d/%d replies" % (j["received"], j["sent"]))' "$W/demo.udp.json")
ping=$(grep -o '[0-9]* packets transmitted, [0-9]* received' "$W/demo.ping.txt" || echo "?")

cat <<REPORT

  Lazarus: $([ "$LZ_SUPERVISE" = 1 ] && echo "the active worker process was killed with SIGKILL under traffic" || echo "the dataplane was killed with SIGKILL under traffic and restarted")
  ---------------------------------------------------------------------------
  connections in checkpointd's store before the kill  $(cat "$W/before_kill")
  connections the new dataplane restored              ${restored:-0} (in ${restore_ms:-?} ms)
  verified TCP streams that completed                 $ok / $LZ_CONNS
  active-mode FTP download (sha256 checked)           $ftp_ok
  bytes verified end to end                           $verified
  iperf3 bytes received                               $iperf
  UDP echo flow                                       $udp
  ping                                                $ping
  TCP resets on live connections (wire / kernels)     $rst / $kres
    not counted: after both FINs                      $rst_late
    not counted: closed with every byte in (iperf3)   $rst_aborts
  blackout on the wire (server tap, capture)          ${blackout} ms   (goal <= 20 ms: $(goal "$blackout" 20))
  longest silence on the server-side tap              ${outage} ms   (goal <= 250 ms: $(goal "$outage" 250))
  taps' carrier                                       $carrier

REPORT
act1=fail
if [ "$ok" = "$LZ_CONNS" ] && [ "$ftp_ok" = yes ] && [ "$rst" = 0 ] && [ "$kres" = 0 ]; then
    act1=ok
    lz_log "every connection survived the death of the $([ "$LZ_SUPERVISE" = 1 ] && echo "active worker process" || echo dataplane)"
else
    lz_log "some connections did not survive: see $W (kept with LZ_KEEP_WORK=1)"
fi

# ------------------------------------------------------- the whole box dies
lz_log "act 2, the whole box: traffic for ${LZ_SECS}s through appliance A; at ${LZ_KILL_AT}s A's dataplane and checkpointd are SIGKILLed and its segments deleted; B takes the wire (the bridges, as VRRP would) and runs lazarusctl takeover"
# The outage is measured where the server's traffic leaves the bridge,
# whichever appliance forwards it.
LZ_FWD_IF=${LZ_VE_S}p LZ_FWD_DIR=out LZ_DISRUPT=lz_failover lz_kill_traffic box
ok2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$W/box.streams.json")
ftp2=no; [ "$(sha256sum < "$W/box.ftp.bin" | cut -c1-64)" = "$LZ_FTP_SHA" ] && ftp2=yes
read -r rst2 _ _ <"$W/box.rst"; kres2=$(cat "$W/box.resets")
outage2=$(lz_outage_ms "$W/box.fwd.pcap" "$W/box.times")
udp2=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%d/%d replies" % (j["received"], j["sent"]))' "$W/box.udp.json")
restored2=$(grep -o 'restore done connections=[0-9]*' "$LZ_B_WORK/dataplane.log" | tail -1 | grep -o '[0-9]*$')
lag=$(lz_as_b lz_ckpt_ask '{"cmd":"status"}' | python3 -c 'import json,sys; r=json.load(sys.stdin)["remote"]; print("p50 %.1f ms, p99 %.1f ms" % (r["mirror_lag_p50_us"] / 1000, r["mirror_lag_p99_us"] / 1000))' 2>/dev/null || echo "?")
lz_as_b lz_dp_stop

cat <<REPORT

  Lazarus: appliance A's whole box died under traffic; standby B took over
  ---------------------------------------------------------------------------
  lazarusctl takeover on B                            $(cat "$W/takeover.txt")
  connections B's dataplane restored from its mirror  ${restored2:-0}
  replication lag, A's drain to B's mirror            $lag
  verified TCP streams that completed                 $ok2 / $LZ_CONNS
  active-mode FTP download (sha256 checked)           $ftp2
  UDP echo flow                                       $udp2
  TCP resets on live connections (wire / kernels)     $rst2 / $kres2
  longest silence toward the server                   ${outage2} ms

REPORT
act2=fail
if [ "$act1" = ok ] && [ "$ok2" = "$LZ_CONNS" ] && [ "$ftp2" = yes ] && [ "$rst2" = 0 ] && [ "$kres2" = 0 ]; then
    act2=ok
    lz_log "every connection survived the death of the active worker process, then the death of the whole box"
else
    lz_log "some connections did not survive: see $W (kept with LZ_KEEP_WORK=1)"
fi

# ------------------------------------------------ the server behind dies
SESSIONS=10
lz_log "act 3, the server: redis-server (persistence off) in $LZ_NS_S is a [[protected]] service of a new dataplane; $SESSIONS sessions count with SET, INCR and GET for 8 s; at 2 s redis-server is SIGKILLed and restarted, and the hook (lazarusctl protect down / up, as systemd's ExecStopPost= / ExecStartPost= would say it) tells the firewall"
ip link set "$LZ_B_TAP_C" nomaster 2>/dev/null || true; ip link set "$LZ_B_TAP_S" nomaster 2>/dev/null || true
export LZ_CHECKPOINT=false LZ_CLIENT_ZONE= LZ_SERVER_ZONE=
lz_config "" "$(printf '[[protected]]\naddr = "%s"\nport = 6379\nhold_ms = 2000' "$LZ_SERVER_IP")"
lz_dp_start
lz_join_taps
lz_wait_path
APP=target/release/examples/protect_bridge
lz_protect_serve redis "$APP" demo.0
CLIENT_PIDS=()
for i in $(seq 1 $SESSIONS); do
    ip netns exec "$LZ_NS_C" "$APP" redis-client "$LZ_REDIS" 8 >"$W/act3.client$i.out" 2>&1 &
    CLIENT_PIDS+=($!); LZ_PIDS+=($!)
done
sleep 2
kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
t0=$(date +%s%N)
lz_ctl protect down "$LZ_REDIS" >/dev/null
lz_protect_serve redis "$APP" demo.1
back_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
lz_ctl protect up "$LZ_REDIS" >/dev/null
lz_wait_clients act3
ok3=$WAIT_OK incr=$WAIT_LINES longest=$WAIT_LONGEST_US err3=$WAIT_ERROR
recovered=$(lz_stat_sum protect_spliced)
kill -KILL "$SERVER_PID" 2>/dev/null || true
lz_dp_stop

cat <<REPORT

  Lazarus: the server behind the firewall was SIGKILLed and restarted
  ---------------------------------------------------------------------------
  redis sessions that carried on, every INCR checked   $ok3 / $SESSIONS${err3:+ ($err3)}
  INCRs answered, each the next number                 $incr
  sessions carried onto the restarted redis-server     $recovered
  redis-server back after                              ${back_ms} ms
  longest wait a session saw for an answer             $((longest / 1000)) ms

REPORT
if [ "$act2" = ok ] && [ "$ok3" = "$SESSIONS" ]; then
    lz_log "every connection survived the death of the active worker process, the death of the whole box, and the death of the server behind the firewall"
else
    lz_log "some connections did not survive: see $W (kept with LZ_KEEP_WORK=1)"; exit 1
fi
