#!/usr/bin/env bash
# Installs what Lazarus needs on Debian (bookworm), reserves hugepages and mounts
# hugetlbfs. Idempotent; run as root. Checks what it set and says what is missing.
#   LAZARUS_HUGEPAGES  2 MiB pages to reserve at least (default 1024 = 2 GiB)
set -euo pipefail

want_pages=${LAZARUS_HUGEPAGES:-1024}
packages=(libdpdk-dev dpdk dpdk-dev libpcap-dev clang libclang-dev pkg-config gcc
          iproute2 iperf3 iputils-ping tcpdump procps psmisc python3
          curl vsftpd valgrind hping3 nftables ethtool redis-server openssl)
# Peers only benchmarks compare with (scripts/bench-replication.sh): not
# installed by default, since Debian's conntrackd package starts a service.
if [ "${LAZARUS_BENCH_PEERS:-0}" = 1 ]; then
    packages+=(conntrackd conntrack)
    # Masked before it is installed: the benchmark runs its own instances.
    [ -e /etc/systemd/system/conntrackd.service ] || ln -s /dev/null /etc/systemd/system/conntrackd.service 2>/dev/null || true
fi

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (sudo scripts/setup.sh): it installs packages and reserves hugepages"

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed: is a Debian mirror reachable?"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
else
    say "packages: all ${#packages[@]} present"
fi
pkg-config --atleast-version=22.11 libdpdk || die "libdpdk >= 22.11 not visible to pkg-config after install"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd missing (package dpdk-dev)"

# Hugepages: reserve at least LAZARUS_HUGEPAGES 2 MiB pages, mount hugetlbfs
# (scripts/hugepages.sh, which lazarus-hugepages.service runs too).
LAZARUS_HUGEPAGES=$want_pages LAZARUS_LOG_TAG=setup "$(dirname "$0")/hugepages.sh" || exit 1
say "DPDK $(pkg-config --modversion libdpdk); ready"
