#!/usr/bin/env bash
# The replay of a protected connection against a real Linux kernel (issue
# 21): a line-echo server in a namespace of its own is SIGKILLed and
# restarted, the connection is replayed onto the new server and spliced, and
# the client goes on (lazarus-core/examples/replay_kernel.rs). The firewall's
# side runs in that program over a TAP device; the dataplane does not call
# it yet. Control: a server that answers differently after the restart is
# refused, not spliced.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
ns=lzrp$$
cleanup() { ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
cargo build --release --locked -q -p lazarus-core --example replay_kernel
ip netns add "$ns"
out=$(timeout 120 ip netns exec "$ns" target/release/examples/replay_kernel run 2>&1) || { echo "$out"; echo "FAIL replay"; exit 1; }
echo "$out"
echo "PASS $(tail -1 <<<"$out")"
