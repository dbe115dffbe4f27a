#!/usr/bin/env bash
# The core, lazarusctl, the telemetry client and the fuzz targets must build
# and test without DPDK: fails when dpdk-sys creeps back into their
# dependencies, or when the core's tests need libdpdk to build.
set -euo pipefail
cd "$(dirname "$0")/.."
for p in lazarus-core lazarusctl lazarus-telemetry-client; do
    tree=$(cargo tree -e normal -p "$p" ${LOCKED---locked}) || { echo "check-dpdk-free: cannot resolve $p" >&2; exit 1; }
    if grep -q 'dpdk-sys' <<<"$tree"; then
        echo "check-dpdk-free: $p depends on dpdk-sys (cargo tree -e normal -p $p -i dpdk-sys)" >&2
        exit 1
    fi
done
tree=$(cd fuzz && cargo tree -e normal ${LOCKED---locked}) || { echo "check-dpdk-free: cannot resolve the fuzz crate" >&2; exit 1; }
if grep -q 'dpdk-sys' <<<"$tree"; then
    echo "check-dpdk-free: the fuzz crate depends on dpdk-sys" >&2
    exit 1
fi
# No pkg-config path at all: anything that asks for libdpdk fails to build.
PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH= cargo test -p lazarus-core --locked -q
echo "check-dpdk-free: core, lazarusctl, telemetry client and fuzz crate are DPDK-free"
