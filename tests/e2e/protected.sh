#!/usr/bin/env bash
# Protected servers through the dataplane (issue 21, slices 1 and 2): 50
# line clients in the client namespace echo through a line-echo server in
# the server namespace, behind the dataplane with the server as a
# [[protected]] service; then 20 redis sessions count with SET, INCR and GET
# through redis-server (persistence off), also protected. The server is SIGKILLed and restarted three times, the last
# time at once; the hook's word
# (lazarusctl protect down / up, as systemd's ExecStopPost= and
# ExecStartPost= would say it) follows each kill and start. Every client
# sees every echo byte for byte and no error; redis-server is SIGKILLed and
# restarted twice, and every session's counter goes on where it was (the
# replay rebuilt it). Line clients in an 802.1Q VLAN, and over IPv6, are
# carried through a server crash too. A server whose answers differ after its restart gets
# both sides reset at once, counted. Controls: the same without
# [[protected]], whose clients fail.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

lz_protect_app
FAST_MS=0

# One run of $KIND with $CLIENTS clients: the server killed and restarted
# $ROUNDS times, a second apart; the third time it is back at once (as
# systemd's Restart= does), well within 100 ms.
run() {
    local name=$1 hook=$2 i
    local service=$LZ_ECHO mode=client secs=$((ROUNDS + 2))
    [ "$KIND" = echo ] || { service=$LZ_REDIS; mode=redis-client; }
    lz_protect_serve "$KIND" "$APP" "$name.0"
    CLIENT_PIDS=()
    for i in $(seq 1 $CLIENTS); do
        ip netns exec "$LZ_NS_C" "$APP" $mode "$service" $secs >"$LZ_WORK/$name.client$i.out" 2>&1 &
        CLIENT_PIDS+=($!); LZ_PIDS+=($!)
    done
    sleep 1
    for round in $(seq 1 $ROUNDS); do
        kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
        local t0=$(date +%s%N)
        if [ $round -lt 3 ]; then
            sleep 0.05
            [ "$hook" = 0 ] || lz_ctl protect down "$service" >/dev/null
            sleep 0.25
            lz_protect_serve "$KIND" "$APP" "$name.$round"
        else
            lz_protect_serve "$KIND" "$APP" "$name.$round"
            FAST_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
            [ "$hook" = 0 ] || lz_ctl protect down "$service" >/dev/null
        fi
        [ "$hook" = 0 ] || lz_ctl protect up "$service" >/dev/null
        sleep 1
    done
    lz_wait_clients "$name"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    local fast=
    [ "$ROUNDS" -lt 3 ] || fast=", fast restart back in ${FAST_MS} ms"
    echo "$WAIT_OK ok, $WAIT_FAILED failed${WAIT_ERROR:+ ($WAIT_ERROR)}, $WAIT_LINES answers checked, longest wait for an answer $((WAIT_LONGEST_US / 1000)) ms$fast"
}


# The VLAN path and IPv6 too (tests/e2e/vlan_tagger.py tags the
# namespaces' frames in the VLAN).
LZ_MORE_FLOWS=1
lz_ns_up
# The echo server keeps nothing between lines: its logs are truncated at
# every answered line. redis keeps its counters in memory: its sessions'
# logs are kept whole, so a replay rebuilds them.
# A fourth service, 7002, names a probe address: it is judged on the
# wire, without the hook. A fifth, 7003, is reached in VLAN $LZ_VLAN; a
# sixth, 7004, over IPv6, probed from an IPv6 address.
PROBE_IP=10.99.0.250
lz_config "" "$(printf '[[protected]]\naddr = "%s"\nport = 7000\nhold_ms = 2000\ntruncation = "request-response"\n\n[[protected]]\naddr = "%s"\nport = 6379\nhold_ms = 2000\n\n[[protected]]\naddr = "%s"\nport = 7001\nhold_ms = 2000\n\n[[protected]]\naddr = "%s"\nport = 7002\nhold_ms = 2000\ntruncation = "request-response"\nprobe_addr = "%s"\nprobe_mac = "02:00:00:00:00:fa"\n\n[[protected]]\naddr = "%s"\nport = 7003\nhold_ms = 2000\ntruncation = "request-response"\n\n[[protected]]\naddr = "%s"\nport = 7004\nhold_ms = 2000\ntruncation = "request-response"\nprobe_addr = "fd99::fa"\nprobe_mac = "02:00:00:00:00:fb"' "$LZ_SERVER_IP" "$LZ_SERVER_IP" "$LZ_SERVER_IP" "$LZ_SERVER_IP" "$PROBE_IP" "$LZ_SERVER_IPV" "$LZ_SERVER_IP6")"
lz_dp_start
lz_join_taps
lz_wait_path
KIND=echo CLIENTS=50 ROUNDS=3
echo_on=$(run echo-on 1)
spliced=$(lz_stat_sum protect_spliced)
truncated=$(lz_stat_sum protect_truncated)
echo_on="$echo_on, $spliced recoveries counted, logs truncated $truncated times"
lz_log "line echo, protected: $echo_on"
[[ "$echo_on" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "protected line clients failed: $echo_on"; }
[ "$spliced" -ge $((ROUNDS * CLIENTS)) ] || lz_fail "the dataplane counted $spliced recoveries, not $((ROUNDS * CLIENTS))"
lines=$(sed -n 's/.* \([0-9]*\) answers checked.*/\1/p' <<<"$echo_on")
# Nearly every answered line is a quiet point (one in flight when its
# server dies is not).
[ "$truncated" -ge $((lines * 9 / 10)) ] || lz_fail "the logs were truncated $truncated times for $lines answered lines"

longest=$(sed -n 's/.*longest wait for an answer \([0-9]*\) ms.*/\1/p' <<<"$echo_on")
# The client waits for the server's restart (about 300 ms here) and the
# replay, not for its own retransmission or probe timers: generous bound.
[ "$longest" -lt 800 ] || lz_fail "a client waited $longest ms for an echo"
KIND=redis CLIENTS=20 ROUNDS=2
redis_on=$(run redis-on 1)
lz_log "redis, protected: $redis_on"
[[ "$redis_on" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "protected redis sessions failed: $redis_on"; }

# A run of 10 line clients as `run` (NAME, HOOK) that must carry every
# client through the crash, one recovery each at least: sets ACT to its
# verdict, LABEL naming it.
act() {
    local name=$1 hook=$2 label=$3 before
    before=$(lz_stat_sum protect_spliced)
    KIND=echo CLIENTS=10 ROUNDS=1
    ACT=$(run "$name" "$hook")
    local spliced=$(( $(lz_stat_sum protect_spliced) - before ))
    ACT="$ACT, $spliced recoveries"
    [[ "$ACT" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "protected line clients $label failed: $ACT"; }
    [ "$spliced" -ge "$CLIENTS" ] || lz_fail "fewer recoveries than clients $label: $ACT"
}

# In VLAN $LZ_VLAN (service 7003 at its own address): every frame the
# firewall sends for these connections (answers, the replay) must carry
# their tag, or the tagger, which passes only tagged frames, drops it and
# the clients fail.
LZ_ECHO=$LZ_SERVER_IPV:7003
act vlan-on 1 "in VLAN $LZ_VLAN"
vlan_on=$ACT
lz_log "line echo in VLAN $LZ_VLAN, protected: $vlan_on"

# Over IPv6 (service 7004), without the hook: the firewall's answers,
# replay and probes are IPv6 segments, and the server finds the probe
# address through neighbour discovery, which the firewall answers.
LZ_ECHO="[$LZ_SERVER_IP6]:7004"
nd_before=$(lz_stat_sum protect_arp_answered) down_before=$(lz_stat_sum protect_wire_down)
act v6-on 0 "over IPv6"
down=$(( $(lz_stat_sum protect_wire_down) - down_before ))
v6_on="$ACT, $down found down by probes, $(( $(lz_stat_sum protect_arp_answered) - nd_before )) neighbour solicitations answered"
lz_log "line echo over IPv6, protected: $v6_on"
[ "$down" -ge "$CLIENTS" ] || lz_fail "the probes did not find the IPv6 service down: $v6_on"

# A server whose answers differ after its restart (in capitals): the
# replay's check against the digest fails, and both sides are reset at
# once, counted; no client is left hanging on its 5 s read timeout. Its
# service (port 7001) keeps whole logs: with truncation, a connection at a
# quiet point when the server dies has nothing to check, and would meet
# the difference in its next answer instead.
CLIENTS=10
LZ_ECHO=$LZ_SERVER_IP:7001
diverged_before=$(lz_stat_sum protect_diverged)
lz_protect_serve echo "$APP" diverge.0
div_pids=()
for i in $(seq 1 $CLIENTS); do
    ip netns exec "$LZ_NS_C" "$APP" client "$LZ_ECHO" 8 >"$LZ_WORK/diverge.client$i.out" 2>&1 &
    div_pids+=($!); LZ_PIDS+=($!)
done
sleep 1
kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
lz_ctl protect down "$LZ_ECHO" >/dev/null
sleep 0.1
lz_protect_serve echo "$APP" diverge.1 --upper
t0=$(date +%s%N)
lz_ctl protect up "$LZ_ECHO" >/dev/null
reset=0
for i in "${!div_pids[@]}"; do
    if ! wait "${div_pids[$i]}" && grep -q "reset by peer" "$LZ_WORK/diverge.client$((i + 1)).out"; then
        reset=$((reset + 1))
    fi
done
div_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
diverged=$(( $(lz_stat_sum protect_diverged) - diverged_before ))
kill -KILL "$SERVER_PID" 2>/dev/null || true
div="$reset of $CLIENTS clients reset in $div_ms ms, $diverged divergences counted"
lz_log "a server whose answers differ after its restart: $div"
if [ "$reset" != "$CLIENTS" ]; then
    for i in $(seq 1 $CLIENTS); do grep -q "reset by peer" "$LZ_WORK/diverge.client$i.out" || tail -3 "$LZ_WORK/diverge.client$i.out"; done
    lz_fail "not every client was reset when the restarted server's answers differed: $div"
fi
[ "$diverged" -ge "$CLIENTS" ] || lz_fail "the dataplane counted $diverged divergences, not $CLIENTS: $div"
[ "$div_ms" -lt 3000 ] || lz_fail "the clients waited $div_ms ms for their reset: $div"

# Without the hook (service 7002, with a probe address): each held FIN is
# judged by a probe from the firewall's own address (an RST: the crash's),
# and the probes that follow while the clients wait find the server back.
LZ_ECHO=$LZ_SERVER_IP:7002
spliced_before=$(lz_stat_sum protect_spliced)
KIND=echo CLIENTS=50 ROUNDS=2
wire_on=$(run wire-on 0)
wire_down=$(lz_stat_sum protect_wire_down)
wire_spliced=$(( $(lz_stat_sum protect_spliced) - spliced_before ))
wire_on="$wire_on, $wire_spliced recoveries, $wire_down connections found down by $(lz_stat_sum protect_probes) probes (listening $(lz_stat_sum protect_probe_listening), refused $(lz_stat_sum protect_probe_refused), silent $(lz_stat_sum protect_probe_silent)), $(lz_stat_sum protect_released) closes released, $(lz_stat_sum protect_arp_answered) ARP requests answered"
lz_log "line echo, protected, no hook, probes: $wire_on"
[[ "$wire_on" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "line clients judged by probes failed: $wire_on"; }
[ "$wire_down" -ge $((ROUNDS * CLIENTS)) ] || lz_fail "probes found $wire_down connections down, not $((ROUNDS * CLIENTS)): $wire_on"
[ "$wire_spliced" -ge $((ROUNDS * CLIENTS)) ] || lz_fail "$wire_spliced recoveries without the hook, not $((ROUNDS * CLIENTS))"

# A half-close: each client sends its 5 lines at once and shuts its writes,
# then reads the echoes, which a slow server gives 300 ms apart. The server
# dies after the second echo; the replay sends the lines and the FIN again,
# and the new server's last three echoes and its close reach every client.
LZ_ECHO=$LZ_SERVER_IP:7002
CLIENTS=10
lz_protect_serve echo "$APP" half.0 "--delay-ms 300"
lz_clients half-close 5 half
sleep 0.8
lz_kill_server
sleep 0.2
lz_protect_serve echo "$APP" half.1 "--delay-ms 300"
lz_echo_verdict half
lz_kill_server
half=$VERDICT
lz_log "half-closed clients through a server crash, probes: $half"
[[ "$half" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "half-closed clients failed through a server crash: $half"; }

# A server host lost without a word: its namespace drops everything, in
# and out (no FIN, no RST). The clients send again into its silence, two
# probes go unanswered, and they are answered for it; the server restarts
# behind the cut, the cut heals, and a probe finds it back.
CLIENTS=10
down_before=$(lz_stat_sum protect_wire_down) silent_before=$(lz_stat_sum protect_probe_silent)
lz_protect_serve echo "$APP" silent.0
lz_echo_clients 4 silent
sleep 1
ip netns exec "$LZ_NS_S" nft -f - <<'EOF'
table inet lzcut {
    chain in { type filter hook input priority 0; policy drop; }
    chain out { type filter hook output priority 0; policy drop; }
}
EOF
sleep 1.2
lz_kill_server
lz_protect_serve echo "$APP" silent.1
ip netns exec "$LZ_NS_S" nft delete table inet lzcut
lz_echo_verdict silent
lz_kill_server
silent="$VERDICT, $(( $(lz_stat_sum protect_wire_down) - down_before )) connections found down after $(( $(lz_stat_sum protect_probe_silent) - silent_before )) unanswered probes"
lz_log "a server host cut off without a FIN or RST, probes: $silent"
[[ "$silent" == "$CLIENTS ok, 0 failed"* ]] || { tail -20 "$LZ_WORK/dataplane.log"; lz_fail "clients of a silent server host failed: $silent"; }

# A close is not a crash: the echo server closes after "bye". A probe
# finds the service listening, and the close reaches the client at once;
# with the hook alone (7000), only when hold_ms (2 s) runs out.
lz_protect_serve echo "$APP" close.wire
wire_close=$(ip netns exec "$LZ_NS_C" "$APP" close-client "$LZ_ECHO") || lz_fail "close through probes: $wire_close"
kill -KILL "$SERVER_PID" 2>/dev/null || true
LZ_ECHO=$LZ_SERVER_IP:7000
lz_protect_serve echo "$APP" close.hook
hook_close=$(ip netns exec "$LZ_NS_C" "$APP" close-client "$LZ_ECHO") || lz_fail "close with the hook alone: $hook_close"
lz_kill_server
wire_close=${wire_close#closed } hook_close=${hook_close#closed }
closes="a server's close reached its client in $wire_close ms with probes, $hook_close ms with the hook alone"
lz_log "$closes"
[ "$wire_close" -lt 500 ] || lz_fail "a close judged by a probe took $wire_close ms"
[ "$hook_close" -ge 1900 ] || lz_fail "control: a close without probes took $hook_close ms, not hold_ms: the test cannot tell"

# Control: the same without the hook and without probes (7000): the held
# FINs are released as closes, and the clients fail.
KIND=echo CLIENTS=10 ROUNDS=1
wire_off=$(run wire-off 0)
lz_log "control, no hook and no probes: $wire_off"
[[ "$wire_off" == "0 ok"* ]] || lz_fail "control: clients passed with neither hook nor probes: $wire_off"
lz_dp_stop

lz_config ""
lz_dp_start
lz_wait_path
KIND=echo CLIENTS=10 ROUNDS=1
echo_off=$(run echo-off 0)
KIND=redis CLIENTS=10 ROUNDS=1
redis_off=$(run redis-off 0)
LZ_ECHO=$LZ_SERVER_IPV:7003 KIND=echo CLIENTS=10 ROUNDS=1
vlan_off=$(run vlan-off 0)
LZ_ECHO="[$LZ_SERVER_IP6]:7004"
v6_off=$(run v6-off 0)
lz_log "controls (not protected): line echo: $echo_off; redis: $redis_off; in VLAN $LZ_VLAN: $vlan_off; over IPv6: $v6_off"
[[ "$echo_off" == "0 ok"* && "$redis_off" == "0 ok"* && "$vlan_off" == "0 ok"* && "$v6_off" == "0 ok"* ]] || lz_fail "control: clients passed without protection: the test cannot tell ($echo_off; $redis_off; $vlan_off; $v6_off)"
lz_dp_stop
echo "PASS protected: through the dataplane, line echo with the server SIGKILLed and restarted three times (once back at once): $echo_on; without the hook, by probes: $wire_on; a server host cut off: $silent; half-closed clients: $half; $closes; redis with redis-server SIGKILLed twice: $redis_on; in VLAN $LZ_VLAN: $vlan_on; over IPv6: $v6_on; a server whose answers differ after its restart: $div; controls without [[protected]]: $(cut -d, -f1-2 <<<"$echo_off"), $(cut -d, -f1-2 <<<"$redis_off"), $(cut -d, -f1-2 <<<"$vlan_off") and $(cut -d, -f1-2 <<<"$v6_off")"
