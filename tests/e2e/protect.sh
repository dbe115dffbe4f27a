#!/usr/bin/env bash
# Protected connections between real kernels (issue 21), without DPDK:
# 20 redis sessions in one namespace count with INCR through redis-server
# (persistence off) in another, which is SIGKILLed and restarted twice;
# every connection is replayed onto the new server, which rebuilds each
# counter, and no session sees an error or a wrong count
# (lazarus-core/examples/protect_bridge.rs bridges the namespaces through
# the same code as the dataplane; tests/e2e/protected.sh runs the line-echo
# case through the dataplane itself). Control: the same bridged
# unprotected, whose sessions fail.
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
# redis-server with persistence off: the replay rebuilds each session's
# counter in the restarted server.
ron=$(run 20 --redis) || { echo "$ron"; echo "FAIL protect: redis"; exit 1; }
echo "redis, protected: $ron"
roff=$(run 20 --redis --off) || { echo "$roff"; echo "FAIL protect: redis control"; exit 1; }
echo "redis, control (unprotected): $roff"
echo "PASS protect: redis: $(cut -d';' -f1 <<<"$ron"); control: $(cut -d',' -f1-2 <<<"$roff")"
