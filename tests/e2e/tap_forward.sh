#!/usr/bin/env bash
# End to end through net_tap with real kernels: ping and a 5-second iperf3 TCP
# transfer pass through the dataplane bridging two namespaces. Control first:
# without the dataplane the namespaces cannot reach each other.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

[ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
lz_ns_up
lz_config

# Control: the only path between the namespaces is the dataplane; before it
# runs, nothing gets through (the taps do not exist yet).
if lz_in_client ping -c 2 -W 1 -q "$LZ_SERVER_IP" >/dev/null 2>&1; then
    lz_fail "control: ping passed without the dataplane; the test topology leaks"
fi
lz_log "control: no path without the dataplane"

lz_dp_start
lz_join_taps
lz_wait_path

out=$(lz_in_client ping -c 10 -i 0.2 -W 2 "$LZ_SERVER_IP" 2>&1) || true
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
[ "${received:-0}" -ge 9 ] || { echo "$out"; lz_fail "ping through the dataplane: ${received:-0}/10 replies"; }
lz_log "ping: $received/10 replies"

lz_in_server iperf3 -s -1 -B "$LZ_SERVER_IP" >"$LZ_WORK/iperf3-server.log" 2>&1 &
LZ_PIDS+=($!)
sleep 0.5
lz_in_client iperf3 -c "$LZ_SERVER_IP" -t 5 -J >"$LZ_WORK/iperf3.json" || { cat "$LZ_WORK/iperf3.json"; lz_fail "iperf3 failed"; }
read -r bytes bps retrans < <(python3 -c '
import json,sys; d=json.load(open(sys.argv[1]))["end"]
print(d["sum_received"]["bytes"], int(d["sum_received"]["bits_per_second"]), d["sum_sent"].get("retransmits",0))' "$LZ_WORK/iperf3.json")
[ "$bytes" -gt 1000000 ] || lz_fail "iperf3 moved only $bytes bytes"
lz_log "iperf3: $bytes bytes in 5 s, $((bps/1000000)) Mbit/s, $retrans retransmits"

lz_dp_stop
summary=$(grep " summary elapsed=" "$LZ_WORK/dataplane.log" | tail -1)
fwd=$(sed -n 's/.* tx=\([0-9]*\) .*/\1/p' <<<"${summary%%|*}")
[ "${fwd:-0}" -gt 1000 ] || lz_fail "dataplane summary shows ${fwd:-0} packets forwarded: $summary"
lz_log "dataplane forwarded $fwd packets and stopped cleanly"
echo "PASS tap_forward: ping $received/10, iperf3 $((bps/1000000)) Mbit/s, $fwd packets through the dataplane"
