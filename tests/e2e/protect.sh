#!/usr/bin/env bash
# Protected connections between real kernels (issue 21): line clients in one
# namespace echo through a line-echo server in another, which is SIGKILLed
# and restarted twice; every connection is carried onto the new server and
# no client sees an error (lazarus-core/examples/protect_bridge.rs, which
# bridges the namespaces as the dataplane will). Then 20 redis sessions, each
# counting with INCR, through the same. Controls: the same bridged
# unprotected, whose clients fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
c=lzpc$$ s=lzps$$
cleanup() {
    for ns in "$c" "$s"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
cargo build --release --locked -q -p lazarus-core --example protect_bridge
bin=target/release/examples/protect_bridge
run() {
    cleanup; ip netns add "$c"; ip netns add "$s"
    timeout 120 "$bin" run "$c" "$s" "$@" 2>&1
}
on=$(run 10) || { echo "$on"; echo "FAIL protect: line echo"; exit 1; }
echo "line echo, protected: $on"
off=$(run 10 --off) || { echo "$off"; echo "FAIL protect: line echo control"; exit 1; }
echo "line echo, control (unprotected): $off"
# redis-server with persistence off: the replay rebuilds each session's
# counter in the restarted server.
ron=$(run 20 --redis) || { echo "$ron"; echo "FAIL protect: redis"; exit 1; }
echo "redis, protected: $ron"
roff=$(run 20 --redis --off) || { echo "$roff"; echo "FAIL protect: redis control"; exit 1; }
echo "redis, control (unprotected): $roff"
echo "PASS protect: line echo: $(cut -d';' -f1 <<<"$on"); redis: $(cut -d';' -f1 <<<"$ron"); controls: $(cut -d',' -f1-2 <<<"$off") and $(cut -d',' -f1-2 <<<"$roff")"
