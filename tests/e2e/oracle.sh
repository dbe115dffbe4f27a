#!/usr/bin/env bash
# Linux as the oracle (docs/ORACLE.md): one corpus of crafted frames through
# Lazarus on net_pcap and through Linux's conntrack in a router namespace
# (nftables, nf_conntrack_tcp_loose 0, new connections from the client side
# only), the verdicts compared datagram by datagram. Fails on a difference
# that docs/ORACLE.md does not list as a deliberate choice.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ORACLE=$ROOT/tests/e2e/oracle.py
BIN=${LZ_BIN:-$ROOT/target/release/lazarus-dataplane}
ID=${LZ_ID:-$(( $$ % 100000 ))}
NS=lzo$ID; LA=lzoa$ID; LB=lzob$ID
WORK=$(mktemp -d /tmp/lazarus-oracle.XXXXXX)
DP=

cleanup() {
    local rc=$?
    set +e
    [ -z "$DP" ] || { kill -KILL "$DP"; wait "$DP"; } 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    ip link del "$LA" 2>/dev/null
    ip link del "$LB" 2>/dev/null
    rm -rf "/var/run/dpdk/lzo$ID"
    [ -n "${LZ_KEEP_WORK:-}" ] || rm -rf "$WORK"
    return $rc
}
trap cleanup EXIT
fail() { echo "FAIL oracle: $*" >&2; exit 1; }

[ -x "$BIN" ] || fail "build first: cargo build --release"
command -v nft >/dev/null || fail "nft missing: run scripts/setup.sh"
python3 "$ORACLE" corpus "$WORK"
frames=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["frames"]))' "$WORK/meta.json")

# ---- Lazarus: every frame into port a in corpus order (the tracker tells
# directions by address); what leaves port b was forwarded. New connections
# from the server side are refused by a rule on their source address.
python3 -c "import sys; sys.path.insert(0, '$ROOT/scripts/lib'); import frames; frames.write_pcap('$WORK/empty.pcap', [])"
cat >"$WORK/dataplane.toml" <<TOML
[dataplane]
stats_interval_ms = 200
mbufs = 8191

[[port]]
name = "a"
device = "net_pcap0"
zone = "lan"

[[port]]
name = "b"
device = "net_pcap1"
zone = "lan"

[[bridge]]
ports = ["a", "b"]

[[worker]]
lcore = 1
rx = ["a:0", "b:0"]

[checkpoint]
enabled = false

[[zone]]
name = "lan"
default = "accept"

[[rule]]
name = "no-new-from-the-server-v4"
src = "10.99.0.2/32"
action = "drop"

[[rule]]
name = "no-new-from-the-server-v6"
src = "fd99::2/128"
action = "drop"
TOML
"$BIN" -l 0,1 --no-huge -m 256 --no-pci --file-prefix "lzo$ID" \
    --vdev "net_pcap0,rx_pcap=$WORK/corpus.pcap,tx_pcap=$WORK/out_a.pcap" \
    --vdev "net_pcap1,rx_pcap=$WORK/empty.pcap,tx_pcap=$WORK/out_b.pcap" \
    -- --config "$WORK/dataplane.toml" >"$WORK/dataplane.log" 2>&1 &
DP=$!
for _ in $(seq 1 300); do
    rx=$(grep -o ' stats .* rx=[0-9]*' "$WORK/dataplane.log" | tail -1 | grep -o 'rx=[0-9]*' | head -1 | cut -d= -f2 || true)
    [ "${rx:-0}" -ge "$frames" ] && break
    kill -0 "$DP" 2>/dev/null || { cat "$WORK/dataplane.log"; fail "the dataplane exited"; }
    sleep 0.1
done
[ "${rx:-0}" -ge "$frames" ] || { tail -5 "$WORK/dataplane.log"; fail "the dataplane received ${rx:-0} of $frames frames"; }
kill -TERM "$DP"; wait "$DP" || fail "the dataplane did not stop cleanly"; DP=
python3 "$ORACLE" lazarus "$WORK" "$WORK/out_b.pcap"

# ---- Linux: a router namespace, its client side on link A, its server side
# on link B, the hosts reached through permanent neighbour entries.
ip netns add "$NS"
ip link add "$LA" type veth peer name ra netns "$NS"
ip link add "$LB" type veth peer name rb netns "$NS"
for l in "$LA" "$LB"; do
    sysctl -qw "net.ipv6.conf.$l.disable_ipv6=1" || true
    ethtool -K "$l" tx off >/dev/null 2>&1 || true
    ip link set "$l" up
done
ip netns exec "$NS" sh -ec '
    sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    for l in ra rb; do
        sysctl -qw net.ipv4.conf.$l.rp_filter=0 net.ipv6.conf.$l.accept_dad=0
        ip link set $l up
    done
    ip route add 10.99.0.1/32 dev ra; ip route add 10.99.0.2/32 dev rb
    ip -6 route add fd99::1/128 dev ra; ip -6 route add fd99::2/128 dev rb
    ip neigh add 10.99.0.1 lladdr 02:00:00:00:00:01 dev ra nud permanent
    ip neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev rb nud permanent
    ip -6 neigh add fd99::1 lladdr 02:00:00:00:00:01 dev ra nud permanent
    ip -6 neigh add fd99::2 lladdr 02:00:00:00:00:02 dev rb nud permanent
    nft -f - <<NFT
table inet lzo {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ct state invalid drop
        ip saddr 10.99.0.2 ct state new drop
        ip6 saddr fd99::2 ct state new drop
        ct state new accept
    }
}
NFT
    sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0'
mac_a=$(ip netns exec "$NS" cat /sys/class/net/ra/address)
mac_b=$(ip netns exec "$NS" cat /sys/class/net/rb/address)
sleep 0.5
python3 "$ORACLE" linux "$WORK" "$LA" "$LB" "$mac_a" "$mac_b"

python3 "$ORACLE" compare "$WORK" | tee "$WORK/compare.txt"
echo "PASS oracle: $(tail -1 "$WORK/compare.txt")"
