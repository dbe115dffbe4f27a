#!/usr/bin/env bash
# Protected servers through the dataplane's own death (issue 21, slice 3):
# 30 line clients echo through a [[protected]] line-echo server, behind the
# dataplane with checkpointd; each log is truncated at every answered line
# (here and in checkpointd). The dataplane is SIGKILLed three times, each
# time at a point of a recovery:
#  1. while the server is down (killed, the hook said down): the server
#     comes back while no dataplane runs, so the hook's "up" finds nobody;
#  2. after the splice: every connection now runs on a restarted server,
#     its numbers rewritten both ways;
#  3. right after the hook's "up", while the replays are in flight;
#  4. while the server is down again, after checkpointd was restarted
#     (its copy, in its memory, lost): the dataplane told the new one
#     everything again.
# Every client sees every echo byte for byte and no error, and the
# restarted dataplane counts the protected connections it rebuilt from
# checkpointd. Control: the same first kill with protection on but
# checkpointd's copy of protected connections lost (checkpointd restarted
# with the dataplane dead), whose clients fail.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

lz_protect_app
CLIENTS=30

restart_dataplane() {
    lz_dp_start
    lz_join_taps
}

# The server dies, the hook says so, then the dataplane dies too.
server_then_dataplane_die() {
    lz_echo_server_down
    lz_dp_kill
}

export LZ_CHECKPOINT=true
lz_ns_up
lz_config "" "$(printf '[[protected]]\naddr = "%s"\nport = 7000\nhold_ms = 2000\ndown_max_ms = 20000\ntruncation = "request-response"' "$LZ_SERVER_IP")"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
lz_protect_serve echo "$APP" on.0
lz_echo_clients 18 on
sleep 1.5

# 1. The dataplane dies while the server is down.
server_then_dataplane_die
lz_protect_serve echo "$APP" on.1
restart_dataplane
restored1=$(lz_stat_sum protect_restored)
lz_log "killed while the server was down: $restored1 protected connections restored"
sleep 3
spliced1=$(lz_stat_sum protect_spliced)

# The operator's view: each connection's protection beside its tracking.
shown=$(lz_ctl conns 2>/dev/null | grep -c " protect=up log=[0-9]* recoveries=1" || true)
lz_log "lazarusctl conns shows $shown connections protected, up again after one recovery"
[ "$shown" -ge "$CLIENTS" ] || { lz_ctl conns | head -3; lz_fail "lazarusctl conns shows $shown protected connections after the recovery, not $CLIENTS"; }

# 2. The dataplane dies after the splice.
lz_dp_kill
restart_dataplane
restored2=$(lz_stat_sum protect_restored)
lz_log "killed after the splice ($spliced1 recoveries): $restored2 restored"
sleep 2

# 3. The dataplane dies while the replays are in flight.
lz_echo_server_down
lz_protect_serve echo "$APP" on.3
lz_ctl protect up "$LZ_ECHO" >/dev/null
lz_dp_kill
restart_dataplane
restored3=$(lz_stat_sum protect_restored)
sleep 3
spliced3=$(lz_stat_sum protect_spliced)

# 4. checkpointd restarts; then the dataplane dies while the server is down.
lz_ckpt_kill
lz_ckpt_start
sleep 0.5
rewritten=$(lz_stat_sum protect_rewritten)
server_then_dataplane_die
lz_protect_serve echo "$APP" on.4
restart_dataplane
restored4=$(lz_stat_sum protect_restored)
refused=$(lz_stat_sum protect_restore_refused)
sleep 3
spliced4=$(lz_stat_sum protect_spliced)
lz_echo_verdict on
on="$VERDICT; restored $restored1, $restored2, $restored3, $restored4 ($refused refused at the last), recoveries after the first kill $spliced1, the third $spliced3, the fourth $spliced4; rewritten to a new checkpointd $rewritten"
lz_log "protected, the dataplane killed four times: $on"
[[ "$on" == "$CLIENTS ok, 0 failed"* ]] || { tail -30 "$LZ_WORK/dataplane.log"; lz_fail "protected clients failed across dataplane kills: $on"; }
[ "$rewritten" -ge 1 ] || lz_fail "the dataplane did not write its protected connections to the restarted checkpointd"
for r in "$restored1" "$restored2" "$restored3" "$restored4"; do
    [ "$r" -ge "$CLIENTS" ] || lz_fail "a restart restored $r protected connections, not $CLIENTS: $on"
done
for r in "$spliced1" "$spliced4"; do
    [ "$r" -ge "$CLIENTS" ] || lz_fail "a restart carried $r connections onto the restarted server, not $CLIENTS: $on"
done
lz_kill_server

# Control: the first kill again, with checkpointd's copy of the protected
# connections gone (it restarted while the dataplane was dead).
lz_protect_serve echo "$APP" off.0
lz_echo_clients 6 off
sleep 1.5
server_then_dataplane_die
lz_ckpt_kill
lz_ckpt_start
lz_protect_serve echo "$APP" off.1
restart_dataplane
lz_echo_verdict off
off=$VERDICT
lz_log "control, checkpointd's copy lost: $off"
[[ "$off" == "0 ok"* ]] || lz_fail "control: clients passed without checkpointd's copy: the test cannot tell ($off)"
lz_kill_server
lz_dp_stop
echo "PASS protected_restart: $CLIENTS line clients through four dataplane SIGKILLs (server down, after the splice, right after the hook's up, server down after a checkpointd restart): $on; control without checkpointd's copy: $(cut -d, -f1-2 <<<"$off")"
