#!/usr/bin/env bash
# The main job: Lazarus shown live. Two network namespaces with real kernels,
# checkpointd and the dataplane (a stateful firewall) between them, 50 TCP
# streams whose every byte is verified, an active-mode FTP download, iperf3, a
# UDP flow and a ping running through it; then the process running the
# packet code (the active worker process of the supervised dataplane,
# docs/RESTART.md) is killed with SIGKILL, the standby takes over, and a
# report says what survived and how long the wire went silent. Sets the
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
lz_config "" "$LZ_ZONE_POLICY"
lz_ckpt_start
lz_log "checkpointd up (pid $LZ_CKPT_PID), segments in $LZ_CKPT_DIR"
lz_dp_start
lz_join_taps
lz_wait_path
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
lz_dp_stop

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
if [ "$ok" = "$LZ_CONNS" ] && [ "$ftp_ok" = yes ] && [ "$rst" = 0 ] && [ "$kres" = 0 ]; then
    lz_log "every connection survived the death of the $([ "$LZ_SUPERVISE" = 1 ] && echo "active worker process" || echo dataplane)"
else
    lz_log "some connections did not survive: see $W (kept with LZ_KEEP_WORK=1)"; exit 1
fi
