#!/usr/bin/env bash
# Tests scripts/install.sh: installs into a temporary DESTDIR (no root
# needed, nothing outside it touched), checks every file, that an existing
# config is kept, that --prefix rewrites the units, and that the units parse
# (systemd-analyze verify when it is there, a strict syntax check always).
#   LAZARUS_TEST_NO_BUILD=1   pass --no-build (target/release already built)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL install: $*" >&2; exit 1; }
nobuild=(); [ "${LAZARUS_TEST_NO_BUILD:-0}" = 1 ] && nobuild=(--no-build)

root=$tmp/root
out=$(DESTDIR=$root scripts/install.sh "${nobuild[@]}" 2>&1) || fail "install.sh failed: $out"
for f in usr/local/bin/lazarus-dataplane usr/local/bin/lazarus-checkpointd usr/local/libexec/lazarus/hugepages.sh; do
    [ -x "$root/$f" ] || fail "$f not installed executable"
done
for u in lazarus-hugepages lazarus-checkpointd lazarus-dataplane; do
    [ -f "$root/etc/systemd/system/$u.service" ] || fail "$u.service not installed"
done
cmp -s config/lazarus.toml "$root/etc/lazarus/lazarus.toml" || fail "etc/lazarus/lazarus.toml differs from config/lazarus.toml"
cmp -s packaging/default/lazarus "$root/etc/default/lazarus" || fail "etc/default/lazarus differs from packaging/default/lazarus"
# shellcheck disable=SC1091
( . "$root/etc/default/lazarus"; [ -n "$LAZARUS_EAL_ARGS" ] && [ "$LAZARUS_HUGEPAGES" -gt 0 ] ) \
    || fail "etc/default/lazarus does not set LAZARUS_EAL_ARGS and LAZARUS_HUGEPAGES"
"$root/usr/local/bin/lazarus-checkpointd" --version >/dev/null || fail "installed checkpointd does not run"

# A second install keeps the operator's files.
echo "# edited by the operator" >> "$root/etc/lazarus/lazarus.toml"
echo "LAZARUS_HUGEPAGES=2048" >> "$root/etc/default/lazarus"
out=$(DESTDIR=$root scripts/install.sh --no-build 2>&1) || fail "second install failed: $out"
grep -q "edited by the operator" "$root/etc/lazarus/lazarus.toml" || fail "an existing lazarus.toml was overwritten"
grep -q "LAZARUS_HUGEPAGES=2048" "$root/etc/default/lazarus" || fail "an existing /etc/default/lazarus was overwritten"
grep -q "kept .*lazarus.toml" <<<"$out" || fail "second install did not say it kept lazarus.toml: $out"

# --prefix: files under it, units pointing at it.
opt=$tmp/opt
DESTDIR=$opt scripts/install.sh --no-build --prefix /opt/lazarus >/dev/null || fail "--prefix install failed"
[ -x "$opt/opt/lazarus/bin/lazarus-dataplane" ] || fail "--prefix: binary not under /opt/lazarus/bin"
grep -q "^ExecStart=/opt/lazarus/bin/lazarus-dataplane " "$opt/etc/systemd/system/lazarus-dataplane.service" \
    || fail "--prefix: dataplane unit not rewritten"
grep -q "^ExecStart=/opt/lazarus/libexec/lazarus/hugepages.sh$" "$opt/etc/systemd/system/lazarus-hugepages.service" \
    || fail "--prefix: hugepages unit not rewritten"
! grep -rq /usr/local "$opt/etc/systemd/system" || fail "--prefix: a unit still names /usr/local"
DESTDIR=$tmp/x scripts/install.sh --no-build --prefix relative >/dev/null 2>&1 && fail "a relative --prefix was accepted"

# Syntax: sections, Key=Value lines, absolute ExecStart that exists in the staged root.
python3 - "$root/etc/systemd/system" "$root" <<'PY' || fail "unit syntax"
import os, re, sys
unitdir, root = sys.argv[1], sys.argv[2]
known = {"Unit", "Service", "Install"}
for name in sorted(os.listdir(unitdir)):
    section, keys = None, {}
    for n, line in enumerate(open(os.path.join(unitdir, name)), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            assert section in known, f"{name}:{n}: unknown section {section}"
            continue
        m = re.fullmatch(r"([A-Za-z]+)=(.*)", line)
        assert m and section, f"{name}:{n}: not Key=Value inside a section: {line!r}"
        keys.setdefault((section, m.group(1)), []).append(m.group(2))
    exe = keys[("Service", "ExecStart")][0].split()[0]
    assert exe.startswith("/") and os.access(root + exe, os.X_OK), f"{name}: ExecStart {exe} not installed"
    assert ("Install", "WantedBy") in keys, f"{name}: no WantedBy"
    print(f"unit ok: {name}")
PY
if command -v systemd-analyze >/dev/null; then
    # verify checks that ExecStart exists on the real filesystem (its --root
    # wants a whole systemd tree): point copies of the staged units at the
    # staged files. It exits 0 on unknown keys, so any line it prints fails.
    mkdir -p "$tmp/verify"
    for u in "$root"/etc/systemd/system/lazarus-*.service; do
        sed "s|=/usr/local/|=$root/usr/local/|g" "$u" > "$tmp/verify/$(basename "$u")"
    done
    v=$(systemd-analyze verify --man=no "$tmp"/verify/lazarus-*.service 2>&1) || fail "systemd-analyze verify: $v"
    [ -z "$v" ] || fail "systemd-analyze verify warned: $v"
    echo "systemd-analyze verify: clean"
else
    echo "systemd-analyze not installed: syntax check only"
fi
echo "PASS install"
