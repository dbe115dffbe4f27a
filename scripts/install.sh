#!/usr/bin/env bash
# Builds the release binaries and installs Lazarus: binaries, the hugepage
# set-up, the systemd units, /etc/lazarus/lazarus.toml and /etc/default/lazarus
# (both only when absent: an operator's files are never overwritten).
#
#   scripts/install.sh [--prefix DIR] [--no-build]
#     --prefix DIR   where bin/ and libexec/lazarus/ go (default /usr/local);
#                    the units' paths are rewritten to match
#     --no-build     install target/release as it is (it must be built)
#   DESTDIR=/tmp/stage scripts/install.sh   stage under a root (packaging, tests):
#                    nothing outside DESTDIR is touched and systemd is not reloaded
#   UNITDIR          where units go (default /etc/systemd/system)
#
# Then: systemctl enable --now lazarus-dataplane (docs/OPERATING.md).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
build=1
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $prefix in /*) ;; *) echo "install: --prefix must be absolute, got $prefix" >&2; exit 2 ;; esac
prefix=${prefix%/}
destdir=${DESTDIR:-}
unitdir=${UNITDIR:-/etc/systemd/system}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

if [ "$build" = 1 ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || die "cargo not on PATH (install a Rust toolchain, or build elsewhere and pass --no-build)"
    say "building release binaries"
    # The whole workspace, as scripts/test.sh builds it: after that, a no-op.
    cargo build --release --locked --workspace
fi
for b in lazarus-dataplane lazarus-checkpointd; do
    [ -x "target/release/$b" ] || die "target/release/$b is missing: build it (cargo build --release) or drop --no-build"
done
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    die "must run as root to install into / (or set DESTDIR to stage elsewhere)"
fi

bindir=$prefix/bin
libexecdir=$prefix/libexec/lazarus
install -d "$destdir$bindir" "$destdir$libexecdir" "$destdir$unitdir" "$destdir/etc/lazarus" "$destdir/etc/default"
install -m 0755 target/release/lazarus-dataplane target/release/lazarus-checkpointd "$destdir$bindir/"
install -m 0755 scripts/hugepages.sh "$destdir$libexecdir/hugepages.sh"
say "binaries in $destdir$bindir, hugepages.sh in $destdir$libexecdir"

# Units: the files in packaging/systemd name /usr/local; rewrite for the prefix.
for u in packaging/systemd/*.service; do
    sed -e "s|/usr/local/bin/|$bindir/|g" -e "s|/usr/local/libexec/lazarus/|$libexecdir/|g" "$u" > "$destdir$unitdir/$(basename "$u").tmp"
    chmod 0644 "$destdir$unitdir/$(basename "$u").tmp"
    mv "$destdir$unitdir/$(basename "$u").tmp" "$destdir$unitdir/$(basename "$u")"
done
say "units in $destdir$unitdir"

keep_or_install() {
    local src=$1 dst=$2
    if [ -e "$dst" ]; then
        say "kept $dst (exists; the new example is $src)"
    else
        install -m 0644 "$src" "$dst"
        say "installed $dst"
    fi
}
keep_or_install config/lazarus.toml "$destdir/etc/lazarus/lazarus.toml"
keep_or_install packaging/default/lazarus "$destdir/etc/default/lazarus"

if [ -z "$destdir" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemd reloaded; edit /etc/default/lazarus and /etc/lazarus/lazarus.toml, then: systemctl enable --now lazarus-dataplane"
fi
