#!/usr/bin/env bash
# Output commit at the remote level (issue 21): a [[protected]] line-echo
# service with output_commit = "remote", beside one at the local level and
# one not protected, behind the dataplane with checkpointd copying to
# Debian's redis-server in a namespace of its own (the remote device).
#  1. What each level adds to an echo's round trip: lines one at a time,
#     median and 99th percentile, the three services alternated.
#  2. Redis stopped (SIGSTOP) for a second while line clients echo: the
#     remote level's server answers wait in the firewall until Redis has
#     the lines they acknowledge, so its clients see a second's pause and
#     no error; the local level's clients see no pause (the control).
#  3. The remote level through a crash of the server: every echo checked.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT

command -v redis-server >/dev/null || lz_fail "redis-server missing: run scripts/setup.sh"
lz_protect_app
LOCAL=$LZ_SERVER_IP:7000 REMOTE=$LZ_SERVER_IP:7002 PLAIN=$LZ_SERVER_IP:7003

lz_ns_up
lz_redis_up
export LZ_CHECKPOINT=true
svc() { printf '[[protected]]\naddr = "%s"\nport = %s\nhold_ms = 2000\ntruncation = "request-response"\noutput_commit = "%s"\n\n' "$LZ_SERVER_IP" "$1" "$2"; }
lz_config "" "$(lz_remote_toml active)
$(svc 7000 local)
$(svc 7002 remote)"
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path

declare -A PIDS
for s in LOCAL REMOTE PLAIN; do
    LZ_ECHO=${!s} lz_protect_serve echo "$APP" "$s"
    PIDS[$s]=$SERVER_PID
done

# 1. Round trips, alternated so that the machine's noise falls on all three.
declare -A MED P99
for s in PLAIN LOCAL REMOTE; do MED[$s]=; P99[$s]=; done
for round in 1 2 3; do
    for s in PLAIN LOCAL REMOTE; do
        read -r med p99 < <(ip netns exec "$LZ_NS_C" "$APP" rtt "${!s}" 200) || lz_fail "rtt through $s failed"
        MED[$s]+="$med " P99[$s]+="$p99 "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | sed -n 2p; }
rtt="echo round trip, median of 3 rounds of 200 lines: not protected $(median "${MED[PLAIN]}") µs (p99 $(median "${P99[PLAIN]}")), local level $(median "${MED[LOCAL]}") µs (p99 $(median "${P99[LOCAL]}")), remote level $(median "${MED[REMOTE]}") µs (p99 $(median "${P99[REMOTE]}"))"
lz_log "$rtt"
held=$(lz_stat_sum protect_commit_held)
[ "$held" -gt 0 ] || lz_fail "no server segment was held at the remote level: $rtt"

# 2. Redis stopped for a second while clients of both levels echo.
CLIENTS=10
LZ_ECHO=$REMOTE lz_clients client 3 stop-remote
remote_pids=("${CLIENT_PIDS[@]}")
LZ_ECHO=$LOCAL lz_clients client 3 stop-local
local_pids=("${CLIENT_PIDS[@]}")
sleep 1
kill -STOP "$LZ_REDIS_PID"
sleep 1
waiting=$(lz_stat_sum protect_commit_waiting)
kill -CONT "$LZ_REDIS_PID"
CLIENT_PIDS=("${remote_pids[@]}"); lz_echo_verdict stop-remote; remote=$VERDICT
CLIENT_PIDS=("${local_pids[@]}"); lz_echo_verdict stop-local; local_=$VERDICT
stop="Redis stopped for 1 s: remote level $remote ($waiting segments held at the stop's end); local level $local_"
lz_log "$stop"
[[ "$remote" == "$CLIENTS ok, 0 failed"* && "$local_" == "$CLIENTS ok, 0 failed"* ]] || lz_fail "clients failed while Redis was stopped: $stop"
wait_of() { sed -n 's/.*longest wait \([0-9]*\) ms.*/\1/p' <<<"$1"; }
[ "$(wait_of "$remote")" -ge 800 ] || lz_fail "the remote level's clients did not wait for Redis: $stop"
[ "$(wait_of "$local_")" -lt 500 ] || lz_fail "control: the local level's clients waited for Redis: $stop"

# 3. The remote level through a crash of its server (the hook says so).
LZ_ECHO=$REMOTE
SERVER_PID=${PIDS[REMOTE]}
lz_echo_clients 3 crash
sleep 1
lz_echo_server_down
lz_protect_serve echo "$APP" REMOTE.1
lz_ctl protect up "$REMOTE" >/dev/null
lz_echo_verdict crash
crash=$VERDICT
lz_log "remote level through a server crash: $crash"
[[ "$crash" == "$CLIENTS ok, 0 failed"* ]] || lz_fail "the remote level's clients failed through a server crash: $crash"
[ "$(lz_stat_sum protect_commit_full)" = 0 ] || lz_fail "segments dropped by a full hold: $(lz_stat_sum protect_commit_full)"
lz_dp_stop
echo "PASS protected_commit: $rtt; $stop; through a server crash: $crash"
