# Start-and-wait helpers shared by tests/e2e/lib.sh (the e2e tests and the
# demo) and scripts/bench-load.sh. Sourced, never run. They return a status
# and leave the failure message (and how much of the log to show) to the
# caller, which has its own fail function:
#   0  ready
#   1  the process exited first
#   2  not ready after TRIES polls of INTERVAL seconds
# Each start helper stores the new pid in the variable named by its first
# argument before it waits, so that a caller's EXIT trap can kill a process
# that never became ready.

# lzp_wait_log LOG BASE PATTERN PID TRIES INTERVAL: waits for a line of LOG
# after its first BASE lines that contains PATTERN (grep, basic regex).
lzp_wait_log() {
    local log=$1 base=$2 pattern=$3 pid=$4 tries=$5 interval=$6 t
    for t in $(seq 1 "$tries"); do
        tail -n +"$((base + 1))" "$log" 2>/dev/null | grep -q -- "$pattern" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep "$interval"
    done
    return 2
}

# lzp_wait_socket PATH PID TRIES INTERVAL: waits until PATH is a socket; an
# empty PID skips the check that the process is alive.
lzp_wait_socket() {
    local path=$1 pid=$2 tries=$3 interval=$4 t
    for t in $(seq 1 "$tries"); do
        [ -S "$path" ] && return 0
        [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
        sleep "$interval"
    done
    return 2
}

# lzp_start_wait_log PIDVAR LOG PATTERN TRIES INTERVAL CMD...: starts CMD in
# the background, stdout and stderr appended to LOG, and waits for a line
# containing PATTERN among those it writes (the log may hold earlier runs').
lzp_start_wait_log() {
    local pidvar=$1 log=$2 pattern=$3 tries=$4 interval=$5 base=0
    shift 5
    [ ! -f "$log" ] || base=$(wc -l < "$log")
    "$@" >>"$log" 2>&1 &
    printf -v "$pidvar" '%s' "$!"
    lzp_wait_log "$log" "$base" "$pattern" "$!" "$tries" "$interval"
}

# lzp_start_wait_socket PIDVAR LOG SOCKET TRIES INTERVAL CMD...: starts CMD
# in the background, output appended to LOG, and waits for SOCKET.
lzp_start_wait_socket() {
    local pidvar=$1 log=$2 sock=$3 tries=$4 interval=$5
    shift 5
    "$@" >>"$log" 2>&1 &
    printf -v "$pidvar" '%s' "$!"
    lzp_wait_socket "$sock" "$!" "$tries" "$interval"
}

# lzp_dp_start PIDVAR LOG TRIES INTERVAL BIN ARGS...: lazarus-dataplane
# (BIN and its EAL and app arguments), ready when this start logs
# "forwarding;".
lzp_dp_start() {
    local pidvar=$1 log=$2 tries=$3 interval=$4
    shift 4
    lzp_start_wait_log "$pidvar" "$log" "forwarding;" "$tries" "$interval" "$@"
}

# lzp_ckpt_start PIDVAR LOG CONFIG SOCKET TRIES INTERVAL BIN:
# lazarus-checkpointd on CONFIG, ready when its control socket SOCKET exists.
lzp_ckpt_start() {
    local pidvar=$1 log=$2 config=$3 sock=$4 tries=$5 interval=$6 bin=$7
    lzp_start_wait_socket "$pidvar" "$log" "$sock" "$tries" "$interval" "$bin" --config "$config"
}

# lzp_telemetry_socket PREFIX: the DPDK telemetry socket of a --file-prefix.
lzp_telemetry_socket() { printf '/var/run/dpdk/%s/dpdk_telemetry.v2' "$1"; }
