#!/usr/bin/env bash
# The main job, for now: two network namespaces with real kernels, the Lazarus
# dataplane bridging them over two net_tap ports, real traffic through it, and
# what happened. Sets the machine up first; cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO scripts/setup.sh
cargo build --release -p dataplane --locked 2>&1 | tail -1
[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=PATH "$0" "$@"

source tests/e2e/lib.sh
trap lz_cleanup EXIT
lz_log "namespaces $LZ_NS_C ($LZ_CLIENT_IP) and $LZ_NS_S ($LZ_SERVER_IP), joined only through the dataplane"
lz_ns_up
lz_config
lz_dp_start
lz_join_taps
lz_log "dataplane up (pid $LZ_DP_PID); log in $LZ_WORK/dataplane.log"
lz_wait_path
lz_log "ping:";  lz_in_client ping -c 5 -i 0.2 "$LZ_SERVER_IP" | tail -2
lz_in_server iperf3 -s -1 -B "$LZ_SERVER_IP" >/dev/null 2>&1 &
LZ_PIDS+=($!)
sleep 0.5
lz_log "iperf3, 5 s of TCP from client to server:"
lz_in_client iperf3 -c "$LZ_SERVER_IP" -t 5 | grep -E "sender|receiver"
lz_dp_stop
lz_log "dataplane stopped; what it saw:"
grep -E " summary elapsed=| worker summary " "$LZ_WORK/dataplane.log" | sed 's/^.*INFO //'
