#!/usr/bin/env python3
"""Pipeline benchmark: lazarus-dataplane forwarding between two net_null ports on
one worker lcore, beside dpdk-testpmd io-forwarding on the same vdevs, in the same
run (alternating rounds, so machine noise hits both alike).

Reports Mpps (median of the per-second rates, first seconds dropped as warm-up)
and cycles per packet (TSC Hz / packets per second: the worker busy-polls one
core, so every cycle of that core is spent on the packets it moved).

Firewall mode (--flows N): conntrack on, established TCP traffic over N flows
of 64-byte frames (60 + FCS), from two net_pcap ports: port a replays once a
pcap of every flow's handshake (SYN, SYN-ACK, ACK), port b replays forever
(infinite_rx=1) one pure-ACK segment per flow, alternating directions, flows
in a shuffled order (the criterion bench's traffic). Both ports drop what is
sent to them (net_pcap without tx). Only the steady state counts: seconds in
which lazarus forwarded all it received (handshakes done), minus the first.
net_pcap infinite_rx copies each frame into a fresh mbuf: both forwarders pay
that, so the figures are PMD-bound; compare them in one run.

Checkpoint mode (--flows N --churn DATA): the checkpoint overhead through
the PMD (issue 4's "pipeline Mpps with checkpointing on divided by off").
Port b replays forever every flow's whole life (SYN, SYN-ACK, ACK, DATA
packets both ways, FIN, ACK, FIN, ACK; lives interleaved step by step, as
the in-process `overhead_paired` churn), so each replay reopens every flow
from TIME_WAIT. Rounds alternate checkpointing off and on (checkpointd
running, a fresh segment directory each round); the figure is the median of
the per-round on/off ratios.

Protect mode (--protect SEGMENTS): a protected bulk upload through the PMD
(issue 21's "protected ÷ unprotected, same run"). Port a replays forever
the clients' frames, port b the server's: 64 connections to a
`[[protected]]` service, 32 at a time (one per lane of a burst of 32), each
life SYN / SYN-ACK, then SEGMENTS full-sized client segments (1460 bytes)
each acknowledged by the server, then the client's RST. The worker polls
a, then b, 32 frames each: a server frame comes in the burst after the
client frame it answers, so the two replays stay in step. A lane runs two
connections in turn, so a connection's next life (the same bytes, a
replay) opens milliseconds after its reset, when its protection is over
and it is protected and logged anew. Rounds alternate the same config
without and with the `[[protected]]` entry, checkpointd draining in both;
the figure is the median of the per-round protected/unprotected ratios, and
each protected round must show its lives protected (protect.connections)
with no bound exceeded, or the run fails.

Smoke mode (--smoke): one short round of whichever mode, to check that the
command runs (scripts/bench-smoke.sh); its figures mean nothing.

Frames come from scripts/lib/frames.py: correct IPv4 and TCP checksums.

Profile mode (--perf FILE): the second half of each lazarus round sampled
by perf's cpu-clock into FILE (the last round's stays); the worker is the
thread rte-worker-1, the packet path inlined into its run function, so
`perf annotate` shows which loads the samples wait behind. In protect mode
both sides are sampled alike, the unprotected one into FILE.off.

usage: benches/pipeline.py [--seconds 8] [--rounds 3] [--flows N [--churn DATA]] [--protect SEGMENTS] [--markdown] [--smoke] [--perf FILE]
Needs root, hugepages (scripts/setup.sh) and a release build.
"""
import argparse, os, random, re, signal, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts", "lib"))
from frames import eth, ipv4, pad, tcp, tcp4_frame, write_pcap  # noqa: E402

BIN = os.environ.get("LAZARUS_BIN", os.path.join(ROOT, "target/release/lazarus-dataplane"))
CKPT_BIN = os.environ.get("LAZARUS_CKPT_BIN", os.path.join(os.path.dirname(BIN), "lazarus-checkpointd"))
EAL = ["-l", "0,1", "-m", "512", "--no-pci", "--vdev", "net_null0", "--vdev", "net_null1"]

# Plain forwarding (issue 2): no connection tracking, so nothing to
# checkpoint either (both default to on; with checkpointing on the dataplane
# would wait for a checkpointd this mode does not start).
CONFIG = """
[dataplane]
stats_interval_ms = {interval}
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
[conntrack]
enabled = false
[checkpoint]
enabled = false
"""


FW_CONFIG = """
[dataplane]
stats_interval_ms = {interval}
burst = 32
mbufs = {mbufs}
mbuf_data_room = {data_room}
[[port]]
name = "a"
device = "net_pcap0"
[[port]]
name = "b"
device = "net_pcap1"
[[bridge]]
ports = ["a", "b"]
[[worker]]
lcore = 1
rx = ["a:0", "b:0"]
[conntrack]
enabled = true
capacity = {capacity}
ftp = false
{checkpoint}
{protected}
"""

# The firewall's own cost (issue 3); checkpointing's is measured apart.
CKPT_OFF = """[checkpoint]
enabled = false"""

CKPT_ON = """[checkpoint]
enabled = true
dir = "{dir}"
control_socket = "{dir}/checkpointd.sock"
metrics_listen = ""
"""

SERVER = bytes([10, 99, 0, 2])


def client(i):
    """The criterion bench's flow i (dataplane/benches/common/mod.rs)."""
    a = (i // 50000).to_bytes(4, "big")
    return bytes([10, 100 + a[2], a[3], 1 + i % 250]), 1024 + i % 50000


def tcp_frame(src, dst, sport, dport, flags, seq, ack):
    """A 64-byte frame (60 + FCS), checksums right."""
    return tcp4_frame(src, dst, sport, dport, flags, seq, ack)


def make_pcaps(n, d):
    """handshakes.pcap (every flow's three-way handshake) and established.pcap."""
    cs, ss = 1000, 5000
    hs, est = os.path.join(d, "handshakes.pcap"), os.path.join(d, "established.pcap")
    def handshakes():
        for i in range(n):
            c, p = client(i)
            yield tcp_frame(c, SERVER, p, 80, 0x02, cs, 0)
            yield tcp_frame(SERVER, c, 80, p, 0x12, ss, cs + 1)
            yield tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1)
    write_pcap(hs, handshakes())
    order = list(range(n))
    random.Random(1).shuffle(order)
    def established():
        for i in order:
            c, p = client(i)
            yield tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1) if i % 2 == 0 else tcp_frame(SERVER, c, 80, p, 0x10, ss + 1, cs + 1)
    write_pcap(est, established())
    return hs, est


def make_churn_pcap(n, data, d):
    """churn.pcap: every flow's life, interleaved step by step
    (dataplane/benches/common/mod.rs, churn_frames_with), and an empty
    pcap for the other port."""
    cs, ss = 1000, 5000
    lives = []
    for i in range(n):
        c, p = client(i)
        l = [tcp_frame(c, SERVER, p, 80, 0x02, cs, 0), tcp_frame(SERVER, c, 80, p, 0x12, ss, cs + 1), tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1)]
        l += [tcp_frame(c, SERVER, p, 80, 0x10, cs + 1, ss + 1) if k % 2 == 0 else tcp_frame(SERVER, c, 80, p, 0x10, ss + 1, cs + 1) for k in range(data)]
        l += [tcp_frame(c, SERVER, p, 80, 0x11, cs + 1, ss + 1), tcp_frame(SERVER, c, 80, p, 0x10, ss + 1, cs + 2),
              tcp_frame(SERVER, c, 80, p, 0x11, ss + 1, cs + 2), tcp_frame(c, SERVER, p, 80, 0x10, cs + 2, ss + 2)]
        lives.append(l)
    churn, empty = os.path.join(d, "churn.pcap"), os.path.join(d, "empty.pcap")
    write_pcap(churn, (l[s] for s in range(len(lives[0])) for l in lives))
    write_pcap(empty, [])
    return empty, churn, n * len(lives[0])


PROTECTED_PORT = 7000
PROTECTED = f"""[[protected]]
addr = "10.99.0.2"
port = {PROTECTED_PORT}
log_bound = {{bound}}
connections = {{connections}}
"""
MSS = 1460


def make_protect_pcaps(segments, d, lanes=32, per_lane=2):
    """client.pcap (port a) and server.pcap (port b): bulk uploads to the
    protected service, a burst's frames one per lane, lanes * per_lane
    connections (see the module's doc). Returns both, the frames of a lap
    on each port, and the connections a lap replays."""
    cs, ss = 1000, 5000
    syn_opts = bytes([2, 4, MSS >> 8, MSS & 0xFF])
    body = bytes(random.Random(7).getrandbits(8) for _ in range(MSS))
    life = segments + 2
    lap = per_lane * life

    def frame(src, dst, sport, dport, flags, seq, ack, payload=b"", opts=b""):
        return pad(eth(ipv4(src, dst, 6, tcp(sport, dport, flags, seq, ack, opts=opts, payload=payload))))

    def step(i, t):
        """Connection i's client and server frames at step t of its life."""
        c, p = client(i)
        up = lambda *a, **k: frame(c, SERVER, p, PROTECTED_PORT, *a, **k)
        down = lambda *a, **k: frame(SERVER, c, PROTECTED_PORT, p, *a, **k)
        if t == 0:
            return up(0x02, cs, 0, opts=syn_opts), down(0x12, ss, cs + 1, opts=syn_opts)
        end = cs + 1 + min(t, segments) * MSS
        if t <= segments:
            # The first segment also completes the handshake.
            return up(0x18, end - MSS, ss + 1, payload=body), down(0x10, ss + 1, end)
        # The server's frame of this step finds the connection reset: the
        # one frame a life that the firewalls drop (invalid, counted).
        return up(0x14, end, ss + 1), down(0x10, ss + 1, end)

    # A lane's lives at its own offset, so that the SYNs are spread.
    order = [[] for _ in range(lap)]
    for lane in range(lanes):
        off = lane * lap // lanes
        for q in range(lap):
            order[(off + q) % lap].append((lane * per_lane + q // life, q % life))
    steps = [[step(i, t) for i, t in row] for row in order]
    cpath, spath = os.path.join(d, "client.pcap"), os.path.join(d, "server.pcap")
    frames = write_pcap(cpath, (c for row in steps for c, _ in row))
    write_pcap(spath, (sv for row in steps for _, sv in row))
    return cpath, spath, frames, lanes * per_lane


class Checkpointd:
    """lazarus-checkpointd on `cfg`, for one round; its segments go with it."""

    def __init__(self, cfg, seg):
        self.seg = seg
        os.makedirs(seg, exist_ok=True)
        self.log = open(os.path.join(seg, "checkpointd.log"), "w")
        self.p = subprocess.Popen([CKPT_BIN, "--config", cfg], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(os.path.join(seg, "checkpointd.sock")):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit(f"pipeline: checkpointd did not start:\n{open(os.path.join(seg, 'checkpointd.log')).read()[-3000:]}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        for f in os.listdir(self.seg):
            os.unlink(os.path.join(self.seg, f))
        os.rmdir(self.seg)


def run_for(cmd, seconds, stdin=None, ready=None, perf=None):
    """Runs cmd for `seconds` (counted from its first output line containing
    `ready`, when given), SIGINT, returns its combined output. With `perf`
    (a file), the second half of the run is sampled into it."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=stdin, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    if ready:
        end = time.monotonic() + 60
        while not any(ready in l for l in lines) and p.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
    if perf:
        # cpu-clock, not cycles: a VM may offer no hardware counters. The
        # steady state (handshakes done) is the run's second half.
        time.sleep(seconds // 2)
        subprocess.run(["perf", "record", "-q", "-F", "2999", "-e", "cpu-clock", "-p", str(p.pid), "-o", perf,
                        "--", "sleep", str(max(1, seconds - seconds // 2 - 1))], check=True)
        seconds = 1
    time.sleep(seconds)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    if p.returncode not in (0, -signal.SIGINT, 130):
        sys.exit(f"pipeline: {cmd[0]} exited {p.returncode}:\n{out[-3000:]}")
    return out


# Smoke mode (--smoke): stats every 250 ms, and whatever was measured is
# taken, steady or not.
SMOKE = False


def interval_ms():
    return 250 if SMOKE else 1000


def lazarus(seconds, cfg, eal=EAL, steady=False, perf=None, output=None):
    """Median-ready per-second rates and the TSC Hz; `output` (a list), when
    given, receives the whole output (the exit summary's counters)."""
    # Smoke runs are short: their seconds start when the ports do.
    out = run_for([BIN, *eal, "--file-prefix", "lzbench", "--", "--config", cfg], seconds, ready="forwarding" if SMOKE else None, perf=perf)
    pairs = [(float(r), float(t)) for r, t in re.findall(r"stats elapsed=\S+ .*? rx_mpps=([0-9.]+) tx_mpps=([0-9.]+)", out)]
    if SMOKE:
        steady = False
    if steady:
        # Steady state: from the first second in which everything received
        # was forwarded (the handshakes are done), that second excluded.
        first = next((i for i, (r, t) in enumerate(pairs) if r > 0 and t >= 0.999 * r), len(pairs))
        pairs = pairs[first + 1:]
    if output is not None:
        output.append(out)
    rates = [t for _, t in pairs]
    hz = re.search(r"tsc_hz=(\d+)", out)
    if not rates or not hz:
        sys.exit(f"pipeline: no stats from lazarus-dataplane:\n{out[-3000:]}")
    return rates[2:] or rates, int(hz.group(1))


def testpmd(seconds, eal=EAL, extra=()):
    # testpmd exits on stdin EOF: keep a pipe open for the whole run.
    keep = subprocess.Popen(["sleep", str(seconds + 60)], stdout=subprocess.PIPE)
    # --huge-unlink: testpmd leaves its hugepage files behind otherwise.
    out = run_for(["dpdk-testpmd", *eal, "--file-prefix", "lzbench-tp", "--huge-unlink", "--", "--forward-mode=io",
                   "--nb-cores=1", "--burst=32", "--stats-period", "1", *extra], seconds + (3 if SMOKE else 4), stdin=keep.stdout)
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
    ap.add_argument("--flows", type=int, default=0, help="firewall mode: established TCP over this many flows")
    ap.add_argument("--churn", type=int, default=None, metavar="DATA", help="checkpoint mode: connections churning, DATA established packets a life; checkpointing off and on")
    ap.add_argument("--protect", type=int, default=None, metavar="SEGMENTS", help="protect mode: bulk uploads of SEGMENTS full-sized segments to a protected service; protection off and on")
    ap.add_argument("--markdown", action="store_true", help="print a table for docs/BENCHMARKS.md")
    ap.add_argument("--smoke", action="store_true", help="one short round (2 s) to check the command runs; figures not judged")
    ap.add_argument("--perf", metavar="FILE", help="sample lazarus's steady state with perf (cpu-clock) into FILE, the last round's; read it with perf report --comm rte-worker-1 / perf annotate")
    a = ap.parse_args()
    if a.perf and a.churn is not None:
        sys.exit("pipeline: --perf is for the firewall, bridge and protect modes")
    if a.churn is not None and a.protect is not None:
        sys.exit("pipeline: --churn or --protect, not both")
    if a.smoke:
        global SMOKE
        SMOKE = True
        a.seconds, a.rounds = 2, 1
    if a.churn is not None:
        if not a.flows:
            sys.exit("pipeline: --churn needs --flows")
        return churn_main(a)
    if a.protect is not None:
        if a.protect < 1 or a.flows:
            sys.exit("pipeline: --protect takes at least one segment, and no --flows")
        return protect_main(a)
    if not os.path.exists(BIN):
        sys.exit(f"pipeline: {BIN} missing: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="lzbench-")
    cfg = os.path.join(tmp, "lazarus.toml")
    eal, tp_extra, name = EAL, (), "lazarus-dataplane (bridge, 1 worker)"
    if a.flows:
        hs, est = make_pcaps(a.flows, tmp)
        # infinite_rx holds the whole pcap in mbufs of the port's pool: small
        # mbufs (256-byte buffers) keep 1 000 000 of them within the hugepages.
        mbufs = a.flows + 16384
        mem = 64 + mbufs * 512 // 2**20 + a.flows * 400 // 2**20
        eal = ["-l", "0,1", "-m", str(mem), "--no-pci", "--vdev", f"net_pcap0,rx_pcap={hs}", "--vdev", f"net_pcap1,rx_pcap={est},infinite_rx=1"]
        tp_extra = (f"--total-num-mbufs={mbufs}", "--mbuf-size=256")
        name = f"lazarus-dataplane (firewall, {a.flows} flows, 1 worker)"
        with open(cfg, "w") as f:
            f.write(FW_CONFIG.format(interval=interval_ms(), mbufs=mbufs, capacity=a.flows + a.flows // 8 + 1024, checkpoint=CKPT_OFF, data_room=256, protected=""))
    else:
        with open(cfg, "w") as f:
            f.write(CONFIG.format(interval=interval_ms()))
    lz, tp, hz = [], [], 0
    try:
        for r in range(a.rounds):
            rates, hz = lazarus(a.seconds, cfg, eal, steady=bool(a.flows), perf=a.perf)
            lz += rates
            tp += testpmd(a.seconds, eal, tp_extra)
            print(f"round {r + 1}/{a.rounds}: lazarus {statistics.median(rates):.2f} Mpps, testpmd {statistics.median(tp[-len(rates):]):.2f} Mpps", file=sys.stderr)
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    l, t = statistics.median(lz), statistics.median(tp)
    cpp = lambda mpps: hz / (mpps * 1e6)
    rows = [(name, l, cpp(l)), ("dpdk-testpmd io (1 core)", t, cpp(t))]
    if a.markdown:
        print("| forwarder | Mpps | cycles/packet |\n|---|---:|---:|")
        for n, m, c in rows:
            print(f"| {n} | {m:.2f} | {c:.1f} |")
        print(f"\nratio lazarus/testpmd: **{l / t:.3f}** (TSC {hz / 1e9:.2f} GHz, {len(lz)} + {len(tp)} one-second samples)")
    else:
        for n, m, c in rows:
            print(f"{n:40} {m:8.2f} Mpps {c:8.1f} cycles/packet")
        print(f"ratio lazarus/testpmd: {l / t:.3f}")


def remove_dirs(tmp, seg_root):
    """A round's pcaps and configs, and the segments' root (each round's
    checkpointd removed its own)."""
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    os.rmdir(seg_root)


def churn_main(a):
    if not os.path.exists(CKPT_BIN):
        sys.exit(f"pipeline: {CKPT_BIN} missing: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="lzbench-")
    # Segments where checkpointd keeps them: hugetlbfs, else /dev/shm.
    seg_root = tempfile.mkdtemp(prefix="lzbench-seg-", dir="/dev/hugepages" if os.path.ismount("/dev/hugepages") else "/dev/shm")
    empty, churn, frames = make_churn_pcap(a.flows, a.churn, tmp)
    mbufs = frames + 16384
    mem = 64 + mbufs * 512 // 2**20 + a.flows * 400 // 2**20
    eal = ["-l", "0,1", "-m", str(mem), "--no-pci", "--vdev", f"net_pcap0,rx_pcap={empty}", "--vdev", f"net_pcap1,rx_pcap={churn},infinite_rx=1"]
    capacity = a.flows + a.flows // 8 + 1024
    off_cfg, on_cfg = os.path.join(tmp, "off.toml"), os.path.join(tmp, "on.toml")
    with open(off_cfg, "w") as f:
        f.write(FW_CONFIG.format(interval=interval_ms(), mbufs=mbufs, capacity=capacity, checkpoint=CKPT_OFF, data_room=256, protected=""))
    offs, ons, ratios, hz = [], [], [], 0
    try:
        for r in range(a.rounds):
            seg = os.path.join(seg_root, f"r{r}")
            with open(on_cfg, "w") as f:
                f.write(FW_CONFIG.format(interval=interval_ms(), mbufs=mbufs, capacity=capacity, checkpoint=CKPT_ON.format(dir=seg), data_room=256, protected=""))
            # Alternate which goes first, so neither always follows the other.
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            got = {}
            for side in order:
                if side == "on":
                    ck = Checkpointd(on_cfg, seg)
                    try:
                        rates, hz = lazarus(a.seconds, on_cfg, eal, steady=True)
                    finally:
                        ck.stop()
                else:
                    rates, hz = lazarus(a.seconds, off_cfg, eal, steady=True)
                got[side] = statistics.median(rates)
            offs.append(got["off"])
            ons.append(got["on"])
            ratios.append(got["on"] / got["off"])
            print(f"round {r + 1}/{a.rounds}: off {got['off']:.2f} Mpps, on {got['on']:.2f} Mpps, on/off {ratios[-1]:.3f}", file=sys.stderr)
    finally:
        remove_dirs(tmp, seg_root)
    off, on, ratio = statistics.median(offs), statistics.median(ons), statistics.median(ratios)
    cpp = lambda mpps: hz / (mpps * 1e6)
    label = f"{a.flows} flows churning, {a.churn + 7} packets a life, 1 worker"
    if a.markdown:
        print("| lazarus-dataplane | Mpps | cycles/packet |\n|---|---:|---:|")
        print(f"| checkpointing off ({label}) | {off:.2f} | {cpp(off):.1f} |")
        print(f"| checkpointing on, checkpointd draining | {on:.2f} | {cpp(on):.1f} |")
        print(f"\non/off: **{ratio:.3f}** (median of {len(ratios)} paired rounds: {', '.join(f'{x:.3f}' for x in ratios)})")
    else:
        print(f"checkpointing off ({label}) {off:8.2f} Mpps {cpp(off):8.1f} cycles/packet")
        print(f"checkpointing on                              {on:8.2f} Mpps {cpp(on):8.1f} cycles/packet")
        print(f"on/off: {ratio:.3f} (paired rounds: {', '.join(f'{x:.3f}' for x in ratios)})")


def summary_counters(out):
    """The exit summary's named counters (`name=value`), summed over workers,
    and the ports' totals (rx=, from the last stats line)."""
    got = {}
    for line in out.splitlines():
        if "conntrack summary" in line:
            for k, v in re.findall(r"([a-z_.]+)=(\d+)", line.split("conntrack summary", 1)[1]):
                got[k] = got.get(k, 0) + int(v)
    return got


def protect_main(a):
    if not os.path.exists(CKPT_BIN):
        sys.exit(f"pipeline: {CKPT_BIN} missing: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="lzbench-")
    seg_root = tempfile.mkdtemp(prefix="lzbench-seg-", dir="/dev/hugepages" if os.path.ismount("/dev/hugepages") else "/dev/shm")
    cpcap, spcap, lap, conns = make_protect_pcaps(a.protect, tmp)
    # Both replays are held in mbufs of the pool.
    mbufs = 2 * lap + 16384
    mem = 128 + mbufs * 2560 // 2**20
    eal = ["-l", "0,1", "-m", str(mem), "--no-pci", "--vdev", f"net_pcap0,rx_pcap={cpcap},infinite_rx=1", "--vdev", f"net_pcap1,rx_pcap={spcap},infinite_rx=1"]
    capacity = conns + 1024
    bound = max(1 << 20, (a.protect + 1) * MSS)
    offs, ons, ratios, hz, checks = [], [], [], 0, []
    try:
        for r in range(a.rounds):
            # Alternate which goes first, so neither always follows the other.
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            got = {}
            for side in order:
                seg = os.path.join(seg_root, f"r{r}{side}")
                cfg = os.path.join(tmp, f"{side}.toml")
                with open(cfg, "w") as f:
                    f.write(FW_CONFIG.format(interval=interval_ms(), mbufs=mbufs, capacity=capacity, checkpoint=CKPT_ON.format(dir=seg),
                                             data_room=2176, protected=PROTECTED.format(bound=bound, connections=conns + 64) if side == "on" else ""))
                ck = Checkpointd(cfg, seg)
                out = []
                try:
                    # Not `steady`: a life's last server frame is dropped, so
                    # tx never reaches rx; the first seconds are dropped still.
                    # Both sides sampled alike (perf costs both the same);
                    # the unprotected side's samples go to FILE.off.
                    perf = a.perf and (a.perf if side == "on" else a.perf + ".off")
                    rates, hz = lazarus(a.seconds, cfg, eal, output=out, perf=perf)
                finally:
                    ck.stop()
                got[side] = statistics.median(rates)
                n = summary_counters(out[0])
                rx = [int(x) for x in re.findall(r"stats elapsed=\S+ rx=(\d+)", out[0])]
                # A lap replays each connection's life once per lane turn.
                lives = (rx[-1] if rx else 0) // 2 * conns // lap
                if side == "on":
                    checks.append(n)
                    # Every life replayed was protected anew: a replay that
                    # found its old entry would log nothing and flatter the figure.
                    if n.get("protect.connections", 0) < 0.9 * lives or n.get("protect.log_bound", 0):
                        sys.exit(f"pipeline: protected round not as designed: {lives} lives replayed, counters {n}")
            offs.append(got["off"])
            ons.append(got["on"])
            ratios.append(got["on"] / got["off"])
            c = checks[-1]
            print(f"round {r + 1}/{a.rounds}: unprotected {got['off']:.3f} Mpps, protected {got['on']:.3f} Mpps, ratio {ratios[-1]:.3f}; "
                  f"protected connections {c.get('protect.connections', 0)}, log_ring_full {c.get('protect.log_ring_full', 0)}, "
                  f"log_gap {c.get('protect.log_gap', 0)}, log_bound {c.get('protect.log_bound', 0)}, invalid {c.get('invalid', 0)}", file=sys.stderr)
    finally:
        remove_dirs(tmp, seg_root)
    off, on, ratio = statistics.median(offs), statistics.median(ons), statistics.median(ratios)
    cpp = lambda mpps: hz / (mpps * 1e6)
    ring_full = sum(c.get("protect.log_ring_full", 0) for c in checks)
    # A segment dropped for a full ring is never sent again by a replay: the
    # rest of its life is dropped after the gap, unlogged, and flatters the
    # figure. Said with it.
    gaps = sum(c.get("protect.log_gap", 0) for c in checks)
    bound_hit = sum(c.get("protect.log_bound", 0) for c in checks)
    label = f"{conns} bulk uploads of {a.protect} × {MSS} B, 1 worker"
    if a.markdown:
        print("| lazarus-dataplane, checkpointd draining | Mpps | cycles/packet |\n|---|---:|---:|")
        print(f"| unprotected ({label}) | {off:.3f} | {cpp(off):.1f} |")
        print(f"| protected, output commit local | {on:.3f} | {cpp(on):.1f} |")
        print(f"\nprotected/unprotected: **{ratio:.3f}** (median of {len(ratios)} paired rounds: {', '.join(f'{x:.3f}' for x in ratios)}); "
              f"bound exceeded {bound_hit}, client segments dropped for a full ring {ring_full} and after the gaps it left {gaps}"
              + ("" if ring_full + gaps == 0 else " (**the figure is flattered: rerun on a quieter machine**)"))
    else:
        print(f"unprotected ({label}) {off:8.3f} Mpps {cpp(off):8.1f} cycles/packet")
        print(f"protected                                {on:8.3f} Mpps {cpp(on):8.1f} cycles/packet")
        print(f"protected/unprotected: {ratio:.3f} (paired rounds: {', '.join(f'{x:.3f}' for x in ratios)}); bound exceeded {bound_hit}, ring full {ring_full}, after gaps {gaps}"
              + ("" if ring_full + gaps == 0 else " (the figure is flattered: rerun on a quieter machine)"))

if __name__ == "__main__":
    main()
