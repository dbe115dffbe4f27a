#!/usr/bin/env bash
# What replicating connection state costs on the network: Lazarus's copy to
# Redis beside conntrackd's FTFW sync, for the same churn in the same run
# (docs/BENCHMARKS.md#remote-copy-and-standby-issue-20).
#
# One churn (benches/churn.py: short TCP lives at --rate a second, real
# Linux clients and servers in namespaces) goes first through Lazarus
#   ns client ─ tap ═ dataplane ═ tap ─ ns server;  checkpointd ─ veth ─ ns redis
# then through a Linux router whose conntrack is synchronised by conntrackd
#   ns kc ─ veth ─ ns ka (nftables, conntrackd FTFW) ─ veth ─ ns ks
#                      └─ veth (sync link) ─ ns kb (conntrackd FTFW)
# with conntrackd's example filter (TCP states ESTABLISHED, CLOSED,
# TIME_WAIT, CLOSE_WAIT replicated). Reported for each: bytes the sender put
# on its link to the replica (L4 payload: TCP to Redis, UDP to the peer,
# and with every header), per connection life and per second at 1 000
# lives a second, and what the replica received.
#
# usage: scripts/bench-replication.sh [--rate 1000] [--seconds 10] [--markdown]
# Root, hugepages, a release build; installs conntrackd through scripts/setup.sh.
set -euo pipefail
RATE=1000; SECS=10; MARKDOWN=0
while [ $# -gt 0 ]; do
    case $1 in
        --rate) RATE=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --markdown) MARKDOWN=1 ;;
        *) echo "usage: $0 [--rate N] [--seconds S] [--markdown]" >&2; exit 2 ;;
    esac
    shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAZARUS_BENCH_PEERS=1 "$ROOT/scripts/setup.sh" >/dev/null || { echo "bench-replication: setup failed" >&2; exit 1; }
# shellcheck source=../tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
CHURN=$ROOT/benches/churn.py
K=lzk$LZ_ID
kcleanup() {
    local rc=$?
    # Reaped with stderr closed, so that bash's "Killed" notices stay out.
    {
        for ns in ${K}c ${K}a ${K}s ${K}b; do
            ip netns pids "$ns" | xargs -r kill -KILL || true
        done
        for p in "${LZ_PIDS[@]}"; do kill -KILL "$p" || true; wait "$p" || true; done
        LZ_PIDS=()
        for ns in ${K}c ${K}a ${K}s ${K}b; do ip netns del "$ns" || true; done
    } 2>/dev/null
    lz_cleanup
    return $rc
}
trap kcleanup EXIT
[ -x "$LZ_BIN" ] && [ -x "$LZ_CKPT_BIN" ] || lz_fail "build first (cargo build --release)"

# Until the churn server in namespace $1 answers at $2:7100.
wait_port() {
    for _ in $(seq 1 50); do
        ip netns exec "$1" bash -c "echo >/dev/tcp/$2/7100" 2>/dev/null && return 0
        sleep 0.1
    done
    lz_fail "the churn server at $2:7100 does not answer"
}
# tx bytes and packets of a link ($1 namespace or "", $2 device).
# "tx_bytes tx_packets rx_bytes" of link $2 in namespace $1 ("" the root one).
link_counts() { local n=(); [ -z "$1" ] || n=(-n "$1"); ip "${n[@]}" -s -j link show "$2" | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["tx"]["bytes"], s["tx"]["packets"], s["rx"]["bytes"])'; }
# A row's figures: $1 the churn's JSON, $2 and $3 link_counts before and
# after, $4 the header bytes a frame carries beyond its L4 payload.
figures() { python3 - "$@" <<'PY'
import json, sys
churn = json.load(open(sys.argv[1]))
b0, p0, r0 = map(int, sys.argv[2].split()); b1, p1, r1 = map(int, sys.argv[3].split())
hdr = int(sys.argv[4])
lives = churn["completed"]
wire, pkts = b1 - b0, p1 - p0
payload = wire - hdr * pkts
print(json.dumps({"lives": lives, "failed": churn["failed"], "seconds": churn["seconds"],
                  "frames": pkts, "wire": wire, "payload": payload, "back": r1 - r0,
                  "payload_per_life": payload / max(lives, 1), "wire_per_life": wire / max(lives, 1)}))
PY
}

# ------------------------------------------------------------- Lazarus
lz_ns_up
lz_redis_up
export LZ_CHECKPOINT=true LZ_CLIENT_ZONE=inside LZ_SERVER_ZONE=outside
# TIME_WAIT held 1 s on both (Linux's 120 s would outlast the run): each
# life's end, its expiry included, falls inside the measurement.
lz_config "" "$LZ_ZONE_POLICY
[conntrack.timeouts]
tcp_time_wait = 1
tcp_close = 1
$(lz_remote_toml)"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
lz_in_server python3 "$CHURN" server --port 7100 >"$LZ_WORK/churn-server.log" 2>&1 &
LZ_PIDS+=($!)
wait_port "$LZ_NS_C" "$LZ_SERVER_IP"
# Segments as they go on the wire, not offloaded super-frames: the frame
# and header counts stay true.
ethtool -K "${LZ_VE_R}r" tso off gso off >/dev/null 2>&1 || true
sleep 1.5  # the probe's own connection ends before the count starts
lz_wait_remote 'r["up"] and r["pending"] == 0' || lz_fail "the remote copy is not up: $LZ_STATUS"
before=$(link_counts "" "${LZ_VE_R}r")
st0=$(lz_ckpt_ask '{"cmd":"status"}')
lz_in_client python3 "$CHURN" client --server "$LZ_SERVER_IP" --port 7100 --rate "$RATE" --seconds "$SECS" >"$LZ_WORK/lz.churn.json"
# Until every life has expired and its delete reached Redis.
lives=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$LZ_WORK/lz.churn.json")
gone=
for _ in $(seq 1 300); do
    python3 - "$st0" "$(lz_ckpt_ask '{"cmd":"status"}')" "$lives" <<'PY' && { gone=1; break; }
import json, sys
a, b = (json.loads(x)["remote"] for x in sys.argv[1:3])
sys.exit(0 if b["deletes_written"] - a["deletes_written"] >= int(sys.argv[3]) and b["pending"] == 0 else 1)
PY
    sleep 0.1
done
[ -n "$gone" ] || lz_fail "Lazarus: the lives' deletes did not all reach Redis within 30 s: $(lz_ckpt_ask '{"cmd":"status"}')"
after=$(link_counts "" "${LZ_VE_R}r")
st1=$(lz_ckpt_ask '{"cmd":"status"}')
# Ethernet 14, IPv4 20, TCP 32 (timestamps): what a frame to Redis adds.
lz=$(figures "$LZ_WORK/lz.churn.json" "$before" "$after" 66)
lz_extra=$(python3 - "$st0" "$st1" <<'PY'
import json, sys
a, b = (json.loads(x)["remote"] for x in sys.argv[1:3])
print(json.dumps({k: b[k] - a[k] for k in ("records_written", "deletes_written", "bytes_sent")}))
PY
)
lz_dp_stop
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=

# ------------------------------------------------------- conntrackd FTFW
for ns in c a s b; do ip netns add "${K}$ns"; ip -n "${K}$ns" link set lo up; done
pair() { # $1 ns, $2 dev, $3 addr, $4 ns, $5 dev, $6 addr
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
    ip -n "$1" addr add "$3" dev "$2"; ip -n "$1" link set "$2" up
    ip -n "$4" addr add "$6" dev "$5"; ip -n "$4" link set "$5" up
}
pair "${K}c" kc0 10.98.0.1/24 "${K}a" ka0 10.98.0.254/24
pair "${K}s" ks0 10.98.1.2/24 "${K}a" ka1 10.98.1.254/24
pair "${K}a" kay 10.98.2.1/24 "${K}b" kby 10.98.2.2/24
ip -n "${K}c" route add default via 10.98.0.254
ip -n "${K}s" route add default via 10.98.1.254
ip netns exec "${K}a" sysctl -qw net.ipv4.ip_forward=1
# The router's policy as Lazarus's zones: new connections from the client
# side only; conntrack tracks every forwarded packet.
ip netns exec "${K}a" nft -f - <<'NFT'
table inet fw {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "ka0" ct state new accept
    }
}
NFT
# After the rules: they load conntrack, whose sysctls these are.
ip netns exec "${K}a" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 net.netfilter.nf_conntrack_tcp_timeout_close=1
conf() { # $1 name, $2 own sync address, $3 peer's
    cat >"$LZ_WORK/conntrackd-$1.conf" <<CONF
Sync {
    Mode FTFW {
        ResendQueueSize 131072
    }
    UDP {
        IPv4_address $2
        IPv4_Destination_Address $3
        Port 3780
        Interface $([ "$1" = a ] && echo kay || echo kby)
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }
}
General {
    HashSize 32768
    HashLimit 131072
    LogFile $LZ_WORK/conntrackd-$1.log
    Syslog off
    LockFile $LZ_WORK/conntrackd-$1.lock
    UNIX {
        Path $LZ_WORK/conntrackd-$1.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {
        Protocol Accept {
            TCP
        }
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv4_address 10.98.2.1
            IPv4_address 10.98.2.2
        }
        State Accept {
            ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP
        }
    }
}
CONF
}
conf a 10.98.2.1 10.98.2.2
conf b 10.98.2.2 10.98.2.1
for n in a b; do
    ip netns exec "${K}$n" conntrackd -C "$LZ_WORK/conntrackd-$n.conf" >"$LZ_WORK/conntrackd-$n.out" 2>&1 &
    LZ_PIDS+=($!)
done
for _ in $(seq 1 50); do
    [ -S "$LZ_WORK/conntrackd-a.ctl" ] && [ -S "$LZ_WORK/conntrackd-b.ctl" ] && break
    sleep 0.1
done
[ -S "$LZ_WORK/conntrackd-a.ctl" ] || { cat "$LZ_WORK"/conntrackd-a.*; lz_fail "conntrackd did not start"; }
ip netns exec "${K}s" python3 "$CHURN" server --port 7100 >"$LZ_WORK/kchurn-server.log" 2>&1 &
LZ_PIDS+=($!)
wait_port "${K}c" 10.98.1.2
ip netns exec "${K}a" ethtool -K kay tso off gso off >/dev/null 2>&1 || true
sleep 1.5
before=$(link_counts "${K}a" kay)
ip netns exec "${K}c" python3 "$CHURN" client --server 10.98.1.2 --port 7100 --rate "$RATE" --seconds "$SECS" >"$LZ_WORK/ct.churn.json"
# Until every life has expired and its destroy event was sent.
churn_entries() { ip netns exec "${K}a" conntrack -L -p tcp --dport 7100 2>/dev/null | grep -c . || true; }
for _ in $(seq 1 300); do [ "$(churn_entries)" = 0 ] && break; sleep 0.1; done
[ "$(churn_entries)" = 0 ] || lz_fail "conntrack still holds $(churn_entries) of the lives after 30 s"
sleep 0.5
after=$(link_counts "${K}a" kay)
# Ethernet 14, IPv4 20, UDP 8.
ct=$(figures "$LZ_WORK/ct.churn.json" "$before" "$after" 42)
ct_b=$(ip netns exec "${K}b" conntrackd -C "$LZ_WORK/conntrackd-b.conf" -s network 2>&1 | tr -s ' \n' ' ' | head -c 400)

python3 - "$RATE" "$SECS" "$lz" "$lz_extra" "$ct" "$ct_b" "$MARKDOWN" <<'PY'
import json, sys
rate, secs = float(sys.argv[1]), sys.argv[2]
lz, lzx = json.loads(sys.argv[3]), json.loads(sys.argv[4])
ct, ct_b, md = json.loads(sys.argv[5]), sys.argv[6], sys.argv[7] == "1"
for name, r in (("lazarus", lz), ("conntrackd", ct)):
    assert r["lives"] > 0 and r["failed"] == 0, (name, r)
print(f"lazarus (to Redis): {lz['lives']} lives in {lz['seconds']} s; {lz['frames']} frames, {lz['payload']} B payload, "
      f"{lz['wire']} B on the wire; {lzx['records_written']} records, {lzx['deletes_written']} deletes, "
      f"{lzx['bytes_sent']} B of sealed records; {lz['back']} B back from Redis")
print(f"conntrackd FTFW (to its peer): {ct['lives']} lives in {ct['seconds']} s; {ct['frames']} frames, {ct['payload']} B payload, "
      f"{ct['wire']} B on the wire; {ct['back']} B back from the peer; peer: {ct_b}")
rows = [("payload per connection life (B)", "payload_per_life"), ("on the wire per connection life (B)", "wire_per_life")]
if md:
    print(f"| figure ({rate:.0f} lives a second, {secs} s) | Lazarus → Redis | conntrackd FTFW → peer | ratio |")
    print("|---|---:|---:|---:|")
for label, k in rows:
    a, b = lz[k], ct[k]
    if md:
        print(f"| {label} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
        print(f"| {label.replace('per connection life', 'a second at 1 000 lives a second').replace('(B)', '(kB/s)')} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    else:
        print(f"{label}: lazarus {a:.0f}, conntrackd {b:.0f} (ratio {a / b:.2f}); at 1 000 lives a second {a:.1f} against {b:.1f} kB/s")
print(f"bench-replication: {rate:.0f} lives a second: lazarus {lz['payload_per_life']:.0f} B a life to Redis, conntrackd FTFW {ct['payload_per_life']:.0f} B a life to its peer")
PY
