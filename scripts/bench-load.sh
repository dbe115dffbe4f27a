#!/usr/bin/env bash
# Load benchmark: a traffic generator in front of lazarus-dataplane over
# virtual links, a sink behind it; throughput, loss, and with --kill the
# outage and the packets lost across a SIGKILL and restart of the dataplane.
#
#   generator ──link A──► lazarus port a ═ firewall ═ port b ──link B──► sink
#   (dpdk-testpmd txonly,                                       (dpdk-testpmd rxonly)
#    or $PKTGEN)
#
# Links (--link): memif (default; generator and sink are memif servers, the
# dataplane is the client of both, so a killed dataplane leaves the servers
# listening and its successor reconnects), or veth (net_af_packet on two veth
# pairs; kernel-bound, what Pktgen needs: it cannot run on net_memif, see
# docs/LOAD.md), or pci (real NICs named by LOAD_GEN_PCI, LOAD_SINK_PCI,
# LOAD_DP_PCI_A, LOAD_DP_PCI_B; cores by LOAD_*_LCORES, docs/LOAD.md). The sink's and generator's port counters are read through
# their telemetry sockets every 10 ms (benches/load_probe.py).
#
# usage: scripts/bench-load.sh [--seconds N] [--short] [--kill] [--checkpoint on|off]
#            [--conntrack on|off] [--rate PPS] [--link memif|veth|pci] [--flows N] [--markdown]
# Root, hugepages (scripts/setup.sh) and a release build of dataplane and checkpointd.
# Environment: PKTGEN=/path/to/pktgen to use Pktgen-DPDK as the generator;
# LZ_BIN, LZ_CKPT_BIN to use other binaries; LOAD_KEEP=1 keeps the work directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROBE="$ROOT/benches/load_probe.py"
# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"
BIN=${LZ_BIN:-$ROOT/target/release/lazarus-dataplane}
CKPT_BIN=${LZ_CKPT_BIN:-$ROOT/target/release/lazarus-checkpointd}

SECONDS_RUN=10; KILL=0; CKPT=on; CONNTRACK=on; RATE=0; LINK=memif; FLOWS=1; MARKDOWN=0; SHORT=0
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) SECONDS_RUN=$2; shift ;;
        --short) SHORT=1 ;;
        --kill) KILL=1 ;;
        --checkpoint) CKPT=$2; shift ;;
        --conntrack) CONNTRACK=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --link) LINK=$2; shift ;;
        --flows) FLOWS=$2; shift ;;
        --markdown) MARKDOWN=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench-load: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$SHORT" = 0 ] || SECONDS_RUN=4
case $CKPT in on|off) ;; *) echo "bench-load: --checkpoint on|off" >&2; exit 2 ;; esac
case $CONNTRACK in on|off) ;; *) echo "bench-load: --conntrack on|off" >&2; exit 2 ;; esac
case $LINK in memif|veth|pci) ;; *) echo "bench-load: --link memif|veth|pci" >&2; exit 2 ;; esac
# Cores (docs/LOAD.md): defaults for two shared cores; real machines give each
# busy poller its own: LOAD_DP_LCORES=2,3 LOAD_DP_WORKER=3 LOAD_GEN_LCORES=4,5 ...
DP_LCORES=${LOAD_DP_LCORES:-0,1}; DP_WORKER=${LOAD_DP_WORKER:-1}
GEN_LCORES=${LOAD_GEN_LCORES:-'0@(0-1),1@(0-1)'}; SINK_LCORES=${LOAD_SINK_LCORES:-'0@(0-1),1@(0-1)'}
DP_MEM=${LOAD_DP_MEM:-"-m 256"}; TP_MEM=${LOAD_TP_MEM:-"-m 96"}
[ "$CONNTRACK" = on ] || CKPT=off   # nothing to checkpoint without connection tracking
[ "$(id -u)" -eq 0 ] || { echo "bench-load: needs root (hugepages, telemetry sockets, veth)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench-load: $BIN missing: cargo build --release -p dataplane -p checkpointd" >&2; exit 1; }
[ "$CKPT" = off ] || [ -x "$CKPT_BIN" ] || { echo "bench-load: $CKPT_BIN missing: cargo build --release -p checkpointd" >&2; exit 1; }

GEN=testpmd
if [ -n "${PKTGEN:-}" ]; then
    [ -x "$PKTGEN" ] || { echo "bench-load: PKTGEN=$PKTGEN is not executable" >&2; exit 1; }
    command -v script >/dev/null || { echo "bench-load: pktgen needs a terminal: install util-linux's script" >&2; exit 1; }
    GEN=pktgen
    if [ "$LINK" = memif ]; then
        # Pktgen 23.x sets the MTU of every port at start; net_memif (DPDK 22.11)
        # cannot, and pktgen panics. af_packet over veth can.
        echo "bench-load: pktgen cannot drive net_memif (it panics setting the MTU); using --link veth" >&2
        LINK=veth
    fi
else
    command -v dpdk-testpmd >/dev/null || { echo "bench-load: dpdk-testpmd missing: scripts/setup.sh (Debian package dpdk)" >&2; exit 1; }
    if [ "$RATE" != 0 ]; then
        echo "bench-load: dpdk-testpmd 22.11 cannot pace txonly; --rate needs PKTGEN=/path/to/pktgen" >&2; exit 2
    fi
fi

ID=$(( $$ % 100000 ))
P=lzload$ID                 # file-prefix stem of every DPDK process of this run
W=$(mktemp -d /tmp/lazarus-load.XXXXXX)
CKDIR=/dev/hugepages/$P-ckpt
PIDS=(); DP=; CK=; PROBE_PID=
VG=lzlg$ID; VS=lzls$ID      # veth pairs: $VG <-> ${VG}d (dataplane side), same for $VS
GEN_IN=(); SINK_IN=()       # how generator and sink are started: in their own netns on veth

cleanup() {
    local rc=$?
    for p in $PROBE_PID $DP $CK "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in $PROBE_PID $DP $CK "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ip link del "${VG}d" 2>/dev/null || true
    ip link del "${VS}d" 2>/dev/null || true
    ip netns del "$VG" 2>/dev/null || true
    ip netns del "$VS" 2>/dev/null || true
    # Runs that die leave hugepage files and runtime directories behind.
    rm -f /dev/hugepages/${P}*map_* 2>/dev/null || true
    rm -rf /var/run/dpdk/${P}* "$CKDIR" 2>/dev/null || true
    [ -n "${LOAD_KEEP:-}" ] && echo "bench-load: work directory kept: $W" >&2 || rm -rf "$W"
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
fail() { printf 'bench-load: FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }

# ------------------------------------------------------------------ links
if [ "$LINK" = memif ]; then
    # rsize=14: 16384-slot rings, so that a sink or generator the scheduler
    # takes off a shared core for a few ms does not turn into drops. Only the
    # client's value counts, the dataplane is the client.
    GEN_DEV=(--no-pci --vdev "net_memif0,role=server,socket=$W/gen.sock")
    SINK_DEV=(--no-pci --vdev "net_memif0,role=server,socket=$W/sink.sock")
    DP_DEVS=(--no-pci --vdev "net_memif0,role=client,socket=$W/gen.sock,rsize=14"
             --vdev "net_memif1,role=client,socket=$W/sink.sock,rsize=14")
    DEV_A=net_memif0; DEV_B=net_memif1
elif [ "$LINK" = pci ]; then
    # Real NICs bound to vfio-pci, cabled generator → a, b → sink.
    for v in LOAD_GEN_PCI LOAD_SINK_PCI LOAD_DP_PCI_A LOAD_DP_PCI_B; do
        [ -n "${!v:-}" ] || { echo "bench-load: --link pci needs $v=<PCI address> (docs/LOAD.md)" >&2; exit 2; }
    done
    GEN_DEV=(-a "$LOAD_GEN_PCI"); SINK_DEV=(-a "$LOAD_SINK_PCI")
    DP_DEVS=(-a "$LOAD_DP_PCI_A" -a "$LOAD_DP_PCI_B")
    DEV_A=$LOAD_DP_PCI_A; DEV_B=$LOAD_DP_PCI_B
else
    # The generator's and the sink's ends live in a netns each. net_af_packet
    # names its PACKET_FANOUT group (pid ^ ifindex) & 0xffff, and groups are
    # per netns: with every end in one netns, two processes of close pids on
    # veths of close ifindexes pick the same group, and the second one's port
    # fails with EINVAL (it happened in CI). One netns per process rules it out.
    for v in $VG $VS; do
        ip netns add "$v"
        ip link add "$v" type veth peer name "${v}d"
        ip link set "$v" netns "$v"
        ip netns exec "$v" sysctl -qw "net.ipv6.conf.$v.disable_ipv6=1" || true
        sysctl -qw "net.ipv6.conf.${v}d.disable_ipv6=1" || true
        ip -n "$v" link set "$v" up; ip link set "${v}d" up
    done
    GEN_IN=(ip netns exec "$VG"); SINK_IN=(ip netns exec "$VS")
    GEN_DEV=(--no-pci --vdev "net_af_packet0,iface=$VG")
    SINK_DEV=(--no-pci --vdev "net_af_packet0,iface=$VS")
    DP_DEVS=(--no-pci --vdev "net_af_packet0,iface=${VG}d" --vdev "net_af_packet1,iface=${VS}d")
    DEV_A=net_af_packet0; DEV_B=net_af_packet1
fi

# ---------------------------------------------------------------- config
ct=true; [ "$CONNTRACK" = on ] || ct=false
ck=true; [ "$CKPT" = on ] || ck=false
cat > "$W/dataplane.toml" <<TOML
[dataplane]
stats_interval_ms = 1000
mbufs = 16383
# Two cores shared by generator, dataplane and sink: give the core back when idle.
idle_sleep_us = ${LOAD_IDLE_SLEEP_US:-20}

# No zones: every new connection is accepted (UDP from the generator opens one).
[[port]]
name = "a"
device = "$DEV_A"

[[port]]
name = "b"
device = "$DEV_B"

[[bridge]]
ports = ["a", "b"]

[[worker]]
lcore = $DP_WORKER
rx = ["a:0", "b:0"]

[conntrack]
enabled = $ct
capacity = 65536
ftp = false

[checkpoint]
enabled = $ck
dir = "$CKDIR"
control_socket = "$W/checkpointd.sock"
ring_slots = 65536
store_capacity = 65536
attach_timeout_ms = 10000
TOML

# ------------------------------------------------------------- processes
# --stats-period makes testpmd non-interactive (it does not read stdin);
# SIGINT stops it and prints its forward statistics.
declare -A TP
testpmd_start() { # $1 name, $2 lcores, $3 forward mode, extra testpmd args after --; device EAL args in DEVS, netns prefix in IN
    local name=$1 lcores=$2 mode=$3; shift 3
    # Main and forwarding lcores may run on either core: the kernel spreads
    # generator, sink and the dataplane's worker over the two.
    # shellcheck disable=SC2086
    "${IN[@]}" dpdk-testpmd --lcores "$lcores" $TP_MEM --file-prefix "$P$name" --huge-unlink \
        "${DEVS[@]}" -- --total-num-mbufs=8192 --forward-mode="$mode" --stats-period 1 "$@" \
        </dev/null >"$W/$name.log" 2>&1 &
    PIDS+=($!); TP[$name]=$!
}

pktgen_start() { # the generator, Pktgen-DPDK on its own terminal
    # rate is a percentage of the port's link speed (af_packet: 10 Gbit/s);
    # 64-byte frames take 84 bytes on a wire (preamble, IFG).
    local pct=100
    [ "$RATE" = 0 ] || pct=$(python3 -c "print(max(0.001, min(100, $RATE * 84 * 8 / 10e9 * 100)))")
    cat > "$W/pktgen.pkt" <<PKT
set 0 size 64
set 0 rate $pct
set 0 proto udp
set 0 src ip 198.18.0.1/24
set 0 dst ip 198.18.0.2
set 0 sport 9
set 0 dport 9
start 0
PKT
    # script gives pktgen the terminal it insists on; its stdin is the fifo
    # through which `stop 0` and `quit` arrive at the end.
    mkfifo "$W/pktgen.in"
    sleep 3600 >"$W/pktgen.in" &
    PIDS+=($!)
    local lc=${LOAD_GEN_LCORES:-0,1}
    script -qfc "${GEN_IN[*]} $PKTGEN -l $lc -m 1024 --file-prefix ${P}gen --huge-unlink ${GEN_DEV[*]} -- -P -T -m [${lc#*,}].0 -f $W/pktgen.pkt" \
        "$W/gen.log" <"$W/pktgen.in" >/dev/null 2>&1 &
    PIDS+=($!)
}

dp_start() {
    local rc=0
    # shellcheck disable=SC2086
    lzp_dp_start DP "$W/dataplane.log" 400 0.025 \
        "$BIN" -l "$DP_LCORES" $DP_MEM --file-prefix "${P}dp" --huge-unlink "${DP_DEVS[@]}" \
        -- --config "$W/dataplane.toml" || rc=$?
    case $rc in
        0) ;;
        1) tail -30 "$W/dataplane.log" >&2; fail "the dataplane exited at start" ;;
        *) tail -30 "$W/dataplane.log" >&2; fail "the dataplane is not forwarding after 10 s" ;;
    esac
}

ckpt_start() {
    local rc=0
    lzp_ckpt_start CK "$W/checkpointd.log" "$W/dataplane.toml" "$W/checkpointd.sock" 200 0.05 "$CKPT_BIN" || rc=$?
    case $rc in
        0) ;;
        1) cat "$W/checkpointd.log" >&2; fail "checkpointd exited at start" ;;
        *) fail "checkpointd has no control socket after 10 s" ;;
    esac
}

wait_telemetry() { # $1 prefix
    lzp_wait_socket "$(lzp_telemetry_socket "$1")" "" 200 0.05 \
        || fail "no telemetry socket for $1 (did the process start? see $W)"
}

log "link $LINK, generator $GEN, conntrack $CONNTRACK, checkpoint $CKPT, ${SECONDS_RUN}s$([ $KILL = 1 ] && echo ', SIGKILL of the dataplane half-way')"
# Servers first (memif): sink, then generator; the dataplane connects to both.
DEVS=("${SINK_DEV[@]}"); IN=("${SINK_IN[@]}"); testpmd_start sink "$SINK_LCORES" rxonly
wait_telemetry "${P}sink"
if [ "$GEN" = pktgen ]; then
    pktgen_start
else
    extra=(); [ "$FLOWS" -le 1 ] || extra=(--txonly-multi-flow)
    DEVS=("${GEN_DEV[@]}"); IN=("${GEN_IN[@]}"); testpmd_start gen "$GEN_LCORES" txonly --tx-ip=198.18.0.1,198.18.0.2 "${extra[@]}"
fi
wait_telemetry "${P}gen"
[ "$CKPT" = off ] || ckpt_start
dp_start
python3 "$PROBE" poll "$W/samples" 0.01 gen="${P}gen:0" sink="${P}sink:0" &
PROBE_PID=$!

if [ "$KILL" = 1 ]; then
    sleep "$(python3 -c "print($SECONDS_RUN / 2)")"
    if [ "$LINK" = memif ]; then
        # The memif servers must have seen the client go before a new one can
        # connect (else rte_eth_dev_start fails: "Failed to connect socket").
        # The waiter starts now and acts on the trigger file, so that its
        # start-up does not count in the outage.
        python3 "$PROBE" wait-down 5 "$W/killed" "${P}gen:0" "${P}sink:0" >"$W/down.times" &
        waiter=$!
    fi
    log "SIGKILL the dataplane under load"
    kill -KILL "$DP"; echo "kill $(now)" >"$W/kill.times"; touch "$W/killed"
    wait "$DP" 2>/dev/null || true; DP=
    if [ "$LINK" = memif ]; then
        wait "$waiter" || log "memif servers still report link up 5 s after the kill"
        cat "$W/down.times" >>"$W/kill.times"
    fi
    # A killed primary leaves its runtime directory; the successor reuses it.
    dp_start; echo "started $(now)" >>"$W/kill.times"
    log "restarted; $(grep -o 'restore done.*' "$W/dataplane.log" | tail -1)"
    sleep "$(python3 -c "print($SECONDS_RUN / 2)")"
else
    sleep "$SECONDS_RUN"
fi

kill -TERM "$PROBE_PID"; wait "$PROBE_PID" 2>/dev/null || true; PROBE_PID=
kill -TERM "$DP"; wait "$DP" 2>/dev/null || true; DP=
if [ "$GEN" = pktgen ]; then
    printf 'stop 0\nquit\n' >"$W/pktgen.in" || true
    sleep 2
else
    kill -INT "${TP[gen]}" "${TP[sink]}" 2>/dev/null || true
    wait "${TP[gen]}" "${TP[sink]}" 2>/dev/null || true
fi
[ -z "$CK" ] || { kill -TERM "$CK"; wait "$CK" 2>/dev/null || true; CK=; }

label="link $LINK, conntrack $CONNTRACK"
[ "$CONNTRACK" = off ] || label+=", checkpoint $CKPT"
label+=", ${SECONDS_RUN} s"
[ "$KILL" = 0 ] || label+=", SIGKILL + restart"
args=(report --samples "$W/samples" --dataplane-log "$W/dataplane.log" --gen-log "$W/gen.log" --label "$label")
if [ "$GEN" = pktgen ]; then args+=(--generator pktgen); else args+=(--generator "dpdk-testpmd txonly"); fi
[ "$KILL" = 0 ] || args+=(--kill-times "$W/kill.times")
[ "$MARKDOWN" = 0 ] || args+=(--markdown)
python3 "$PROBE" "${args[@]}"
