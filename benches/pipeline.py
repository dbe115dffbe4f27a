#!/usr/bin/env python3
"""Pipeline benchmark: lazarus-dataplane forwarding between two net_null ports on
one worker lcore, beside dpdk-testpmd io-forwarding on the same vdevs, in the same
run (alternating rounds, so machine noise hits both alike).

Reports Mpps (median of the per-second rates, first seconds dropped as warm-up)
and cycles per packet (TSC Hz / packets per second: the worker busy-polls one
core, so every cycle of that core is spent on the packets it moved).

usage: benches/pipeline.py [--seconds 8] [--rounds 3] [--markdown]
Needs root, hugepages (scripts/setup.sh) and a release build.
"""
import argparse, os, re, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LAZARUS_BIN", os.path.join(ROOT, "target/release/lazarus-dataplane"))
EAL = ["-l", "0,1", "-m", "512", "--no-pci", "--vdev", "net_null0", "--vdev", "net_null1"]

CONFIG = """
[dataplane]
stats_interval_ms = 1000
burst = 32
[[port]]
name = "a"
device = "net_null0"
[[port]]
name = "b"
device = "net_null1"
[[bridge]]
ports = ["a", "b"]
[[worker]]
lcore = 1
rx = ["a:0", "b:0"]
"""


def run_for(cmd, seconds, stdin=None):
    """Runs cmd for `seconds`, SIGINT, returns its combined output."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=stdin, text=True)
    time.sleep(seconds)
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    if p.returncode not in (0, -signal.SIGINT, 130):
        sys.exit(f"pipeline: {cmd[0]} exited {p.returncode}:\n{out[-3000:]}")
    return out


def lazarus(seconds, cfg):
    out = run_for([BIN, *EAL, "--file-prefix", "lzbench", "--", "--config", cfg], seconds)
    rates = [float(m) for m in re.findall(r"stats elapsed=\S+ .*? tx_mpps=([0-9.]+)", out)]
    hz = re.search(r"tsc_hz=(\d+)", out)
    if not rates or not hz:
        sys.exit(f"pipeline: no stats from lazarus-dataplane:\n{out[-3000:]}")
    return rates[2:] or rates, int(hz.group(1))


def testpmd(seconds):
    # testpmd exits on stdin EOF: keep a pipe open for the whole run.
    keep = subprocess.Popen(["sleep", str(seconds + 60)], stdout=subprocess.PIPE)
    out = run_for(["dpdk-testpmd", *EAL, "--file-prefix", "lzbench-tp", "--", "--forward-mode=io",
                   "--nb-cores=1", "--burst=32", "--stats-period", "1"], seconds + 4, stdin=keep.stdout)
    keep.kill()
    tx = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", out)]
    per_period = [(tx[i] + tx[i + 1]) / 1e6 for i in range(0, len(tx) - 1, 2)]
    # testpmd starts printing before forwarding starts (zeros), and its first
    # non-zero period is partial: both are warm-up, as the first two of ours.
    per_period = [r for r in per_period if r > 0]
    if not per_period:
        sys.exit(f"pipeline: no rates from testpmd:\n{out[-3000:]}")
    return per_period[1:] or per_period


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a table for docs/BENCHMARKS.md")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"pipeline: {BIN} missing: cargo build --release")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG)
        cfg = f.name
    lz, tp, hz = [], [], 0
    for r in range(a.rounds):
        rates, hz = lazarus(a.seconds, cfg)
        lz += rates
        tp += testpmd(a.seconds)
        print(f"round {r + 1}/{a.rounds}: lazarus {statistics.median(rates):.2f} Mpps, testpmd {statistics.median(tp[-len(rates):]):.2f} Mpps", file=sys.stderr)
    os.unlink(cfg)
    l, t = statistics.median(lz), statistics.median(tp)
    cpp = lambda mpps: hz / (mpps * 1e6)
    rows = [("lazarus-dataplane (bridge, 1 worker)", l, cpp(l)), ("dpdk-testpmd io (1 core)", t, cpp(t))]
    if a.markdown:
        print("| forwarder | Mpps | cycles/packet |\n|---|---:|---:|")
        for n, m, c in rows:
            print(f"| {n} | {m:.2f} | {c:.1f} |")
        print(f"\nratio lazarus/testpmd: **{l / t:.3f}** (TSC {hz / 1e9:.2f} GHz, {len(lz)} + {len(tp)} one-second samples)")
    else:
        for n, m, c in rows:
            print(f"{n:40} {m:8.2f} Mpps {c:8.1f} cycles/packet")
        print(f"ratio lazarus/testpmd: {l / t:.3f}")


if __name__ == "__main__":
    main()
