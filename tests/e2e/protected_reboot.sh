#!/usr/bin/env bash
# Protected servers through the box's own loss (issue 21, the remote log):
# 20 line clients echo through a [[protected]] line-echo server that keeps
# its whole session (no truncation), behind the dataplane with checkpointd,
# which copies every connection, the protected ones with their client logs,
# to Debian's redis-server in a namespace of its own (the remote device).
#  1. The server dies (the hook says down), then the whole box: the
#     dataplane and checkpointd are SIGKILLed and their segments deleted,
#     as a reboot leaves them. The server comes back while nothing runs;
#     checkpointd restores the connections and their logs from Redis, the
#     dataplane rebuilds them, replays each log to the new server and
#     splices: no client sees an error.
#  2. The server dies again, then the dataplane and checkpointd, this time
#     with their segments kept: the logs, which lived in checkpointd's
#     memory, come back from Redis beside the local store.
#  3. The server dies again, then the box for good: a standby appliance,
#     whose checkpointd mirrored the remote copy all along, takes over
#     (lazarusctl takeover) and carries every connection onto the
#     restarted server.
# Control: a reboot of the standby, now active, with Redis's copy deleted
# while it is down, whose clients fail.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

command -v redis-server >/dev/null || lz_fail "redis-server missing: run scripts/setup.sh"
lz_protect_app
CLIENTS=20

# The server dies and the hook says so; then the box: $1 "reboot" deletes
# the segments too, "crash" keeps them. $2 runs while nothing runs.
box_dies() {
    lz_echo_server_down
    lz_dp_kill
    lz_ckpt_kill
    [ "$1" = reboot ] && rm -rf "$LZ_CKPT_DIR"
    ${2:-true}
    lz_protect_serve echo "$APP" "$3"
    lz_ckpt_start
    lz_dp_start
    lz_join_taps
}

protect_sent() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["remote"]["module_portions"]["protect"])' "$(lz_ckpt_ask '{"cmd":"status"}')"; }

lz_ns_up
lz_redis_up
export LZ_CHECKPOINT=true
protected=$(printf '[[protected]]\naddr = "%s"\nport = 7000\nhold_ms = 2000\ndown_max_ms = 20000\nclose_linger_ms = 3000' "$LZ_SERVER_IP")
lz_pair_start "$(lz_remote_toml active A)
$protected" "$(lz_remote_toml standby B)
$protected"
lz_protect_serve echo "$APP" on.0
lz_echo_clients 20 on
sleep 1.5
sent=$(protect_sent)
[ "$sent" -ge "$CLIENTS" ] || lz_fail "checkpointd sent $sent protected portions to Redis, fewer than the $CLIENTS connections"
# Only new log bytes cross the network: a byte is sent again only when its
# chunk grows by half, a few times at most, not at every change (about 60
# times what the logs hold, at this point, if they were sent whole).
copy=$(python3 - "$(lz_ckpt_ask '{"cmd":"status"}')" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
held, sent = s["protected"]["log_bytes"], s["remote"]["log_chunk_bytes"]
print(f"{held} {sent} {s['remote']['module_portions']['protect']}")
PY
)
read -r held chunked heads <<<"$copy"
lz_log "remote copy: $heads protected changes sent, $chunked log bytes in chunks for $held held"
[ "$chunked" -le $((8 * held + 65536)) ] || lz_fail "the remote copy sent $chunked log bytes for $held held: logs are sent again whole"
[ "$chunked" -ge $((held / 2)) ] || lz_fail "the remote copy sent $chunked log bytes for $held held"

# 1. A reboot.
box_dies reboot true on.1
restored1=$(lz_stat_sum protect_restored)
from_redis=$(grep -o 'restored [0-9]* connection(s) and [0-9]* protected' "$LZ_WORK/checkpointd.log" | tail -1 | grep -o '[0-9]* protected' | grep -o '[0-9]*')
sleep 3
spliced1=$(lz_stat_sum protect_spliced)
lz_log "rebooted while the server was down: checkpointd restored ${from_redis:-0} protected connection logs from Redis, the dataplane $restored1 protected, $spliced1 carried onto the new server"

# 2. Both processes die, their segments kept.
box_dies crash true on.2
restored2=$(lz_stat_sum protect_restored)
sleep 3
spliced2=$(lz_stat_sum protect_spliced)
# 3. The box is lost for good: the standby takes over.
lz_echo_server_down
mirrored=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["protected"]["conns"])' "$(lz_as_b lz_ckpt_ask '{"cmd":"status"}')")
lz_failover
lz_protect_serve echo "$APP" on.3
sleep 3
restored3=$(lz_as_b lz_stat_sum protect_restored)
spliced3=$(lz_as_b lz_stat_sum protect_spliced)
lz_echo_verdict on
on="$VERDICT; after the reboot restored $restored1, carried over $spliced1; after the crash restored $restored2, carried over $spliced2; the standby mirrored $mirrored, restored $restored3, carried over $spliced3"
lz_log "protected, the box lost three times: $on"
[[ "$on" == "$CLIENTS ok, 0 failed"* ]] || { tail -30 "$LZ_WORK/dataplane.log"; tail -30 "$LZ_B_WORK/dataplane.log"; lz_fail "protected clients failed across the box's loss: $on"; }
for r in "${from_redis:-0}" "$restored1" "$spliced1" "$restored2" "$spliced2" "$mirrored" "$restored3" "$spliced3"; do
    [ "$r" -ge "$CLIENTS" ] || lz_fail "a restart restored or carried over $r protected connections, not $CLIENTS: $on"
done
# The clients closed: within the close's linger (close_linger_ms after
# their last segments) the standby, active now, ends their entries, and their heads
# and chunks leave Redis, those the old active wrote too (adopted at the
# takeover).
b_protected() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["protected"]["conns"])' "$(lz_as_b lz_ckpt_ask '{"cmd":"status"}')"; }
protect_fields() {
    for k in $(lz_redis_cli --scan --pattern "lazarus:{$LZ_REMOTE_NS:*}"); do lz_redis_cli --raw HKEYS "$k"; done | grep -cE '^[0-9a-f]{16}\.[0-9a-f]{16}$' || true
}
for _ in $(seq 1 100); do [ "$(b_protected)" = 0 ] && [ "$(protect_fields)" = 0 ] && break; sleep 0.2; done
[ "$(b_protected)" = 0 ] || lz_fail "$(b_protected) protected entries still held 20 s after their connections closed"
[ "$(protect_fields)" = 0 ] || lz_fail "$(protect_fields) log chunks left in Redis after every protected connection closed"
grep -q "restored [1-9][0-9]* protected connection log(s) from the remote store" "$LZ_WORK/checkpointd.log" \
    || lz_fail "checkpointd did not read the protected connections' logs back from Redis at a start with its segments"
lz_kill_server

# Control: the standby, active now, rebooted with Redis's copy deleted
# while it is down.
lz_protect_serve echo "$APP" off.0
lz_echo_clients 6 off
sleep 1.5
flush() { lz_redis_admin FLUSHALL >/dev/null; }
lz_as_b box_dies reboot flush off.1
lz_echo_verdict off
off=$VERDICT
lz_log "control, Redis's copy deleted: $off"
[[ "$off" == "0 ok"* ]] || lz_fail "control: clients passed without Redis's copy: the test cannot tell ($off)"
lz_kill_server
lz_as_b lz_dp_stop
echo "PASS protected_reboot: $CLIENTS line clients (whole sessions logged) through the box's loss with their server down, logs restored from Redis, then a standby's takeover: $on; control without Redis's copy: $(cut -d, -f1-2 <<<"$off")"
