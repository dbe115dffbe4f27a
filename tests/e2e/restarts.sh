#!/usr/bin/env bash
# Restarts leak nothing: the active worker process of a supervised dataplane
# (docs/RESTART.md) is SIGKILLed LZ_RESTARTS times (1000) while a ping and a
# UDP flow cross it, each kill once a standby stands by. Counted before and
# after, with the traffic stopped: the pool's mbufs in use, DPDK's heap
# (allocations and bytes), free hugepages, the file descriptors of the port
# owner and of checkpointd, the files in EAL's runtime directory, and the
# delta rings' lag. Then the port owner is stopped and must stop cleanly.
#
# Every figure must come back to where it was, but mbufs: a worker process
# killed inside the PMD's receive or send call takes that burst's mbufs with
# it, and DPDK records no owner to reclaim them by (docs/RESTART.md). The
# test prints the mbufs lost and fails past one per four kills: a leak on
# every kill (a burst is 32), not the kills that land inside the PMD (10 to
# 94 per 1 000 seen, varying with the machine's load from day to day).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap lz_cleanup EXIT
set -E
trap 'echo "restarts.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

N=${LZ_RESTARTS:-1000}
[ -x "$LZ_BIN" ] || lz_fail "$LZ_BIN not built (cargo build --release)"
lz_ns_up
lz_in_server python3 "$LZ_STREAMS" udp-server --bind "$LZ_SERVER_IP" --port 7001 &
LZ_PIDS+=($!)
export LZ_CHECKPOINT=true LZ_SUPERVISE=1
lz_config "" ""
lz_ckpt_start
lz_dp_start
lz_join_taps
lz_wait_path

tel() { python3 "$LZ_ROOT/tests/e2e/telemetry.py" "lz$LZ_ID" "$@"; }
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages
# Waits until a worker process stands by (the port owner counts them).
standby() {
    local t
    for t in $(seq 1 400); do
        tel /lazarus/stats | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["/lazarus/stats"]["worker_processes"]["standing_by"] >= 1 else 1)' && return 0
        sleep 0.01
    done
    lz_fail "no worker process stood by after 4 s"
}
# One line of what must not grow.
snapshot() {
    standby
    sleep 0.5
    python3 - "$(tel /lazarus/stats /eal/heap_info,0 /lazarus/checkpoint)" "$(cat $hp)" \
        "$(ls /proc/"$LZ_DP_PID"/fd | wc -l)" "$(ls /proc/"$LZ_CKPT_PID"/fd | wc -l)" \
        "$(ls "/var/run/dpdk/lz$LZ_ID" | wc -l)" <<'PY'
import json, sys
r = [json.loads(l) for l in sys.argv[1].splitlines()]
st, heap, ck = r[0]["/lazarus/stats"], r[1]["/eal/heap_info"], r[2]["/lazarus/checkpoint"]
assert ck.get("enabled") == 1 and "lag" in ck, f"no ring status in /lazarus/checkpoint: {ck}"
lag = sum(ck["lag"])
print(json.dumps({"mbufs_in_use": st["mbufs_in_use"], "heap_allocs": heap["Alloc_count"],
                  "heap_bytes": heap["Alloc_size"], "free_hugepages": int(sys.argv[2]),
                  "owner_fds": int(sys.argv[3]), "checkpointd_fds": int(sys.argv[4]),
                  "runtime_files": int(sys.argv[5]), "ring_lag": lag,
                  "activations": st["worker_processes"]["activations"]}))
PY
}
before=$(snapshot)
lz_log "before: $before"

# Not through lz_in_client, a function: $! must be the process itself.
ip netns exec "$LZ_NS_C" ping -i 0.005 -q "$LZ_SERVER_IP" >/dev/null 2>&1 &
ping_pid=$!
ip netns exec "$LZ_NS_C" python3 "$LZ_STREAMS" udp-client --server "$LZ_SERVER_IP" --port 7001 --interval 0.002 --duration 100000 >/dev/null 2>&1 &
udp_pid=$!
t0=$(date +%s.%N)
# The kill loop in one process: a telemetry request costs a millisecond, a
# python start fifty.
LZ_DP_PID=$LZ_DP_PID python3 - "lz$LZ_ID" "$N" "$LZ_WORK" <<'PY' || lz_fail "the kill loop failed (above)"
import json, os, signal, socket, sys, time
prefix, n, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
json.loads(s.recv(1 << 16))
def procs():
    s.send(b"/lazarus/stats")
    return json.loads(s.recv(1 << 20))["/lazarus/stats"]["worker_processes"]
slow = []
def standby(killed):
    """Once another worker process is active and one stands by."""
    # Generous: a shared machine sometimes takes seconds to tear a killed
    # process down (and a standby caught in the drain wait gives up after
    # attach_timeout_ms, 10 s, and is replaced); takeover times are measured
    # elsewhere (kill.sh, the demo). Slow ones are reported with the logs.
    start = time.time()
    while time.time() < start + 30:
        p = procs()
        if p["standing_by"] >= 1 and p["active_pid"] not in (0, killed):
            if time.time() - start > 2:
                slow.append((killed, round(time.time() - start, 1)))
                print(f"slow takeover after the kill of {killed}: {slow[-1][1]} s: {p}", flush=True)
                os.system(f"tail -n 15 {work}/dataplane.log; tail -n 5 {work}/checkpointd.log")
            return p
        time.sleep(0.002)
    os.system(f"tail -n 40 {work}/dataplane.log; tail -n 10 {work}/checkpointd.log")
    # Where the port owner's main loop stands (gdb, when installed).
    # The killed process's state (a D state and its kernel stack: the
    # kernel still tearing it down).
    for pid in os.popen(f"pgrep -f -- '--file-prefix {prefix} '").read().split():
        os.system(f"grep -E '^(Name|State|PPid)' /proc/{pid}/status 2>/dev/null | tr '\\n' ' '; echo pid {pid}; cat /proc/{pid}/stack 2>/dev/null | head -12")
    owner = os.environ.get("LZ_DP_PID", "")
    if owner:
        os.system(f"timeout 60 gdb -batch -p {owner} -ex 'thread apply all bt' 2>/dev/null | grep -E '^(Thread|#)' | head -80")
    sys.exit(f"no new active worker process with a standby 30 s after the kill of {killed}: {p}")
killed = 0
standbys_killed = 0
for i in range(1, n + 1):
    p = standby(killed)
    if i % 10 == 0:
        # Now and then the standby instead: the port owner must replace it,
        # and free what it left, just the same.
        s.send(b"/eal/params")
        json.loads(s.recv(1 << 20))
        others = [int(x) for x in os.popen(f"pgrep -f -- '--file-prefix {prefix} .*--worker'").read().split()]
        for pid in others:
            if pid != p["active_pid"]:
                # pgrep also lists the last killed active while the kernel
                # tears it down: gone by now, it is not a standby to kill.
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                standbys_killed += 1
                break
        p = standby(0)
    killed = p["active_pid"]
    os.kill(killed, signal.SIGKILL)
    if i % 100 == 0:
        print(f"[{time.strftime('%T')}] {i} restarts", flush=True)
standby(killed)
print(f"[{time.strftime('%T')}] {standbys_killed} standbys killed besides; takeovers over 2 s: {slow or 'none'}", flush=True)
PY
secs=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
kill "$ping_pid" "$udp_pid" 2>/dev/null || true
wait "$ping_pid" "$udp_pid" 2>/dev/null || true
sleep 1
after=$(snapshot)
lz_log "after $N restarts in ${secs}s: $after"
lost=$(python3 - "$before" "$after" "$N" <<'PY' || lz_fail "something leaked across $N restarts (above)"
import json, sys
b, a, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
assert a["activations"] - b["activations"] == n, f"{a['activations'] - b['activations']} activations for {n} kills of the active"
bad = {k: (b[k], a[k]) for k in b if k not in ("activations", "mbufs_in_use") and a[k] != b[k]}
assert not bad, f"changed across {n} restarts (before, after): {bad}"
lost = a["mbufs_in_use"] - b["mbufs_in_use"]
assert 0 <= lost <= n // 4, f"{lost} mbufs lost across {n} restarts"
print(lost)
PY
)
lz_in_client ping -c 3 -i 0.2 -W 1 -q "$LZ_SERVER_IP" >/dev/null || lz_fail "no forwarding after $N restarts"

# A hung worker (stopped, as one spinning on a pool ring a killed process
# left half-moved would be): the port owner's watchdog kills its process and
# the standby takes over.
hung=$(tel /lazarus/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["/lazarus/stats"]["worker_processes"]["active_pid"])')
kill -STOP "$hung"
for _ in $(seq 1 60); do
    p=$(tel /lazarus/stats | python3 -c 'import json,sys; p=json.load(sys.stdin)["/lazarus/stats"]["worker_processes"]; print(p["active_pid"], p["watchdog_kills"])')
    [ "${p% *}" = "$hung" ] || break
    sleep 0.1
done
[ "${p% *}" != "$hung" ] && [ "${p#* }" = 1 ] || lz_fail "the watchdog did not replace a stopped active worker process (pid $hung): active, watchdog kills = $p"
lz_in_client ping -c 3 -i 0.2 -W 1 -q "$LZ_SERVER_IP" >/dev/null || lz_fail "no forwarding after the watchdog's takeover"
lz_log "a stopped active worker process (pid $hung) was killed by the watchdog and replaced by pid ${p% *}"
lz_dp_stop
echo "PASS restarts: $N SIGKILLs of the active worker process in ${secs}s; DPDK heap, hugepages, fds, runtime files and ring lag unchanged; $lost mbufs lost (killed inside the PMD)"
