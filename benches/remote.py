#!/usr/bin/env python3
"""Remote copy benchmark (issue 20): appliance A's dataplane forwards churning
TCP connections through net_pcap (benches/pipeline.py's churn lives, diluted
with filler frames the dataplane drops, so the rate of new connections is
set by --filler), A's checkpointd copies them to Debian's redis-server on
loopback, and B's checkpointd, a standby, follows the copy into its mirror.

Rounds alternate the remote copy off (A's checkpointd local only) and on,
each with a fresh redis-server and fresh segments. Reported, from the
daemons' own counters over the measured seconds:
  * new connections a second through A (lives: the churn pcap's share of
    what A forwarded, over the packets of a life);
  * records and deletes A wrote to Redis a second, and B applied a second;
  * replication lag, from A's drain of a change to B's application of it,
    p50 and p99 (B's histogram, 100 µs bins, both clocks this host's);
  * bytes A sent to Redis per connection life;
  * A's ring_full (must stay 0) and Mpps on/off (the dataplane's cost).

Takeover mode (--takeover N): N connections established through A (the
pipeline's handshakes pcap), mirrored on B, whose supervised dataplane runs
on net_null; `lazarusctl takeover` against B is timed, from the command to
B's worker process forwarding with all N restored.

usage: benches/remote.py [--flows 10000] [--data 3] [--filler 60] [--seconds 8] [--rounds 3] [--markdown] [--smoke]
       benches/remote.py --takeover 1000000 [--rounds 3]
Needs root, hugepages, redis-server (scripts/setup.sh) and a release build.
"""
import argparse, importlib.util, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("pipeline", os.path.join(HERE, "pipeline.py"))
pl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pl)
CTL = os.path.join(os.path.dirname(pl.BIN), "lazarusctl")

REMOTE = """[checkpoint.remote]
url = "redis://127.0.0.1:{port}"
hmac_key_file = "{key}"
namespace = "bench"
role = "{role}"
appliance = "{name}"
flush_interval_ms = {flush_ms}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Redis:
    def __init__(self, d):
        self.port = free_port()
        self.p = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("remote: redis-server did not start (scripts/setup.sh installs it)")

    def stop(self):
        self.p.kill()
        self.p.wait()


def pin_to_core0(pid):
    """The daemons off the worker's core (lcore 1): on two cores they would
    otherwise take the worker's cycles, which on a real pair run on other
    machines (Redis, B) or other cores (checkpointd)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {0})
        except OSError:
            pass


def ask(sock, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock)
    s.sendall((json.dumps(cmd) + "\n").encode())
    line = s.makefile().readline()
    s.close()
    return json.loads(line)


def write_config(path, seg, extra, capacity, mbufs, pcaps):
    text = pl.FW_CONFIG.format(interval=pl.interval_ms(), mbufs=mbufs, capacity=capacity,
                               checkpoint=pl.CKPT_ON.format(dir=seg), data_room=256, protected="") + extra
    with open(path, "w") as f:
        f.write(text)


def churn_pcap(flows, data, filler, d):
    """The pipeline's churn lives, each frame followed by `filler` frames of an
    experimental EtherType that the dataplane drops."""
    empty, churn, frames = pl.make_churn_pcap(flows, data, d)
    if filler == 0:
        return empty, churn, frames
    drop = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x88\xb5" + bytes(46)
    # Rewrite: read the churn pcap's frames back (they are 60 bytes each).
    raw = open(churn, "rb").read()
    out, at = [], 24
    while at < len(raw):
        n = int.from_bytes(raw[at + 8:at + 12], "little")
        out.append(raw[at + 16:at + 16 + n])
        at += 16 + n
    diluted = os.path.join(d, "diluted.pcap")
    pl.write_pcap(diluted, (f for fr in out for f in [fr] + [drop] * filler))
    return empty, diluted, len(out) * (1 + filler)


def run_dataplane(cfg, eal, seconds, probe_at):
    """Runs A's dataplane; at `probe_at` seconds calls probe() (returns its
    result with the stats lines' rates)."""
    got = {}
    def later():
        time.sleep(probe_at)
        got["probe"] = probe()
    probe = run_dataplane.probe
    t = threading.Thread(target=later, daemon=True)
    t.start()
    rates, hz = pl.lazarus(seconds, cfg, eal, steady=False)
    t.join(timeout=30)
    return rates, hz, got.get("probe")


def dp_stats():
    r = subprocess.run([CTL, "--file-prefix", "lzbench", "--json", "stats"], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def ring_full(stats):
    """Sum of every worker's ring_full in lazarusctl stats --json."""
    total = 0
    def walk(v):
        nonlocal total
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "ring_full" and isinstance(x, (int, float)):
                    total += x
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(stats)
    return total


def churn_main(a):
    tmp = tempfile.mkdtemp(prefix="lzremote-")
    seg_root = tempfile.mkdtemp(prefix="lzremote-seg-", dir="/dev/hugepages" if os.path.ismount("/dev/hugepages") else "/dev/shm")
    key = os.path.join(tmp, "remote.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    empty, churn, frames = churn_pcap(a.flows, a.data, a.filler, tmp)
    life = a.data + 7
    churn_share = 1 / (1 + a.filler)
    mbufs = frames + 16384
    mem = 64 + mbufs * 512 // 2**20 + a.flows * 400 // 2**20
    eal = ["-l", "0,1", "-m", str(mem), "--no-pci", "--vdev", f"net_pcap0,rx_pcap={empty}", "--vdev", f"net_pcap1,rx_pcap={churn},infinite_rx=1"]
    capacity = a.flows + a.flows // 8 + 1024
    rows = []
    try:
        for r in range(a.rounds):
            for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
                segA, segB = os.path.join(seg_root, f"a{r}{side}"), os.path.join(seg_root, f"b{r}{side}")
                cfgA, cfgB = os.path.join(tmp, "a.toml"), os.path.join(tmp, "b.toml")
                redis = Redis(tmp) if side == "on" else None
                extraA = REMOTE.format(port=redis.port, key=key, role="active", name="A", flush_ms=a.flush_ms) if redis else ""
                write_config(cfgA, segA, extraA, capacity, mbufs, None)
                ckB = None
                if redis:
                    write_config(cfgB, segB, REMOTE.format(port=redis.port, key=key, role="standby", name="B", flush_ms=a.flush_ms), capacity, mbufs, None)
                    ckB = pl.Checkpointd(cfgB, segB)
                    pin_to_core0(ckB.p.pid)
                ckA = pl.Checkpointd(cfgA, segA)
                pin_to_core0(ckA.p.pid)
                sockA, sockB = os.path.join(segA, "checkpointd.sock"), os.path.join(segB, "checkpointd.sock")
                marks = {}
                def probe():
                    # The measured window: from 2 s in to 1 s before the end.
                    time.sleep(0)
                    first = (time.monotonic(), ask(sockA, {"cmd": "status"}), ask(sockB, {"cmd": "status"}) if ckB else None)
                    time.sleep(max(1, a.seconds - 3))
                    last = (time.monotonic(), ask(sockA, {"cmd": "status"}), ask(sockB, {"cmd": "status"}) if ckB else None)
                    return first, last, dp_stats()
                run_dataplane.probe = probe
                try:
                    rates, hz, got = run_dataplane(cfgA, eal, a.seconds, 2)
                finally:
                    ckA.stop()
                    if ckB:
                        ckB.stop()
                    if redis:
                        redis.stop()
                mpps = statistics.median(rates)
                row = {"side": side, "mpps": mpps, "hz": hz, "lives_per_s": mpps * 1e6 * churn_share / life}
                if got:
                    (t0, a0, b0), (t1, a1, b1), st = got
                    dt = t1 - t0
                    row["ring_full"] = ring_full(st)
                    if side == "on":
                        ra0, ra1 = a0["remote"], a1["remote"]
                        rb1 = b1["remote"]
                        row["written_per_s"] = (ra1["records_written"] + ra1["deletes_written"] - ra0["records_written"] - ra0["deletes_written"]) / dt
                        row["applied_per_s"] = (rb1["mirror_applied"] + rb1["mirror_deletes"] - b0["remote"]["mirror_applied"] - b0["remote"]["mirror_deletes"]) / dt
                        row["bytes_per_life"] = (ra1["bytes_sent"] - ra0["bytes_sent"]) / dt / max(row["lives_per_s"], 1)
                        row["lag_p50_us"], row["lag_p99_us"] = rb1["mirror_lag_p50_us"], rb1["mirror_lag_p99_us"]
                        row["pending"] = ra1["pending"]
                rows.append(row)
                print(f"round {r + 1}/{a.rounds} {side}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "side"), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(seg_root, ignore_errors=True)
    ons = [x for x in rows if x["side"] == "on"]
    offs = [x for x in rows if x["side"] == "off"]
    med = lambda xs, k: statistics.median([x[k] for x in xs if x.get(k) is not None]) if any(x.get(k) is not None for x in xs) else float("nan")
    ratio = statistics.median([on["mpps"] / off["mpps"] for on, off in zip(ons, offs)])
    hz = rows[0]["hz"]
    label = f"{a.flows} flows churning, {a.data + 7} packets a life, 1 in {1 + a.filler} frames churn"
    print(f"| figure ({label}) | median of {len(ons)} rounds |\n|---|---:|")
    print(f"| new connections a second through A | {med(ons, 'lives_per_s'):,.0f} |")
    print(f"| records + deletes A wrote to Redis a second | {med(ons, 'written_per_s'):,.0f} |")
    print(f"| records + deletes B applied to its mirror a second | {med(ons, 'applied_per_s'):,.0f} |")
    print(f"| replication lag A drain → B mirror, p50 / p99 | {med(ons, 'lag_p50_us') / 1000:.1f} / {med(ons, 'lag_p99_us') / 1000:.1f} ms |")
    print(f"| bytes to Redis per connection life | {med(ons, 'bytes_per_life'):.0f} |")
    print(f"| A's ring_full, remote on | {max(x.get('ring_full', 0) for x in ons):.0f} |")
    print(f"| Mpps remote on / off (paired rounds) | {med(ons, 'mpps'):.2f} / {med(offs, 'mpps'):.2f} = **{ratio:.3f}** ({hz / (med(ons, 'mpps') * 1e6):.1f} / {hz / (med(offs, 'mpps') * 1e6):.1f} cycles a packet) |")


# The pipeline's net_null forwarding config, with connection tracking on.
NULL_CONFIG = pl.CONFIG.replace("[conntrack]\nenabled = false\n[checkpoint]\nenabled = false\n",
                                "[conntrack]\nenabled = true\ncapacity = {capacity}\nftp = false\n")


def wait_for(what, pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    sys.exit(f"remote: {what} within {timeout} s")


def takeover_main(a):
    n = a.takeover
    free = int(open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read())
    need = (3 * n * 512 + n * 1200) // (2 << 20) + 600
    if free < need:
        sys.exit(f"remote: {free} free 2 MiB hugepages, about {need} needed for {n} connections: "
                 f"LAZARUS_HUGEPAGES={need + 200} scripts/setup.sh")
    tmp = tempfile.mkdtemp(prefix="lzremote-")
    seg_root = tempfile.mkdtemp(prefix="lzremote-seg-", dir="/dev/hugepages")
    key = os.path.join(tmp, "remote.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    hs, _ = pl.make_pcaps(n, tmp)
    empty = os.path.join(tmp, "empty.pcap")
    pl.write_pcap(empty, [])
    mbufs = 3 * n + 16384
    mem = 64 + mbufs * 512 // 2**20 + n * 400 // 2**20
    capacity = n + n // 8 + 1024
    figures = []
    try:
        for r in range(a.rounds):
            segA, segB = os.path.join(seg_root, f"a{r}"), os.path.join(seg_root, f"b{r}")
            cfgA, cfgB = os.path.join(tmp, "a.toml"), os.path.join(tmp, "b.toml")
            redis = Redis(tmp)
            write_config(cfgA, segA, REMOTE.format(port=redis.port, key=key, role="active", name="A", flush_ms=a.flush_ms), capacity, mbufs, None)
            with open(cfgB, "w") as f:
                f.write(NULL_CONFIG.format(interval=1000, capacity=capacity) + pl.CKPT_ON.format(dir=segB)
                        + "store_capacity = %d\nattach_timeout_ms = 60000\n" % capacity
                        + REMOTE.format(port=redis.port, key=key, role="standby", name="B", flush_ms=a.flush_ms) + "takeover_max_lag_ms = 2000\n")
            procs = []
            try:
                ckB = pl.Checkpointd(cfgB, segB)
                ckA = pl.Checkpointd(cfgA, segA)
                procs += [ckA, ckB]
                sockA, sockB = os.path.join(segA, "checkpointd.sock"), os.path.join(segB, "checkpointd.sock")
                eal = ["-l", "0,1", "-m", str(mem), "--no-pci", "--vdev", f"net_pcap0,rx_pcap={hs}", "--vdev", f"net_pcap1,rx_pcap={empty}"]
                dpA = subprocess.Popen([pl.BIN, *eal, "--file-prefix", "lzbench", "--", "--config", cfgA],
                                       stdout=open(os.path.join(tmp, "a.log"), "w"), stderr=subprocess.STDOUT)
                t0 = time.monotonic()
                wait_for(f"B's mirror did not reach {n} connections",
                         lambda: ask(sockB, {"cmd": "status"})["store"]["conns"] >= n
                         and ask(sockA, {"cmd": "status"})["remote"]["pending"] == 0, 600)
                mirrored_s = time.monotonic() - t0
                dpA.send_signal(signal.SIGKILL)
                dpA.wait()
                ckA.p.kill()
                eal_b = ["-l", "0,1", "-m", "256", "--no-pci", "--vdev", "net_null0", "--vdev", "net_null1"]
                blog = os.path.join(tmp, "b.log")
                dpB = subprocess.Popen([pl.BIN, *eal_b, "--file-prefix", "lzbenchb", "--", "--config", cfgB, "--supervise"],
                                       stdout=open(blog, "w"), stderr=subprocess.STDOUT)
                wait_for("B's dataplane did not start with a standby worker process",
                         lambda: open(blog).read().count("standing by") >= 1 and "forwarding;" in open(blog).read(), 300)
                out = subprocess.run([CTL, "--config", cfgB, "--file-prefix", "lzbenchb", "--json", "takeover"],
                                     capture_output=True, text=True, timeout=120)
                if out.returncode != 0:
                    sys.exit(f"remote: takeover failed: {out.stderr}\n{open(blog).read()[-2000:]}")
                t = json.loads(out.stdout)
                time.sleep(0.5)
                log = open(blog).read()
                restored = [l for l in log.splitlines() if "restore done" in l][-1:]
                figures.append((t["ms"], t["checkpointd"]["ms"], t["checkpointd"]["conns"], mirrored_s, restored[0] if restored else ""))
                print(f"round {r + 1}/{a.rounds}: takeover {t['ms']:.1f} ms (checkpointd {t['checkpointd']['ms']:.1f} ms), "
                      f"{t['checkpointd']['conns']} in the mirror, mirrored in {mirrored_s:.1f} s; {restored}", file=sys.stderr)
                dpB.send_signal(signal.SIGTERM)
                dpB.wait(timeout=30)
            finally:
                for c in procs:
                    c.stop()
                redis.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(seg_root, ignore_errors=True)
    ms = statistics.median(f[0] for f in figures)
    print(f"| takeover of {n:,} mirrored connections, `lazarusctl takeover` to B's worker process forwarding | "
          f"**{ms:.1f} ms** median of {len(figures)} ({', '.join(f'{f[0]:.1f}' for f in figures)}); checkpointd's part "
          f"{statistics.median(f[1] for f in figures):.1f} ms; mirrored through Redis in {statistics.median(f[3] for f in figures):.1f} s |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=250)
    ap.add_argument("--data", type=int, default=3)
    ap.add_argument("--filler", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--flush-ms", type=int, default=2, help="checkpoint.remote.flush_interval_ms")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--takeover", type=int, default=0, metavar="N", help="time the takeover of N mirrored connections")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("remote: needs root (hugepages, DPDK)")
    if shutil.which("redis-server") is None:
        sys.exit("remote: redis-server missing: run scripts/setup.sh")
    if a.smoke:
        pl.SMOKE = True
        a.seconds, a.rounds, a.flows = 4, 1, min(a.flows, 1000)
    if a.takeover:
        takeover_main(a)
    else:
        churn_main(a)


if __name__ == "__main__":
    main()
