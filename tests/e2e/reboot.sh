#!/usr/bin/env bash
# The box loses everything: connections come back from the remote store.
#
# checkpointd copies every connection to Debian's redis-server, running in a
# namespace of its own (the remote device) behind an ACL user, each portion
# sealed with an HMAC (docs/CHECKPOINT.md#remote). Under 50 verified TCP
# streams, an active-mode FTP download, iperf3, a UDP flow and a ping, the
# dataplane (its port owner, so its worker processes die too) and checkpointd
# are SIGKILLed and their segments deleted, as a reboot would leave them; the
# pair is started again on the same taps. checkpointd restores the store from
# Redis before its first heartbeat, the dataplane restores from the store
# before its ports start: every stream completes with every byte verified,
# the FTP sha256 matches, no reset.
# The control: the same with the remote copy off breaks the connections.
# Then the faults: Redis restarted mid-run without its data (resent), Redis
# out of memory (refused writes counted, retried), Redis stalled (the
# dataplane and the local path unaffected), a forged record, a record
# transplanted onto another connection (both refused), a wrong password
# (refused at start), and Redis down at start. Then a reboot with the copy
# over TLS, and certificates that must be refused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT
set -E
trap 'echo "reboot.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

[ -x "$LZ_BIN" ] && [ -x "$LZ_CKPT_BIN" ] || lz_fail "build first (cargo build --release)"
command -v redis-server >/dev/null || lz_fail "redis-server missing: run scripts/setup.sh"
LZ_SECS=${LZ_REBOOT_SECS:-9}
LZ_KILL_AT=3
LZ_CONNS=50

# What a reboot leaves: no dataplane, no checkpointd, no segments; the taps
# persist (the test's stand-in for the NICs), then the pair starts again.
lz_reboot() {
    lz_dp_kill
    lz_ckpt_kill
    [ -z "$(lz_worker_pids)" ] || { sleep 0.2; [ -z "$(lz_worker_pids)" ] || lz_fail "worker processes outlived their port owner"; }
    rm -rf "$LZ_CKPT_DIR"
    lz_ckpt_start
    lz_dp_start
    lz_join_taps
}

# Verdicts; $1 tag. Prints "OK" or what broke.

lz_ns_up
lz_kill_servers
lz_redis_up
export LZ_CHECKPOINT=true

# ------------------------------------------------------- remote copy on
lz_config "" "$LZ_ZONE_POLICY
$(lz_remote_toml)"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
LZ_DISRUPT=lz_reboot lz_kill_traffic on
v=$(lz_verdict on)
restored=$(grep -o 'restored [0-9]* connection(s)' "$LZ_WORK/checkpointd.log" | tail -1 | grep -o '[0-9]*')
[ "$v" = OK ] || { tail -30 "$LZ_WORK/checkpointd.log"; cat "$LZ_WORK/on.streams.err"; lz_fail "remote copy on: $v ($restored connections restored from Redis)"; }
[ "${restored:-0}" -ge "$LZ_CONNS" ] || lz_fail "only ${restored:-0} connections restored from Redis"
outage=$(lz_outage_ms "$LZ_WORK/on.fwd.pcap" "$LZ_WORK/on.times")
lz_log "on: $LZ_CONNS/$LZ_CONNS streams verified, FTP sha256 ok, 0 resets; $restored connections restored from Redis; outage $outage ms"
status=$(lz_ckpt_ask '{"cmd":"status"}')
python3 - "$status" <<'PY' || lz_fail "checkpointd's remote status after the reboot: $status"
import json, sys
r = json.loads(sys.argv[1])["remote"]
assert r["up"] and not r["fenced"] and r["restored_conns"] >= 50 and r["restore_forged"] == 0, r
PY

# ------------------------------ Redis restarted mid-run, without its data
# No persistence: the restart loses every key. The connections are idle now
# (the traffic is over), so only the writer's check can bring them back: it
# reconnects, finds the buckets it wrote gone, and sends their connections
# again.
conns_held() { # connection fields in the remote store
    for k in $(lz_redis_cli --scan --pattern "lazarus:{$LZ_REMOTE_NS:*}"); do lz_redis_cli --raw HKEYS "$k"; done | grep -cE '^[0-9a-f]{16}$' || true
}
stored=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["store"]["conns"])' "$status")
[ "$(conns_held)" -ge "$stored" ] || lz_fail "before the Redis restart the remote store holds $(conns_held) of $stored connections"
lz_redis_kill
lz_redis_start
lz_wait_remote 'r["up"] and r["buckets_resynced"] > 0 and r["pending"] == 0' || true
st=$LZ_STATUS
held=$(conns_held)
[ "$held" -ge "$stored" ] || lz_fail "after the Redis restart the remote store holds $held of $stored connections: $st"
lz_log "Redis restarted without its data: checkpointd resent $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["remote"]["buckets_resynced"])' "$st") lost bucket(s); $held of $stored connections back in Redis"

remote_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["remote"][sys.argv[2]])' "$(lz_ckpt_ask '{"cmd":"status"}')" "$1"; }
store_conns() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["store"]["conns"])' "$(lz_ckpt_ask '{"cmd":"status"}')"; }
short_streams() { # 10 short verified TCP connections through the dataplane
    lz_in_client python3 "$LZ_STREAMS" tcp-client --server "$LZ_SERVER_IP" --port 7000 --conns 10 --bytes 20000 --rate 200000 --stall 5 --seed "$1" >"$LZ_WORK/short.$1.json" 2>&1 \
        || lz_fail "short streams through the dataplane broke while Redis was $2: $(cat "$LZ_WORK/short.$1.json")"
}
wait_synced() { # until nothing is pending and Redis holds every stored connection
    for _ in $(seq 1 100); do
        [ "$(remote_field pending)" = 0 ] && [ "$(remote_field up)" = True ] && [ "$(conns_held)" -ge "$(store_conns)" ] && return 0
        sleep 0.1
    done
    lz_fail "after $1 the remote copy did not catch up: $(lz_ckpt_ask '{"cmd":"status"}')"
}

# ------------------------------------------------- Redis out of memory
# maxmemory below what it uses: every write script is refused (OOM). The
# dataplane and the local store go on; the refused changes are counted and
# queued again, and land once memory is back.
lz_redis_admin CONFIG SET maxmemory-policy noeviction >/dev/null
lz_redis_admin CONFIG SET maxmemory 1 >/dev/null
refused0=$(remote_field refused_calls)
short_streams 11 "out of memory"
for _ in $(seq 1 50); do [ "$(remote_field refused_calls)" -gt "$refused0" ] && break; sleep 0.1; done
[ "$(remote_field refused_calls)" -gt "$refused0" ] || lz_fail "Redis out of memory: no refused write counted"
kill -0 "$LZ_CKPT_PID" || lz_fail "checkpointd died with Redis out of memory"
grep -q "out of memory (maxmemory)" "$LZ_WORK/checkpointd.log" || lz_fail "checkpointd did not say Redis is out of memory"
lz_redis_admin CONFIG SET maxmemory 0 >/dev/null
wait_synced "memory came back"
lz_log "Redis out of memory: $(remote_field refused_calls) refused write(s) counted, the dataplane and local store unaffected, all sent once memory was back"

# ------------------------------------------------------- Redis stalled
# SIGSTOP for 3 s (this kernel has no netem): the writer's calls time out,
# the lag grows; the dataplane and the local path never wait on it.
kill -STOP "$LZ_REDIS_PID"
t0=$(date +%s.%N)
short_streams 12 "stalled"
beat=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rings"][0]["lag"])' "$(lz_ckpt_ask '{"cmd":"status"}')")
[ "$beat" = 0 ] || lz_fail "the local path fell behind while Redis was stalled (ring lag $beat)"
sleep "$(python3 -c "print(max(0, 3 - ($(date +%s.%N) - $t0)))")"
pending=$(remote_field pending)
kill -CONT "$LZ_REDIS_PID"
wait_synced "the stall"
lz_log "Redis stalled 3 s: streams through the dataplane unaffected, ring lag 0, $pending change(s) waited, all sent after"
lz_dp_stop
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || lz_fail "checkpointd did not exit 0 on SIGTERM"; LZ_CKPT_PID=

# ------------------------------------------- faults at restore: forged, transplanted
# Two records the remote store holds: one altered in place, one copied onto
# another connection's field. Neither may be restored; both are counted.
mapfile -t keys < <(lz_redis_cli --scan --pattern "lazarus:{lz$LZ_ID:*}" | head -40)
forged= ; victim= ; donor=
for k in "${keys[@]}"; do
    mapfile -t f < <(lz_redis_cli --raw HKEYS "$k" | grep -E '^[0-9a-f]{16}$' || true)
    if [ -z "$forged" ] && [ ${#f[@]} -ge 1 ]; then forged="$k ${f[0]}"; continue; fi
    if [ -z "$victim" ] && [ ${#f[@]} -ge 2 ]; then victim="$k ${f[0]}"; donor="$k ${f[1]}"; fi
done
[ -n "$forged" ] && [ -n "$victim" ] || lz_fail "the remote store holds too few connections to forge: ${keys[*]}"
forge() { # key field: flip the last byte of the record's first payload
    ip netns exec "$LZ_NS_R" python3 - "$LZ_REDIS_IP" "$(cat "$LZ_WORK/redis.pass")" "$@" <<'PY'
import socket, sys
ip, pw, op = sys.argv[1], sys.argv[2], sys.argv[3]
def cmd(s, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    f = s.makefile("rb")
    line = f.readline()
    if line.startswith(b"$"):
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    if line.startswith(b"-"):
        raise SystemExit(line.decode())
    return line
s = socket.create_connection((ip, 6379))
cmd(s, "AUTH", "lazarus", pw)
if op == "flip":
    key, field = sys.argv[4], sys.argv[5]
    v = bytearray(cmd(s, "HGET", key, field))
    v[40] ^= 1  # inside the first portion's payload
    cmd(s, "HSET", key, field, bytes(v))
else:  # transplant: the donor's sealed record under the victim's field
    key, field, dkey, dfield = sys.argv[4:8]
    cmd(s, "HSET", key, field, cmd(s, "HGET", dkey, dfield))
PY
}
forge flip $forged
forge transplant $victim $donor
rm -rf "$LZ_CKPT_DIR"
base=$(wc -l <"$LZ_WORK/checkpointd.log")
lz_ckpt_start
line=$(tail -n +"$((base + 1))" "$LZ_WORK/checkpointd.log" | grep -o 'restored [0-9]* connection(s).*refused (HMAC)' | tail -1)
refused=$(echo "$line" | grep -o '[0-9]* refused' | grep -o '[0-9]*')
[ "${refused:-0}" = 2 ] || { tail -n +"$((base + 1))" "$LZ_WORK/checkpointd.log"; lz_fail "forged and transplanted records: ${refused:-0} refused, want 2 ($line)"; }
lz_log "forged record and transplanted record: both refused and counted ($line)"
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=

# --------------------------------------------------- wrong password: refused at start
# checkpointd with config $2 must exit 1 at start, naming setting $3 (a
# fault no retry fixes, not an outage); $1 says what is wrong.
refused_at_start() {
    local rc=0
    timeout 20 "$LZ_CKPT_BIN" --config "$2" >"$LZ_WORK/refused.log" 2>&1 || rc=$?
    [ $rc = 1 ] && grep -q "$3" "$LZ_WORK/refused.log" \
        || { cat "$LZ_WORK/refused.log"; lz_fail "$1: exit $rc, want 1 with a message naming $3"; }
    lz_log "$1: refused at start ($(grep -o 'ERROR.*' "$LZ_WORK/refused.log" | head -c 200))"
}
cp "$LZ_WORK/redis.pass" "$LZ_WORK/redis.pass.good"
echo "not-the-password" >"$LZ_WORK/redis.pass"
refused_at_start "wrong password" "$LZ_WORK/dataplane.toml" password_file
mv "$LZ_WORK/redis.pass.good" "$LZ_WORK/redis.pass"

# ------------------------------------- Redis down at start: local checkpointing, retry
lz_redis_kill
lz_ckpt_start
sleep 1
down=$(lz_ckpt_ask '{"cmd":"status"}')
python3 -c 'import json,sys; r=json.loads(sys.argv[1])["remote"]; assert not r["up"] and r["errors"] >= 1, r' "$down" \
    || lz_fail "Redis down: checkpointd's status should say remote down: $down"
lz_redis_start
lz_wait_remote 'r["up"]' \
    || lz_fail "Redis back: checkpointd did not reconnect within 10 s: $LZ_STATUS"
lz_log "Redis down at start: checkpointd ran, reported remote down, reconnected when it came back"
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=
rm -rf "$LZ_CKPT_DIR"

# --------------------------------------------- over TLS: a reboot, bad certificates
# The same reboot with the copy on Redis's TLS port (rediss://, the test's
# own authority, a client certificate as Redis asks by default), under a
# namespace of its own so that only what crossed TLS can come back.
tls_ns=lz$LZ_ID-tls
LZ_REMOTE_NS=$tls_ns LZ_REMOTE_TLS=1 lz_config "" "$LZ_ZONE_POLICY
$(LZ_REMOTE_NS=$tls_ns LZ_REMOTE_TLS=1 lz_remote_toml)"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
LZ_CONNS=20 LZ_NO_FTP=1 LZ_DISRUPT=lz_reboot lz_kill_traffic tls
v=$(LZ_CONNS=20 LZ_NO_FTP=1 lz_verdict tls)
line=$(grep -o 'restored [0-9]* connection(s).*rediss://[^;]*' "$LZ_WORK/checkpointd.log" | tail -1)
restored=$(echo "$line" | grep -o 'restored [0-9]*' | grep -o '[0-9]*')
[ "$v" = OK ] && [ "${restored:-0}" -ge 20 ] \
    || { tail -30 "$LZ_WORK/checkpointd.log"; lz_fail "reboot over TLS: $v; ${restored:-0} connection(s) restored ($line)"; }
lz_log "over TLS: 20/20 streams verified through a reboot, 0 resets; $line"
lz_dp_stop
kill -TERM "$LZ_CKPT_PID"; wait "$LZ_CKPT_PID" || true; LZ_CKPT_PID=
rm -rf "$LZ_CKPT_DIR"
# A certificate checkpointd cannot trust, none where Redis asks for one, one
# Redis does not trust, a key that is not the certificate's: refused at
# start, naming what to fix (not taken for an outage and retried).
refused_tls() { # $1 what, $2 sed expression on the config, $3 the key the error must name
    sed -e "$2" "$LZ_WORK/dataplane.toml" >"$LZ_WORK/tls-bad.toml"
    refused_at_start "TLS with $1" "$LZ_WORK/tls-bad.toml" "$3"
}
refused_tls "another authority" "s|tls/ca.crt|tls/other-ca.crt|" tls_ca_file
refused_tls "no client certificate" "/^tls_cert_file\|^tls_key_file/d" tls_ca_file
refused_tls "a client certificate Redis does not trust" "s|tls/appliance\.|tls/stranger.|g" tls_cert_file
refused_tls "a key of another pair" "s|tls/appliance.key|tls/stranger.key|" tls_key_file

# ------------------------------------------------------ control: remote copy off
lz_config "" "$LZ_ZONE_POLICY"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path
LZ_CONNS=20 LZ_DISRUPT=lz_reboot lz_kill_traffic off
v=$(LZ_CONNS=20 lz_verdict off)
[ "$v" != OK ] || lz_fail "control: with the remote copy off the reboot broke nothing: the test cannot tell"
lz_log "control (remote copy off): $v"
echo "PASS reboot: 50 verified streams + FTP + iperf3 + UDP + ping through a reboot restored from Redis (outage $outage ms), 0 resets; Redis restarted, out of memory, stalled: caught up; forged and transplanted records refused; wrong password refused; a reboot over TLS restored, untrusted, missing or mismatched certificates refused; Redis down at start survived; control without the remote copy: $v"
