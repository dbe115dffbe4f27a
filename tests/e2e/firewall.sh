#!/usr/bin/env bash
# End to end through net_tap with real kernels, the dataplane as a stateful
# firewall: the server side's zone drops new connections by default.
#  * ping, HTTP (curl) and iperf3 from client to server pass;
#  * connections opened from the server side are dropped;
#  * FTP between curl and vsftpd passes in passive (EPSV, PASV) and active
#    (EPRT, PORT) mode; active mode passes only because of the ftp module:
#    the control run with `ftp = false` shows the same transfer failing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

[ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
command -v vsftpd >/dev/null || lz_fail "vsftpd missing: run scripts/setup.sh"
lz_ns_up
export LZ_CLIENT_ZONE=inside LZ_SERVER_ZONE=outside
policy() {
    printf '[conntrack]\nftp = %s\n%s' "$1" "$LZ_ZONE_POLICY"
}

# Servers in the server namespace: HTTP, iperf3, FTP.
mkdir -p "$LZ_WORK/www" "$LZ_WORK/ftp" /var/run/vsftpd/empty
head -c 3000000 /dev/urandom > "$LZ_WORK/ftp/file.bin"
cp "$LZ_WORK/ftp/file.bin" "$LZ_WORK/www/"
chmod 755 "$LZ_WORK" "$LZ_WORK/ftp"; chmod 644 "$LZ_WORK/ftp/file.bin"
lz_vsftpd pasv_min_port=30000 pasv_max_port=30100 connect_timeout=5 data_connection_timeout=10
lz_in_server python3 -m http.server 8080 --bind "$LZ_SERVER_IP" --directory "$LZ_WORK/www" >/dev/null 2>&1 &
LZ_PIDS+=($!)
lz_in_client python3 -m http.server 8081 --bind "$LZ_CLIENT_IP" --directory "$LZ_WORK/www" >/dev/null 2>&1 &
LZ_PIDS+=($!)
want=$(sha256sum < "$LZ_WORK/ftp/file.bin" | cut -c1-64)

ftp_get() { # mode-flags... ; prints the sha256 of what arrived, or "failed"
    local out="$LZ_WORK/got.bin"; rm -f "$out"
    if lz_in_client curl -s --max-time 20 "$@" -o "$out" "ftp://$LZ_SERVER_IP/file.bin"; then
        sha256sum < "$out" | cut -c1-64
    else
        echo failed
    fi
}

# --- with the ftp module
lz_config "" "$(policy true)"
lz_dp_start
lz_join_taps
lz_wait_path

out=$(lz_in_client ping -c 5 -i 0.2 -W 2 "$LZ_SERVER_IP" 2>&1) || true
grep -q " 5 received" <<<"$out" || { echo "$out"; lz_fail "ping client -> server"; }
if lz_in_server ping -c 2 -W 1 -q "$LZ_CLIENT_IP" >/dev/null 2>&1; then lz_fail "ping server -> client passed; policy should drop it"; fi
lz_log "ping: client -> server passes, server -> client dropped"

got=$(lz_in_client curl -s --max-time 20 "http://$LZ_SERVER_IP:8080/file.bin" | sha256sum | cut -c1-64)
[ "$got" = "$want" ] || lz_fail "HTTP download through the firewall is wrong or failed"
if lz_in_server curl -s --max-time 4 -o /dev/null "http://$LZ_CLIENT_IP:8081/file.bin"; then lz_fail "HTTP from the server side passed; policy should drop it"; fi
lz_log "HTTP: client -> server passes (3 MB, sha256 ok), server -> client dropped"

# Forged checksums from a real kernel's interface: two SYNs with a wrong TCP
# checksum. net_tap checks RX checksums itself (the dataplane turns the
# offload on), so this is the NIC branch; the dataplane must drop and count
# both. (A wrong IPv4 header checksum never reaches the tap here: with
# br_netfilter the kernel's bridge drops it first. The net_pcap test covers
# it, in software.)
grep -q "rx_checksum_offload=true" "$LZ_WORK/dataplane.log" || lz_fail "net_tap ports run without RX checksum offload"
server_mac=$(lz_in_server cat "/sys/class/net/$LZ_VE_S/address")
client_mac=$(lz_in_client cat "/sys/class/net/$LZ_VE_C/address")
lz_in_client python3 - "$LZ_ROOT/scripts/lib" "$LZ_VE_C" "$client_mac" "$server_mac" "$LZ_CLIENT_IP" "$LZ_SERVER_IP" <<'PY'
import socket, sys
sys.path.insert(0, sys.argv[1])
import frames as F
ifname, cmac, smac = sys.argv[2:5]
cip, sip = (bytes(map(int, a.split("."))) for a in sys.argv[5:7])
mac = lambda m: bytes.fromhex(m.replace(":", ""))
def syn(sport):
    return bytearray(F.ipv4(cip, sip, 6, F.tcp(sport, 8080, 0x02, seq=1000)))
bad_l4 = [syn(41001), syn(41002)]
for p in bad_l4:
    p[20 + 16] ^= 0x5a  # the TCP checksum
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for p in bad_l4:
    s.send(F.pad(F.eth(bytes(p), dst=mac(smac), src=mac(cmac))))
PY

lz_in_server iperf3 -s -1 -B "$LZ_SERVER_IP" >/dev/null 2>&1 &
LZ_PIDS+=($!)
sleep 0.5
lz_in_client iperf3 -c "$LZ_SERVER_IP" -t 5 -J >"$LZ_WORK/iperf3.json" || { cat "$LZ_WORK/iperf3.json"; lz_fail "iperf3 through the firewall failed"; }
mbps=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$LZ_WORK/iperf3.json")
lz_log "iperf3: $mbps Mbit/s through the firewall"

for mode in "passive EPSV:" "passive PASV:--disable-epsv" "active EPRT:-P -" "active PORT:-P - --disable-eprt"; do
    name=${mode%%:*}; flags=${mode#*:}
    # shellcheck disable=SC2086
    got=$(ftp_get $flags)
    [ "$got" = "$want" ] || lz_fail "FTP $name: transfer failed or wrong bytes ($got)"
    lz_log "FTP $name: 3 MB, sha256 ok"
done
lz_dp_stop
summary=$(grep "conntrack summary" "$LZ_WORK/dataplane.log" | tail -1)
# Whole tokens: "related=[1-9]" alone also matches drop.icmp_unrelated=1.
grep -qE "(^| )related=[1-9][0-9]*( |$)" <<<"$summary" || lz_fail "no related connection counted: $summary"
grep -qE "(^| )drop\.policy=[1-9][0-9]*( |$)" <<<"$summary" || lz_fail "no policy drop counted: $summary"
lz_log "${summary#*INFO }"
grep -qE "(^| )parse\.bad_l4_checksum=2( |$)" <<<"$summary" || lz_fail "forged TCP checksums not dropped and counted: $summary"
lz_log "forged checksums: 2 TCP segments dropped and counted on net_tap (RX offload)"

# --- the control: the same active transfer with the ftp module off must fail
lz_config "" "$(policy false)"
lz_dp_start
lz_join_taps
lz_wait_path
got=$(ftp_get -P -)
[ "$got" = failed ] || lz_fail "control: active FTP passed with the ftp module off ($got); the module is not what makes it work"
got=$(ftp_get)
[ "$got" = "$want" ] || lz_fail "control: passive FTP should still pass without the module (client opens the data connection)"
lz_dp_stop
lz_log "control: with ftp = false, active FTP fails and passive still passes"
echo "PASS firewall: policy, HTTP, iperf3 ${mbps} Mbit/s, FTP active+passive; control without the ftp module fails"
