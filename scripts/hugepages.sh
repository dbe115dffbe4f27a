#!/usr/bin/env bash
# Reserves 2 MiB hugepages and mounts hugetlbfs on /dev/hugepages. Idempotent;
# run as root. Used by scripts/setup.sh and, installed as
# <prefix>/libexec/lazarus/hugepages.sh, by lazarus-hugepages.service.
#   LAZARUS_HUGEPAGES  2 MiB pages to reserve at least (default 1024 = 2 GiB)
set -euo pipefail

want_pages=${LAZARUS_HUGEPAGES:-1024}
tag=${LAZARUS_LOG_TAG:-hugepages}
say() { printf '%s: %s\n' "$tag" "$*"; }
die() { printf '%s: error: %s\n' "$tag" "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root: it reserves hugepages and mounts hugetlbfs"
case $want_pages in ''|*[!0-9]*) die "LAZARUS_HUGEPAGES=$want_pages is not a number of 2 MiB pages" ;; esac

# Reserve at least want_pages 2 MiB pages (never shrink a larger reservation
# another user made), then mount hugetlbfs.
cur=$(cat /proc/sys/vm/nr_hugepages)
if [ "$cur" -lt "$want_pages" ]; then
    echo "$want_pages" > /proc/sys/vm/nr_hugepages || true
    cur=$(cat /proc/sys/vm/nr_hugepages)
fi
[ "$cur" -ge "$want_pages" ] || die "asked the kernel for $want_pages hugepages, got $cur (memory too fragmented? try again after freeing memory, or set LAZARUS_HUGEPAGES lower)"
if ! mountpoint -q /dev/hugepages; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages || die "cannot mount hugetlbfs on /dev/hugepages"
fi
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
say "hugepages: $cur reserved, $free free, hugetlbfs on /dev/hugepages"
[ "$free" -gt 0 ] || die "no free hugepages: another DPDK process holds them all (give it -m, or stop it)"
