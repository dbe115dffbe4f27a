# Shared by the end-to-end tests and the demo: two network namespaces (client,
# server) joined through the dataplane's two net_tap ports.
#
#   ns client: veth (10.99.0.1/24) ─┐                 ┌─ veth (10.99.0.2/24) :ns server
#   root ns:   veth peer ── bridge ── tap ═ dataplane ═ tap ── bridge ── veth peer
#
# The taps stay in the root namespace and are created with `persist`, so they
# outlive a dataplane that is killed (later issues restart it into the same
# taps). Everything is named with a per-run id and removed by lz_cleanup, which
# the caller installs as an EXIT trap.

LZ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/lib/proc.sh
source "$LZ_ROOT/scripts/lib/proc.sh"
LZ_ID=${LZ_ID:-$(( $$ % 100000 ))}
LZ_NS_C=lzc$LZ_ID; LZ_NS_S=lzs$LZ_ID
LZ_TAP_C=lztc$LZ_ID; LZ_TAP_S=lzts$LZ_ID
LZ_BR_C=lzbc$LZ_ID;  LZ_BR_S=lzbs$LZ_ID
LZ_VE_C=lzvc$LZ_ID;  LZ_VE_S=lzvs$LZ_ID
LZ_CLIENT_IP=10.99.0.1; LZ_SERVER_IP=10.99.0.2
# With LZ_MORE_FLOWS=1: IPv6 on the same link, and an 802.1Q VLAN over it.
LZ_CLIENT_IP6=fd99::1; LZ_SERVER_IP6=fd99::2
LZ_VLAN=100; LZ_CLIENT_IPV=10.99.100.1; LZ_SERVER_IPV=10.99.100.2
LZ_VT_C=lzqc$LZ_ID; LZ_VT_S=lzqs$LZ_ID
LZ_WORK=${LZ_WORK:-$(mktemp -d /tmp/lazarus-e2e.XXXXXX)}
LZ_PIDS=()
LZ_DP_PID=
LZ_BIN=${LZ_BIN:-$LZ_ROOT/target/release/lazarus-dataplane}
LZ_CKPT_BIN=${LZ_CKPT_BIN:-$LZ_ROOT/target/release/lazarus-checkpointd}
LZ_CKPT_PID=
# 1: the supervised dataplane (a port owner, worker processes with a standby:
# docs/RESTART.md); 0: one process, restarted whole.
LZ_SUPERVISE=${LZ_SUPERVISE:-1}
LZ_CTL=${LZ_CTL:-$LZ_ROOT/target/release/lazarusctl}
# checkpointd's segments: on hugetlbfs, as in production, named per run.
LZ_CKPT_DIR=${LZ_CKPT_DIR:-/dev/hugepages/lz$LZ_ID-ckpt}

lz_log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
lz_fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

lz_cleanup() {
    local rc=$?
    # Reaped here, with stderr closed, so that bash's "Killed" job notices
    # do not clutter the output.
    {
        for p in "${LZ_PIDS[@]}" $LZ_DP_PID $LZ_CKPT_PID; do kill -KILL "$p" || true; done
        for p in "${LZ_PIDS[@]}" $LZ_DP_PID $LZ_CKPT_PID; do wait "$p" || true; done
        # Worker processes of a supervised dataplane whose port owner was killed.
        lz_worker_pids | xargs -r kill -KILL || true
    } 2>/dev/null
    # vsftpd forks a session process per client, possibly while we kill: it
    # keeps its deleted namespace alive, so kill by name as well, twice.
    for _ in 1 2; do
        pkill -KILL -f "vsftpd $LZ_WORK/" 2>/dev/null || true
        for ns in $LZ_NS_C $LZ_NS_S; do
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        done
    done
    for ns in $LZ_NS_C $LZ_NS_S; do
        ip netns del "$ns" 2>/dev/null || true
    done
    lz_redis_cleanup
    lz_b_cleanup
    for l in $LZ_TAP_C $LZ_TAP_S $LZ_BR_C $LZ_BR_S ${LZ_VE_C}p ${LZ_VE_S}p ${LZ_VT_C}p ${LZ_VT_S}p ${LZ_VT_C}q ${LZ_VT_S}q; do
        ip link del "$l" 2>/dev/null || true
    done
    # A dataplane that died leaves its hugepage files and runtime directory.
    rm -f /dev/hugepages/lz${LZ_ID}map_* 2>/dev/null || true
    rm -rf "/var/run/dpdk/lz$LZ_ID" "$LZ_CKPT_DIR" 2>/dev/null || true
    [ -n "${LZ_KEEP_WORK:-}" ] || rm -rf "$LZ_WORK"
    return $rc
}

lz_ns_up() {
    for side in C S; do
        local ns ve br ip
        eval "ns=\$LZ_NS_$side ve=\$LZ_VE_$side br=\$LZ_BR_$side"
        [ $side = C ] && ip=$LZ_CLIENT_IP || ip=$LZ_SERVER_IP
        ip netns add "$ns"
        ip link add "$ve" type veth peer name "${ve}p"
        ip link set "$ve" netns "$ns"
        ip -n "$ns" addr add "$ip/24" dev "$ve"
        ip -n "$ns" link set "$ve" up
        ip -n "$ns" link set lo up
        ip link add "$br" type bridge
        # No IPv6 on the plumbing in the root namespace: it would only add noise.
        sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1" "net.ipv6.conf.${ve}p.disable_ipv6=1" || true
        ip link set "${ve}p" master "$br"
        ip link set "${ve}p" up
        ip link set "$br" up
        if [ "${LZ_MORE_FLOWS:-0}" = 1 ]; then
            local ip6 ipv vt
            [ $side = C ] && ip6=$LZ_CLIENT_IP6 ipv=$LZ_CLIENT_IPV || ip6=$LZ_SERVER_IP6 ipv=$LZ_SERVER_IPV
            ip -n "$ns" addr add "$ip6/64" dev "$ve" nodad
            # The VLAN flow: this kernel has no 802.1Q device, VLAN-filtering
            # bridge or tc vlan action, so a second link from the namespace
            # ($vt) reaches the bridge through tests/e2e/vlan_tagger.py, which
            # tags what leaves the namespace and untags what comes back: the
            # wire and the dataplane see 802.1Q frames, the kernels plain ones.
            eval "vt=\$LZ_VT_$side"
            ip link add "$vt" type veth peer name "${vt}p"
            ip link add "${vt}q" type veth peer name "${vt}b"
            ip link set "$vt" netns "$ns"
            ip -n "$ns" addr add "$ipv/24" dev "$vt"
            # No offloads: the tagger copies frames as they are, so checksums
            # must be filled and segments wire-sized.
            ip netns exec "$ns" ethtool -K "$vt" tx off tso off gso off gro off >/dev/null 2>&1 || true
            ethtool -K "${vt}p" tx off tso off gso off gro off >/dev/null 2>&1 || true
            # Room for the tag within the taps' 1500 bytes.
            ip -n "$ns" link set "$vt" mtu 1496
            ip -n "$ns" link set "$vt" up
            sysctl -qw "net.ipv6.conf.${vt}p.disable_ipv6=1" "net.ipv6.conf.${vt}q.disable_ipv6=1" "net.ipv6.conf.${vt}b.disable_ipv6=1" || true
            ip link set "${vt}b" master "$br"
            for l in "${vt}p" "${vt}q" "${vt}b"; do ip link set "$l" up; done
            python3 "$LZ_ROOT/tests/e2e/vlan_tagger.py" "${vt}p" "${vt}q" "$LZ_VLAN" >"$LZ_WORK/tagger.$side.log" 2>&1 &
            LZ_PIDS+=($!)
        fi
    done
}

# Joins the dataplane's taps to the bridges once the PMD has created them.
lz_join_taps() {
    local t
    for t in $(seq 1 100); do
        ip link show "$LZ_TAP_C" >/dev/null 2>&1 && ip link show "$LZ_TAP_S" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip link show "$LZ_TAP_C" >/dev/null 2>&1 || lz_fail "the dataplane did not create tap $LZ_TAP_C"
    sysctl -qw "net.ipv6.conf.$LZ_TAP_C.disable_ipv6=1" "net.ipv6.conf.$LZ_TAP_S.disable_ipv6=1" || true
    ip link set "$LZ_TAP_C" master "$LZ_BR_C"; ip link set "$LZ_TAP_C" up
    ip link set "$LZ_TAP_S" master "$LZ_BR_S"; ip link set "$LZ_TAP_S" up
}

# Waits until the client reaches the server (ARP resolved, bridges forwarding).
lz_wait_path() {
    ip -n "$LZ_NS_C" neigh flush all 2>/dev/null || true
    ip -n "$LZ_NS_S" neigh flush all 2>/dev/null || true
    local t
    local dst
    for dst in "$LZ_SERVER_IP" $([ "${LZ_MORE_FLOWS:-0}" = 1 ] && echo "$LZ_SERVER_IP6 $LZ_SERVER_IPV"); do
        for t in $(seq 1 21); do
            [ "$t" -le 20 ] || lz_fail "client cannot reach $dst through the dataplane after 20 tries"
            lz_in_client ping -c 1 -W 1 -q "$dst" >/dev/null 2>&1 && break
        done
    done
}

# Writes the dataplane config for the two taps; extra [dataplane] lines from $1,
# extra top-level TOML (zones, rules, [conntrack]) from $2; port zones from
# LZ_CLIENT_ZONE / LZ_SERVER_ZONE; LZ_WORKERS=2 gives two workers (two RX
# queues a port, spread by RSS).
lz_config() {
    local czone= szone= queues= second=
    [ -z "${LZ_CLIENT_ZONE:-}" ] || czone="zone = \"$LZ_CLIENT_ZONE\""
    [ -z "${LZ_SERVER_ZONE:-}" ] || szone="zone = \"$LZ_SERVER_ZONE\""
    if [ "${LZ_WORKERS:-1}" = 2 ]; then
        queues="rx_queues = 2"
        second=$'[[worker]]\nlcore = 2\nrx = ["client:1", "server:1"]'
    fi
    cat > "$LZ_WORK/dataplane.toml" <<TOML
[dataplane]
stats_interval_ms = 1000
mbufs = $([ "${LZ_WORKERS:-1}" = 2 ] && echo 16383 || echo 8191)
# Two cores: the kernel's TCP stacks and iperf3 need the other one.
idle_sleep_us = 20
${1:-}

[[port]]
name = "client"
device = "net_tap0"
$czone
$queues

[[port]]
name = "server"
device = "net_tap1"
$szone
$queues

[[bridge]]
ports = ["client", "server"]

[[worker]]
lcore = 1
rx = ["client:0", "server:0"]

$second

[checkpoint]
enabled = ${LZ_CHECKPOINT:-false}
dir = "$LZ_CKPT_DIR"
control_socket = "$LZ_WORK/checkpointd.sock"
ring_slots = 65536
store_capacity = 65536
attach_timeout_ms = 10000
metrics_listen = "${LZ_METRICS:-}"
dataplane_telemetry = "/var/run/dpdk/lz$LZ_ID/dpdk_telemetry.v2"

${2:-}
TOML
}

# Starts the dataplane in the background, logging to $LZ_WORK/dataplane.log
# (appended to across restarts: only this start's lines count).
lz_dp_start() {
    local rc=0 supervise=
    [ "$LZ_SUPERVISE" != 1 ] || supervise=--supervise
    LZ_DP_LOG_BASE=0
    [ ! -f "$LZ_WORK/dataplane.log" ] || LZ_DP_LOG_BASE=$(wc -l <"$LZ_WORK/dataplane.log")
    lzp_dp_start LZ_DP_PID "$LZ_WORK/dataplane.log" 200 0.05 \
        "$LZ_BIN" $([ "${LZ_WORKERS:-1}" = 2 ] && echo "--lcores 0@0,1@1,2@1" || echo "-l 0,1") -m 256 --file-prefix "lz$LZ_ID" --no-pci \
        --vdev "net_tap0,iface=$LZ_TAP_C,persist" --vdev "net_tap1,iface=$LZ_TAP_S,persist" \
        -- --config "$LZ_WORK/dataplane.toml" $supervise || rc=$?
    case $rc in
        0) ;;
        1) cat "$LZ_WORK/dataplane.log"; lz_fail "dataplane exited at start" ;;
        *) cat "$LZ_WORK/dataplane.log"; lz_fail "dataplane not forwarding after 10 s" ;;
    esac
}

# SIGTERM and wait; fails unless the dataplane stops cleanly with status 0.
lz_dp_stop() {
    kill -TERM "$LZ_DP_PID"
    local rc=0
    wait "$LZ_DP_PID" || rc=$?
    LZ_DP_PID=
    [ $rc -eq 0 ] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "dataplane exited $rc on SIGTERM"; }
    # This start's own line (not a worker process's, not an earlier run's).
    tail -n +"$((${LZ_DP_LOG_BASE:-0} + 1))" "$LZ_WORK/dataplane.log" | grep -q "INFO stopped cleanly$" \
        || lz_fail "dataplane did not report a clean stop"
    [ -z "$(lz_worker_pids)" ] || lz_fail "worker processes outlived their port owner's stop"
}

# Worker processes of this run's supervised dataplane (pids), if any.
lz_worker_pids() { pgrep -f -- "--file-prefix lz$LZ_ID " || true; }

# An upgrade as an operator makes it (docs/OPERATING.md): the dataplane
# stopped, checkpointd stopped, then this build's checkpointd (LZ_CKPT_BIN,
# which translates older segments) and supervised dataplane (LZ_BIN)
# started. A function lz_between, if defined, runs while both are down.
lz_upgrade() {
    lz_dp_stop
    kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || lz_fail "checkpointd did not exit 0 on SIGTERM before the upgrade"; LZ_CKPT_PID=
    ! declare -F lz_between >/dev/null || lz_between
    lz_ckpt_start
    LZ_SUPERVISE=1 lz_dp_start
    lz_join_taps
}

# Builds the tool lz_write_previous_format runs (lazarus-core's
# write_previous_format example): before the traffic, not inside an outage.
lz_build_previous_format() {
    (cd "$LZ_ROOT" && cargo build --release --locked -q -p lazarus-core --example write_previous_format) \
        || lz_fail "cannot build lazarus-core's write_previous_format example"
}

# Rewrites the stopped pair's segments as v0.1.0 wrote them (the previous
# versions' encoders kept in the code); its report line in
# $LZ_WORK/previous_format.txt.
lz_write_previous_format() {
    "$LZ_ROOT/target/release/examples/write_previous_format" "$LZ_CKPT_DIR" >"$LZ_WORK/previous_format.txt" 2>&1 \
        || { cat "$LZ_WORK/previous_format.txt"; lz_fail "rewriting the segments in the previous format failed"; }
}

# The worker process that forwards now (supervised): the pid its last
# "worker process active" line names.
lz_active_worker() {
    grep 'worker process active' "$LZ_WORK/dataplane.log" | tail -1 | grep -o 'pid=[0-9]*' | cut -d= -f2
}

# Worker processes standing by (supervised), as the port owner counts them.
lz_standbys() {
    grep -c 'worker process standing by' "$LZ_WORK/dataplane.log"
}

# SIGKILL of the process running the packet code: the active worker process
# when supervised (the standby takes over; waits until it forwards), else
# the dataplane itself (then lz_dp_start brings it back).
lz_crash() {
    if [ "$LZ_SUPERVISE" = 1 ]; then
        local pid base; pid=$(lz_active_worker); base=$(wc -l < "$LZ_WORK/dataplane.log")
        [ -n "$pid" ] || lz_fail "no active worker process in the log"
        kill -KILL "$pid"
        lzp_wait_log "$LZ_WORK/dataplane.log" "$base" "worker process active" "$LZ_DP_PID" 400 0.005 \
            || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "no worker process took over after SIGKILL of $pid"; }
    else
        lz_dp_kill
        lz_dp_start
        lz_join_taps
    fi
}

# SIGKILL: what a crash looks like. The taps persist.
lz_dp_kill() {
    kill -KILL "$LZ_DP_PID"
    wait "$LZ_DP_PID" 2>/dev/null || true
    LZ_DP_PID=
    # Its worker processes die with it, but the kernel may still be tearing
    # them down: a new port owner's EAL cannot set up its memory beside a
    # process that still maps the old one's ("Cannot allocate memzone list").
    local _
    for _ in $(seq 1 100); do
        [ -n "$(lz_worker_pids)" ] || return 0
        sleep 0.05
    done
    lz_fail "worker processes of the killed dataplane still alive after 5 s: $(lz_worker_pids | tr '\n' ' ')"
}

# Starts checkpointd (same config file as the dataplane), logging to
# $LZ_WORK/checkpointd.log; waits for its control socket.
lz_ckpt_start() {
    local rc=0
    rm -f "$LZ_WORK/checkpointd.sock"
    lzp_ckpt_start LZ_CKPT_PID "$LZ_WORK/checkpointd.log" "$LZ_WORK/dataplane.toml" "$LZ_WORK/checkpointd.sock" \
        200 0.05 "$LZ_CKPT_BIN" || rc=$?
    case $rc in
        0) ;;
        1) cat "$LZ_WORK/checkpointd.log"; lz_fail "checkpointd exited at start" ;;
        *) cat "$LZ_WORK/checkpointd.log"; lz_fail "checkpointd has no control socket after 10 s" ;;
    esac
}

lz_ckpt_kill() {
    kill -KILL "$LZ_CKPT_PID"
    wait "$LZ_CKPT_PID" 2>/dev/null || true
    LZ_CKPT_PID=
}

# One request to checkpointd's control socket; prints the JSON reply.
lz_ckpt_ask() {
    python3 - "$LZ_WORK/checkpointd.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); f = s.makefile()
print(f.readline().strip())
PY
}

lz_in_client() { ip netns exec "$LZ_NS_C" "$@"; }
lz_in_server() { ip netns exec "$LZ_NS_S" "$@"; }

# vsftpd in the server namespace, anonymous, read-only, serving $LZ_WORK/ftp;
# $@: extra config lines.
lz_vsftpd() {
    mkdir -p /var/run/vsftpd/empty
    {
        cat <<CONF
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
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
xferlog_enable=NO
CONF
        printf '%s\n' "$@"
    } >"$LZ_WORK/vsftpd.conf"
    lz_in_server vsftpd "$LZ_WORK/vsftpd.conf" >"$LZ_WORK/vsftpd.log" 2>&1 &
    LZ_PIDS+=($!)
}

# ---- the kill scenario (tests/e2e/kill.sh and the demo) ----
LZ_STREAMS=$LZ_ROOT/tests/e2e/streams.py
LZ_PCAP=$LZ_ROOT/tests/e2e/pcap.py
LZ_SECS=${LZ_SECS:-12}; LZ_KILL_AT=${LZ_KILL_AT:-4}; LZ_CONNS=${LZ_CONNS:-50}
# Bytes per second of each verified stream and of the FTP transfer.
LZ_RATE=${LZ_RATE:-150000}
# The zones of firewall.sh and kill.sh: new connections from the server side dropped.
LZ_ZONE_POLICY='
[[zone]]
name = "inside"
default = "accept"

[[zone]]
name = "outside"
default = "drop"
'

# Servers in the server namespace: vsftpd (paced), the verifying stream and
# UDP echo servers, iperf3. Sets LZ_FTP_SHA.
lz_kill_servers() {
export LZ_CLIENT_ZONE=inside LZ_SERVER_ZONE=outside
mkdir -p "$LZ_WORK/ftp" /var/run/vsftpd/empty
head -c $((LZ_RATE * LZ_SECS)) /dev/urandom > "$LZ_WORK/ftp/file.bin"
chmod 755 "$LZ_WORK" "$LZ_WORK/ftp"; chmod 644 "$LZ_WORK/ftp/file.bin"
lz_vsftpd "anon_max_rate=$LZ_RATE"
lz_in_server python3 "$LZ_STREAMS" tcp-server --bind "$LZ_SERVER_IP" --port 7000 &
LZ_PIDS+=($!)
lz_in_server python3 "$LZ_STREAMS" udp-server --bind "$LZ_SERVER_IP" --port 7001 &
LZ_PIDS+=($!)
lz_in_server iperf3 -s -B "$LZ_SERVER_IP" >/dev/null 2>&1 &
LZ_PIDS+=($!)
if [ "${LZ_MORE_FLOWS:-0}" = 1 ]; then
    local ip
    for ip in "$LZ_SERVER_IP6" "$LZ_SERVER_IPV"; do
        lz_in_server python3 "$LZ_STREAMS" tcp-server --bind "$ip" --port 7000 &
        LZ_PIDS+=($!)
    done
fi
LZ_FTP_SHA=$(sha256sum < "$LZ_WORK/ftp/file.bin" | cut -c1-64)
}

# lazarusctl pointed at this run's daemons.
lz_ctl() { "$LZ_CTL" --config "$LZ_WORK/dataplane.toml" --file-prefix "lz$LZ_ID" "$@"; }

# The kernels' counters of connections that a reset ended, or that failed to
# open: an established or closing connection reset (received), aborted (sent:
# on data, close, timeout, memory, linger) or a connect that failed. Not
# TcpOutRsts: that also counts the answer to a stray segment for a socket
# already gone, which ends nothing (see lz_rst_on_wire).
LZ_BREAK_COUNTERS="TcpEstabResets TcpAttemptFails TcpExtTCPAbortOnData TcpExtTCPAbortOnClose TcpExtTCPAbortOnTimeout TcpExtTCPAbortOnMemory TcpExtTCPAbortOnLinger"
# Each counter so far, summed over both namespaces: "NAME VALUE" lines.
lz_break_counters() {
    for ns in "$LZ_NS_C" "$LZ_NS_S"; do
        ip netns exec "$ns" nstat -az $LZ_BREAK_COUNTERS 2>/dev/null | awk 'NR>1 && $1 ~ /^Tcp/ {print $1, $2}'
    done | awk '{s[$1]+=$2} END {for (k in s) print k, s[k]}'
}

# The breaks the kernels counted between two lz_break_counters snapshots ($1,
# $2) that the capture does not explain. Each of the $3 aborts seen on the
# wire (an application closed with data unread; see lz_rst_on_wire) explains
# one TCPAbortOnClose and two TcpEstabResets: Linux counts an established
# connection's move to CLOSE at both ends, the one that aborted and the one
# its RST reset.
lz_unexplained_breaks() {
    awk -v aborts="$3" 'FNR==NR {b[$1]=$2; next} {d=$2-b[$1]; n+=d; if ($1=="TcpExtTCPAbortOnClose") c=d; if ($1=="TcpEstabResets") e=d}
        END {n -= (c < aborts ? c : aborts) + (e < 2*aborts ? e : 2*aborts); print n+0}' "$1" "$2"
}

# Runs the traffic, kills the dataplane at KILL_AT and restarts it. $1: tag.
# Leaves results in $LZ_WORK/$1.*.
lz_kill_traffic() {
    local tag=$1 pids=() t0
    # RSTs, the FINs that tell whether a connection was already over, and
    # what the iperf3 client sends, which tells whether its server's RSTs are
    # the aborts iperf3 makes by design (lz_rst_on_wire).
    lz_in_client tcpdump -i "$LZ_VE_C" -n -U -s 96 -w "$LZ_WORK/$tag.rst.pcap" 'tcp[tcpflags] & (tcp-rst|tcp-fin) != 0 or tcp dst port 5201' >/dev/null 2>&1 &
    local dump_rst=$!
    # What the dataplane forwards to the server side, for the outage (on the
    # server's bridge port instead, LZ_FWD_IF/LZ_FWD_DIR, when another
    # appliance takes the wire).
    tcpdump -i "${LZ_FWD_IF:-$LZ_TAP_S}" -Q "${LZ_FWD_DIR:-in}" -n -s 64 -w "$LZ_WORK/$tag.fwd.pcap" >/dev/null 2>&1 &
    local dump_fwd=$!
    sleep 1
    lz_break_counters >"$LZ_WORK/$tag.breaks.before"
    t0=$(date +%s.%N)
    lz_in_client python3 "$LZ_STREAMS" tcp-client --server "$LZ_SERVER_IP" --port 7000 --conns "$LZ_CONNS" \
        --bytes $((LZ_RATE * LZ_SECS)) --rate "$LZ_RATE" --stall 10 >"$LZ_WORK/$tag.streams.json" 2>"$LZ_WORK/$tag.streams.err" &
    pids+=($!)
    lz_in_client timeout $((LZ_SECS + 15)) iperf3 -c "$LZ_SERVER_IP" -P 4 -b 10M -t "$LZ_SECS" -J >"$LZ_WORK/$tag.iperf3.json" 2>"$LZ_WORK/$tag.iperf3.err" &
    pids+=($!)
    # Active mode: the data connection comes from the server side, which the
    # policy admits only as related. vsftpd paces it (anon_max_rate), so the
    # transfer is on the wire when the dataplane dies.
    # LZ_NO_FTP=1 leaves it out (several workers: a data connection may hash
    # to a worker that does not hold its control connection's expectation).
    if [ "${LZ_NO_FTP:-0}" != 1 ]; then
        ( rc=0; lz_in_client timeout $((LZ_SECS + 15)) curl -s -P - -o "$LZ_WORK/$tag.ftp.bin" "ftp://$LZ_SERVER_IP/file.bin" || rc=$?
          echo "$rc $(date +%s.%N)" >"$LZ_WORK/$tag.ftp.done"; exit $rc ) &
        pids+=($!)
    fi
    lz_in_client python3 "$LZ_STREAMS" udp-client --server "$LZ_SERVER_IP" --port 7001 --interval 0.01 --duration "$LZ_SECS" >"$LZ_WORK/$tag.udp.json" &
    pids+=($!)
    if [ "${LZ_MORE_FLOWS:-0}" = 1 ]; then
        # Verified streams over IPv6 and over the VLAN: $tag.streams6.json, $tag.streamsv.json.
        local more ip
        for more in 6:"$LZ_SERVER_IP6" v:"$LZ_SERVER_IPV"; do
            ip=${more#*:}
            lz_in_client python3 "$LZ_STREAMS" tcp-client --server "$ip" --port 7000 --conns 10 --seed 3 \
                --bytes $((LZ_RATE * LZ_SECS)) --rate "$LZ_RATE" --stall 10 >"$LZ_WORK/$tag.streams${more%%:*}.json" 2>>"$LZ_WORK/$tag.streams.err" &
            pids+=($!)
        done
    fi
    lz_in_client ping -i 0.01 -w "$LZ_SECS" -q "$LZ_SERVER_IP" >"$LZ_WORK/$tag.ping.txt" 2>&1 &
    pids+=($!)
    sleep "$LZ_KILL_AT"
    ! declare -F lz_before_kill >/dev/null || lz_before_kill "$tag"
    if [ -n "${LZ_DISRUPT:-}" ]; then
        lz_log "$tag: $LZ_DISRUPT under traffic"
    else
        lz_log "$tag: SIGKILL the $([ "$LZ_SUPERVISE" = 1 ] && echo "active worker process" || echo dataplane) under traffic"
    fi
    # The taps' carrier through the kill and the restart, every millisecond.
    python3 "$LZ_ROOT/tests/e2e/carrier.py" 2.5 "$LZ_TAP_C" "$LZ_TAP_S" >"$LZ_WORK/$tag.carrier.json" &
    local carrier=$!
    sleep 0.5
    echo "kill $(date +%s.%N)" >"$LZ_WORK/$tag.times"
    echo "traffic $t0" >>"$LZ_WORK/$tag.times"
    "${LZ_DISRUPT:-lz_crash}"
    echo "started $(date +%s.%N)" >>"$LZ_WORK/$tag.times"
    wait "$carrier" || true
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=$((rc + 1)); done
    echo "$rc" >"$LZ_WORK/$tag.rc"
    lz_break_counters >"$LZ_WORK/$tag.breaks.after"
    for ns in "$LZ_NS_C" "$LZ_NS_S"; do
        echo "$ns: $(ip netns exec "$ns" nstat -az TcpOutRsts $LZ_BREAK_COUNTERS 2>/dev/null | awk 'NR>1 && $1 ~ /^Tcp/ {printf "%s=%s ", $1, $2}')"
    done >"$LZ_WORK/$tag.resets.detail"
    sleep 0.5
    kill -TERM "$dump_rst" "$dump_fwd" 2>/dev/null || true
    wait "$dump_rst" "$dump_fwd" 2>/dev/null || true
    # "BAD LATE ABORTS" on the wire, then the kernels' breaks they leave
    # unexplained.
    local wire; wire=$(lz_rst_on_wire "$LZ_WORK/$tag.rst.pcap")
    echo "$wire" >"$LZ_WORK/$tag.rst"
    lz_unexplained_breaks "$LZ_WORK/$tag.breaks.before" "$LZ_WORK/$tag.breaks.after" "${wire##* }" >"$LZ_WORK/$tag.resets"
    lz_log "$tag: traffic done in $(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))")s"
}

# The longest silence in what the dataplane forwarded, in ms: with $2 (the
# .times file), from 2 s before the kill to 4 s after it, inside the time
# every flow runs (not the quiet before the first starts or after the last
# ends).
lz_outage_ms() {
    if [ -n "${2:-}" ]; then
        local k t; k=$(awk '$1 == "kill" {print $2}' "$2"); t=$(awk '$1 == "traffic" {print $2}' "$2")
        python3 "$LZ_PCAP" outage "$1" "$(python3 -c "print(max($k - 2, $t + 0.5))")" \
            "$(python3 -c "print(min($k + 4, $t + $LZ_SECS - 0.5))")"
    else
        python3 "$LZ_PCAP" outage "$1"
    fi
}

# The silence the kill made on the wire ($1: capture, $2: the .times file), in ms.
lz_blackout_ms() { python3 "$LZ_PCAP" blackout "$1" "$(awk '$1 == "kill" {print $2}' "$2")"; }

# RST segments on the client's interface, from a capture of RSTs and FINs:
# prints "BAD LATE ABORTS"; late ones came after both FINs of their
# connection, aborts from an application that closed with data unread after
# every byte had arrived (see tests/e2e/pcap.py); bad ones are printed on
# stderr.
lz_rst_on_wire() { python3 "$LZ_PCAP" rst "$1"; }


# ------------------------------------------------------------ the remote store
# Debian's redis-server in a namespace of its own (the "other device"), on a
# private link to the root namespace where checkpointd runs:
#   root: lzrr$LZ_ID (10.97.x.1/30) ── lzrv$LZ_ID (10.97.x.2/30): ns lzr$LZ_ID
# with an ACL user that may touch only Lazarus's keys, the default user off,
# and no persistence (a restart loses everything, as a test of resync wants).
LZ_NS_R=lzr$LZ_ID; LZ_VE_R=lzrv$LZ_ID
LZ_REDIS_IP=10.97.$(( LZ_ID % 250 )).2; LZ_REDIS_PEER=10.97.$(( LZ_ID % 250 )).1
LZ_REDIS_PID=
# The store's files (password, HMAC key, config, log) and the key namespace,
# shared by every appliance of the run.
LZ_REDIS_DIR=$LZ_WORK
LZ_REMOTE_NS=lz$LZ_ID

lz_redis_up() {
    ip netns add "$LZ_NS_R"
    ip link add "${LZ_VE_R}r" type veth peer name "$LZ_VE_R"
    ip link set "$LZ_VE_R" netns "$LZ_NS_R"
    ip addr add "$LZ_REDIS_PEER/30" dev "${LZ_VE_R}r"
    ip link set "${LZ_VE_R}r" up
    ip -n "$LZ_NS_R" addr add "$LZ_REDIS_IP/30" dev "$LZ_VE_R"
    ip -n "$LZ_NS_R" link set "$LZ_VE_R" up
    ip -n "$LZ_NS_R" link set lo up
    head -c 24 /dev/urandom | base64 >"$LZ_REDIS_DIR/redis.pass"
    head -c 32 /dev/urandom >"$LZ_REDIS_DIR/remote.key"
    chmod 600 "$LZ_REDIS_DIR/redis.pass" "$LZ_REDIS_DIR/remote.key"
    lz_redis_tls_certs
    lz_redis_start
}

# A test authority, Redis's certificate for its address, a client
# certificate for the appliances, and a second authority (the wrong one)
# with a client certificate of its own, all in $LZ_REDIS_DIR/tls.
lz_redis_tls_certs() {
    local d=$LZ_REDIS_DIR/tls ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    mkdir -p "$d"
    {
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=lazarus test authority" -keyout "$d/ca.key" -out "$d/ca.crt"
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=some other authority" -keyout "$d/other-ca.key" -out "$d/other-ca.crt"
        local who ca
        # "stranger": a client certificate from the authority Redis does not trust.
        for who in redis appliance stranger; do
            ca=ca; [ $who != stranger ] || ca=other-ca
            openssl req "${ec[@]}" -subj "/CN=$who" -keyout "$d/$who.key" -out "$d/$who.csr"
            openssl x509 -req -in "$d/$who.csr" -CA "$d/$ca.crt" -CAkey "$d/$ca.key" -CAcreateserial -days 2 \
                -extfile <(printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\n' "$LZ_REDIS_IP") -out "$d/$who.crt"
        done
    } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log"; lz_fail "openssl could not make the test certificates"; }
    chmod 600 "$d"/*.key
}

lz_redis_start() {
    cat >"$LZ_REDIS_DIR/redis.conf" <<CONF
bind $LZ_REDIS_IP
port 6379
save ""
appendonly no
protected-mode yes
dir $LZ_REDIS_DIR
logfile $LZ_REDIS_DIR/redis.log
tls-port 6380
tls-cert-file $LZ_REDIS_DIR/tls/redis.crt
tls-key-file $LZ_REDIS_DIR/tls/redis.key
tls-ca-cert-file $LZ_REDIS_DIR/tls/ca.crt
tls-auth-clients yes
user default off
user admin on >$(cat "$LZ_REDIS_DIR/redis.pass")-admin ~* &* +@all
user lazarus on >$(cat "$LZ_REDIS_DIR/redis.pass") resetkeys ~lazarus:* resetchannels &lazarus:* -@all +@connection +ping +hget +hmget +hset +hdel +hgetall +hincrby +publish +subscribe +evalsha +script|load +scan +hkeys
${LZ_REDIS_CONF:-}
CONF
    ip netns exec "$LZ_NS_R" redis-server "$LZ_REDIS_DIR/redis.conf" &
    LZ_REDIS_PID=$!
    local t
    for t in $(seq 1 100); do
        lz_redis_cli PING 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    cat "$LZ_REDIS_DIR/redis.log"; lz_fail "redis-server did not answer at $LZ_REDIS_IP"
}

lz_redis_kill() {
    kill -KILL "$LZ_REDIS_PID" 2>/dev/null || true
    wait "$LZ_REDIS_PID" 2>/dev/null || true
    LZ_REDIS_PID=
}

# The test's own administration (CONFIG SET): a user Lazarus is not given.
lz_redis_admin() {
    ip netns exec "$LZ_NS_R" redis-cli -h "$LZ_REDIS_IP" --user admin --pass "$(cat "$LZ_REDIS_DIR/redis.pass")-admin" --no-auth-warning "$@"
}

lz_redis_cli() {
    ip netns exec "$LZ_NS_R" redis-cli -h "$LZ_REDIS_IP" --user lazarus --pass "$(cat "$LZ_REDIS_DIR/redis.pass")" --no-auth-warning "$@"
}

# The [checkpoint.remote] section for lz_config's extra TOML; $1 the role
# (active), $2 the appliance's name (the host name). LZ_REMOTE_TLS=1: over
# TLS (Redis's port 6380), with a client certificate.
lz_remote_toml() {
    if [ "${LZ_REMOTE_TLS:-0}" = 1 ]; then
        cat <<TOML
[checkpoint.remote]
url = "rediss://$LZ_REDIS_IP:6380"
tls_ca_file = "$LZ_REDIS_DIR/tls/ca.crt"
tls_cert_file = "$LZ_REDIS_DIR/tls/appliance.crt"
tls_key_file = "$LZ_REDIS_DIR/tls/appliance.key"
TOML
    else
        echo '[checkpoint.remote]'
        echo "url = \"redis://$LZ_REDIS_IP:6379\""
    fi
    cat <<TOML
user = "lazarus"
password_file = "$LZ_REDIS_DIR/redis.pass"
hmac_key_file = "$LZ_REDIS_DIR/remote.key"
namespace = "$LZ_REMOTE_NS"
restore_timeout_ms = 5000
role = "${1:-active}"
appliance = "${2:-}"
TOML
}

lz_redis_cleanup() {
    lz_redis_kill
    ip netns pids "$LZ_NS_R" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$LZ_NS_R" 2>/dev/null || true
    ip link del "${LZ_VE_R}r" 2>/dev/null || true
}

# ------------------------------------------------------ a second appliance
# Appliance B (docs/CHECKPOINT.md, "A standby appliance"): its own EAL prefix,
# taps, segments and work directory, run by the same functions through
# lz_as_b, which swaps in what they read. Its taps stay out of the bridges
# until lz_failover.
LZ_B_ID=$(( (LZ_ID + 1) % 100000 ))
LZ_B_TAP_C=lztc$LZ_B_ID; LZ_B_TAP_S=lzts$LZ_B_ID
LZ_B_CKPT_DIR=/dev/hugepages/lz$LZ_B_ID-ckpt
LZ_B_WORK=$LZ_WORK/b
LZ_B_DP_PID=; LZ_B_CKPT_PID=; LZ_B_LOG_BASE=0

lz_as_b() {
    mkdir -p "$LZ_B_WORK"
    local a=("$LZ_ID" "$LZ_TAP_C" "$LZ_TAP_S" "$LZ_CKPT_DIR" "$LZ_WORK" "$LZ_DP_PID" "$LZ_CKPT_PID" "${LZ_DP_LOG_BASE:-0}")
    LZ_ID=$LZ_B_ID LZ_TAP_C=$LZ_B_TAP_C LZ_TAP_S=$LZ_B_TAP_S LZ_CKPT_DIR=$LZ_B_CKPT_DIR LZ_WORK=$LZ_B_WORK
    LZ_DP_PID=$LZ_B_DP_PID LZ_CKPT_PID=$LZ_B_CKPT_PID LZ_DP_LOG_BASE=$LZ_B_LOG_BASE
    local rc=0
    "$@" || rc=$?
    LZ_B_DP_PID=$LZ_DP_PID LZ_B_CKPT_PID=$LZ_CKPT_PID LZ_B_LOG_BASE=${LZ_DP_LOG_BASE:-0}
    LZ_ID=${a[0]} LZ_TAP_C=${a[1]} LZ_TAP_S=${a[2]} LZ_CKPT_DIR=${a[3]} LZ_WORK=${a[4]}
    LZ_DP_PID=${a[5]} LZ_CKPT_PID=${a[6]} LZ_DP_LOG_BASE=${a[7]}
    return $rc
}

lz_b_cleanup() {
    {
        for p in $LZ_B_DP_PID $LZ_B_CKPT_PID; do kill -KILL "$p" || true; done
        pgrep -f -- "--file-prefix lz$LZ_B_ID " | xargs -r kill -KILL || true
    } 2>/dev/null
    ip link del "$LZ_B_TAP_C" 2>/dev/null || true
    ip link del "$LZ_B_TAP_S" 2>/dev/null || true
    rm -f /dev/hugepages/lz${LZ_B_ID}map_* 2>/dev/null || true
    rm -rf "/var/run/dpdk/lz$LZ_B_ID" "$LZ_B_CKPT_DIR" "$LZ_CKPT_DIR.old" 2>/dev/null || true
}

# Starts A (joined to the bridges) and B (not), each checkpointd then
# dataplane; $1 A's extra TOML, $2 B's.
lz_pair_start() {
    LZ_WORKERS=${LZ_A_WORKERS:-1} lz_config "" "$LZ_ZONE_POLICY
$1"
    lz_ckpt_start
    LZ_WORKERS=${LZ_A_WORKERS:-1} lz_dp_start
    lz_join_taps
    lz_as_b lz_config "" "$LZ_ZONE_POLICY
$2"
    lz_as_b lz_ckpt_start
    LZ_SUPERVISE=1 lz_as_b lz_dp_start
    lz_wait_path
}

# A's whole box lost (dataplane and checkpointd SIGKILLed, segments gone),
# then what a VRRP failover does: B's taps take A's place in the bridges, and
# B takes over (unless LZ_B_REMOTE=0: B has no mirror to take over from).
# LZ_KEEP_A_SEGMENTS=1 keeps A's segments aside in $LZ_CKPT_DIR.old.
lz_failover() {
    lz_dp_kill
    lz_ckpt_kill
    [ -z "$(lz_worker_pids)" ] || { sleep 0.2; [ -z "$(lz_worker_pids)" ] || lz_fail "A's worker processes outlived their port owner"; }
    if [ "${LZ_KEEP_A_SEGMENTS:-0}" = 1 ]; then mv "$LZ_CKPT_DIR" "$LZ_CKPT_DIR.old"; else rm -rf "$LZ_CKPT_DIR"; fi
    ip link set "$LZ_TAP_C" nomaster; ip link set "$LZ_TAP_S" nomaster
    ip link set "$LZ_TAP_C" down; ip link set "$LZ_TAP_S" down
    lz_as_b lz_join_taps
    if [ "${LZ_B_REMOTE:-1}" = 1 ]; then
        lz_as_b lz_ctl takeover >"$LZ_WORK/takeover.txt" 2>&1 \
            || { cat "$LZ_WORK/takeover.txt"; tail -20 "$LZ_B_WORK/checkpointd.log"; lz_fail "lazarusctl takeover failed"; }
    fi
}

# Polls checkpointd's status until the Python expression $1 holds of its
# remote dict `r` (at most 10 s); the last status in $LZ_STATUS. Returns 1
# when it never did.
lz_wait_remote() {
    local _
    for _ in $(seq 1 100); do
        LZ_STATUS=$(lz_ckpt_ask '{"cmd":"status"}')
        python3 -c 'import json,sys; r=json.loads(sys.argv[1])["remote"]; sys.exit(0 if eval(sys.argv[2]) else 1)' "$LZ_STATUS" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# The verdict of a run of lz_kill_traffic tagged $1 over $LZ_CONNS streams:
# "OK", or what broke.
lz_verdict() {
    local tag=$1 ok rst kres sha
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("ok", 0))' "$LZ_WORK/$tag.streams.json" 2>/dev/null || echo 0)
    read -r rst _ _ <"$LZ_WORK/$tag.rst"; kres=$(cat "$LZ_WORK/$tag.resets")
    sha=$( { sha256sum < "$LZ_WORK/$tag.ftp.bin" | cut -c1-64; } 2>/dev/null || true)
    [ "${LZ_NO_FTP:-0}" != 1 ] || sha=$LZ_FTP_SHA
    if [ "$ok" = "$LZ_CONNS" ] && [ "$sha" = "$LZ_FTP_SHA" ] && [ "$rst" = 0 ] && [ "$kres" = 0 ]; then
        echo OK
    else
        echo "$ok/$LZ_CONNS streams, ftp $([ "$sha" = "$LZ_FTP_SHA" ] && echo ok || echo broken), $rst RST on the wire, $kres resets"
    fi
}

# The sum over the workers of a /lazarus/workers counter.
lz_stat_sum() {
    lz_ctl stats --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin)['workers']; print(sum(w.get('$1', 0) for w in d.values()))"
}

# Builds the protected-server tests' program (echo server, line and redis
# clients: lazarus-core/examples/protect_bridge.rs) and sets APP to it.
lz_protect_app() {
    [ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
    (cd "$LZ_ROOT" && PATH="$HOME/.cargo/bin:$PATH" cargo build --release --locked -q -p lazarus-core --example protect_bridge)
    APP=$LZ_ROOT/target/release/examples/protect_bridge
}

# Waits for the protected tests' clients, pids in CLIENT_PIDS, outputs in
# $LZ_WORK/TAG.clientN.out ("ok LINES LONGEST_US" each): sets WAIT_OK,
# WAIT_FAILED, WAIT_LINES, WAIT_LONGEST_US and WAIT_ERROR (the first
# failure's first line). Not in a subshell: it waits for this shell's
# children.
lz_wait_clients() {
    local i n us out
    WAIT_OK=0 WAIT_FAILED=0 WAIT_LINES=0 WAIT_LONGEST_US=0 WAIT_ERROR=
    for i in "${!CLIENT_PIDS[@]}"; do
        out=$LZ_WORK/$1.client$((i + 1)).out
        if wait "${CLIENT_PIDS[$i]}"; then
            WAIT_OK=$((WAIT_OK + 1))
            read -r _ n us < "$out"
            WAIT_LINES=$((WAIT_LINES + n)); [ "$us" -le "$WAIT_LONGEST_US" ] || WAIT_LONGEST_US=$us
        else
            WAIT_FAILED=$((WAIT_FAILED + 1))
            [ -n "$WAIT_ERROR" ] || WAIT_ERROR=$(head -1 "$out")
        fi
    done
}

# The protected services of tests/e2e/protected*.sh.
LZ_ECHO=$LZ_SERVER_IP:7000
LZ_REDIS=$LZ_SERVER_IP:6379

# Starts $CLIENTS line clients of the echo server for $1 seconds, outputs
# tagged $2; their pids in CLIENT_PIDS.
lz_echo_clients() {
    lz_clients client "$1" "$2"
}

# Starts $CLIENTS clients of $LZ_ECHO in the client namespace: $1 the APP's
# client mode (client, half-close, ...), $2 its argument, $3 the outputs'
# tag; their pids in CLIENT_PIDS.
lz_clients() {
    local i
    CLIENT_PIDS=()
    for i in $(seq 1 "$CLIENTS"); do
        ip netns exec "$LZ_NS_C" "$APP" "$1" "$LZ_ECHO" "$2" >"$LZ_WORK/$3.client$i.out" 2>&1 &
        CLIENT_PIDS+=($!); LZ_PIDS+=($!)
    done
}

# Waits for the clients tagged $1; VERDICT is "N ok, M failed (first
# error), L answers checked, longest wait W ms".
lz_echo_verdict() {
    lz_wait_clients "$1"
    VERDICT="$WAIT_OK ok, $WAIT_FAILED failed${WAIT_ERROR:+ ($WAIT_ERROR)}, $WAIT_LINES answers checked, longest wait $((WAIT_LONGEST_US / 1000)) ms"
}

# SIGKILLs the server lz_protect_serve started.
lz_kill_server() {
    kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
}

# The echo server dies and the hook says so; the clients are then answered
# by the firewall.
lz_echo_server_down() {
    lz_kill_server
    sleep 0.05
    lz_ctl protect down "$LZ_ECHO" >/dev/null
    sleep 0.3
}

# Starts the server of KIND (echo: protect_bridge APP's line echo; redis:
# redis-server, persistence off) in the server namespace, logging to
# $LZ_WORK/server.TAG.out; waits until it listens. Sets SERVER_PID. A
# fourth argument goes to the echo server (--upper: its answers differ).
lz_protect_serve() {
    local kind=$1 app=$2 out=$LZ_WORK/server.$3.out
    if [ "$kind" = echo ]; then
        ip netns exec "$LZ_NS_S" "$app" serve "$LZ_ECHO" ${4:-} >"$out" 2>&1 &
    else
        ip netns exec "$LZ_NS_S" redis-server --bind "$LZ_SERVER_IP" --port 6379 --save "" \
            --appendonly no --protected-mode no --logfile "" >"$out" 2>&1 &
    fi
    SERVER_PID=$!
    LZ_PIDS+=("$SERVER_PID")
    for _ in $(seq 1 500); do
        if [ "$kind" = echo ]; then
            grep -q ready "$out" 2>/dev/null && return
        else
            [ "$(lz_in_server redis-cli -h "$LZ_SERVER_IP" -p 6379 ping 2>/dev/null)" = PONG ] && return
        fi
        sleep 0.01
    done
    lz_fail "the $kind server did not start: $(cat "$out")"
}
