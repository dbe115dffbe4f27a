#!/usr/bin/env python3
"""Helpers of scripts/bench-load.sh.

  load_probe.py poll OUT INTERVAL_S NAME=PREFIX:PORT...
      Polls `/ethdev/stats,PORT` of each named DPDK process through its
      telemetry socket (/var/run/dpdk/PREFIX/dpdk_telemetry.v2) every
      INTERVAL_S seconds until SIGTERM/SIGINT, appending one line per poll to
      OUT: `t_unix name=ipackets/opackets ...` (-1/-1 while a process is
      not reachable). Telemetry runs on a control thread of each process, so
      polling does not stop its forwarding lcore.

  load_probe.py wait-down TIMEOUT_S TRIGGER_FILE PREFIX:PORT...
      Once TRIGGER_FILE exists, waits until each port reports its link down (telemetry
      /ethdev/link_status): a memif server takes a moment to notice that its
      client died, and refuses the successor until it has.

  load_probe.py report --samples F --dataplane-log F --gen-log F [--kill-times F]
                       [--generator NAME] [--markdown]
      Prints the table: generator tx pps, dataplane rx/tx Mpps, sink rx pps,
      loss; with --kill-times (lines `kill T`, `started T`, unix seconds, date +%s.%N)
      the outage at the sink and the packets lost across the restart.

Outage resolution: the sink's counter is read every INTERVAL_S (10 ms by
default). A silence that spans the polls j..k (count unchanged from poll j to
poll k-1, moved at k) lasted between t[k-1]-t[j] and t[k]-t[j-1]; the report
gives the middle of that interval and its half-width.
"""
import json, os, re, signal, socket, statistics, sys, time


def tele_connect(prefix):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(0.2)
    s.connect(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
    s.recv(1024)  # {"version":..., "pid":..., "max_output_len":...}
    return s


def poll(out, interval, targets):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    socks = {}
    parsed = []
    for t in targets:
        name, rest = t.split("=", 1)
        prefix, port = rest.rsplit(":", 1)
        parsed.append((name, prefix, int(port)))
    with open(out, "w", buffering=1) as f:
        nxt = time.monotonic()
        while not stop:
            cols = [f"{time.time():.6f}"]
            for name, prefix, port in parsed:
                ip, op = -1, -1
                try:
                    if name not in socks:
                        socks[name] = tele_connect(prefix)
                    s = socks[name]
                    s.send(f"/ethdev/stats,{port}".encode())
                    st = json.loads(s.recv(65536))["/ethdev/stats"]
                    ip, op = st["ipackets"], st["opackets"]
                except (OSError, ValueError, KeyError, TypeError):
                    # Not up yet, or gone (killed, restarting): reconnect next poll.
                    s = socks.pop(name, None)
                    if s:
                        s.close()
                cols.append(f"{name}={ip}/{op}")
            f.write(" ".join(cols) + "\n")
            nxt += interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()


def wait_down(timeout, trigger, targets):
    """Once the file `trigger` exists, waits until every PREFIX:PORT reports
    its link down (a memif server that has seen its client go); prints the
    time. Started before the kill, so Python's start-up is not in the outage.
    Exit status 1 on timeout."""
    while not os.path.exists(trigger):
        time.sleep(0.001)
    end = time.monotonic() + timeout
    pending = list(targets)
    while pending and time.monotonic() < end:
        for t in list(pending):
            prefix, port = t.rsplit(":", 1)
            try:
                s = tele_connect(prefix)
                s.send(f"/ethdev/link_status,{port}".encode())
                st = json.loads(s.recv(4096))["/ethdev/link_status"]
                s.close()
                if st.get("status") == "DOWN":
                    pending.remove(t)
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.001)
    print(f"servers_down {time.time():.6f}")
    sys.exit(1 if pending else 0)


def load_samples(path):
    rows = []
    for line in open(path):
        p = line.split()
        if not p:
            continue
        r = {"t": float(p[0])}
        for c in p[1:]:
            k, v = c.split("=")
            i, o = v.split("/")
            r[k] = (int(i), int(o))
        rows.append(r)
    return rows


def series(rows, name, which):
    """(t, count) for the polls where the process answered."""
    idx = 0 if which == "rx" else 1
    return [(r["t"], r[name][idx]) for r in rows if name in r and r[name][idx] >= 0]


def rate(s, t0, t1):
    """Packets per second of a counter series between t0 and t1 (nearest polls)."""
    a = [p for p in s if t0 <= p[0] <= t1]
    if len(a) < 2 or a[-1][0] <= a[0][0]:
        return 0.0
    return (a[-1][1] - a[0][1]) / (a[-1][0] - a[0][0])


def longest_silence(s, t0, t1):
    """Longest run of polls without a change of the counter, inside [t0, t1].
    Returns (mid_ms, halfwidth_ms, start_t, end_t) or None."""
    a = [p for p in s if t0 <= p[0] <= t1]
    best = None
    last_move = None  # index of the last poll at which the counter moved
    for i in range(1, len(a)):
        if a[i][1] != a[i - 1][1]:
            if last_move is not None and i - last_move > 1:
                lo = a[i - 1][0] - a[last_move][0]
                hi = a[i][0] - a[last_move - 1][0]
                if best is None or hi + lo > best[0] + best[1]:
                    best = (lo, hi, a[last_move][0], a[i][0])
            last_move = i
    if best is None:
        return None
    lo, hi, s0, s1 = best
    return ((lo + hi) / 2 * 1e3, (hi - lo) / 2 * 1e3, s0, s1)


def dataplane_rates(log):
    """Per-second rx/tx Mpps of every life of the dataplane (stats lines)."""
    rx, tx = [], []
    for m in re.finditer(r"stats elapsed=\S+ .*? rx_mpps=([0-9.]+) tx_mpps=([0-9.]+)", open(log).read()):
        rx.append(float(m.group(1)))
        tx.append(float(m.group(2)))
    return rx, tx


def gen_dropped(log):
    """testpmd's forward statistics at stop: packets the link did not take."""
    m = re.findall(r"TX-dropped:\s+(\d+)", open(log, errors="replace").read())
    return int(m[-1]) if m else None


def report(a):
    rows = load_samples(a.samples)
    if len(rows) < 10:
        sys.exit("bench-load: too few telemetry samples")
    g_tx = series(rows, "gen", "tx")
    s_rx = series(rows, "sink", "rx")
    if len(g_tx) < 2 or len(s_rx) < 2:
        sys.exit("bench-load: the generator or the sink never answered telemetry")
    kill = started = down = None
    if a.kill_times:
        for line in open(a.kill_times):
            k, v = line.split()
            if k == "kill":
                kill = float(v)
            elif k == "started":
                started = float(v)
            elif k == "servers_down":
                down = float(v)
    t0, t1 = rows[0]["t"], rows[-1]["t"]
    # Counts over the sink's whole window; the generator's sent packets over the same.
    gen_total = g_tx[-1][1] - g_tx[0][1]
    sink_total = s_rx[-1][1] - s_rx[0][1]
    dur = t1 - t0
    lost_total = gen_total - sink_total
    loss = 100.0 * lost_total / gen_total if gen_total else float("nan")
    rx, tx = dataplane_rates(a.dataplane_log)
    # Steady per-second figures of the dataplane: non-zero seconds, first dropped.
    rx_s = [r for r in rx if r > 0][1:] or rx
    tx_s = [t for t in tx if t > 0][1:] or tx
    gd = gen_dropped(a.gen_log) if a.gen_log else None
    title = f"{a.generator} → lazarus-dataplane → sink ({a.label})"
    lines = []
    lines.append(("generator tx (sent into the link)", f"{gen_total / dur / 1e6:.3f} Mpps", f"{gen_total} packets in {dur:.2f} s"))
    if gd is not None:
        lines.append(("generator tx refused by the link (back-pressure)", f"{gd}", "ring full, or link down (then testpmd retries in a tight loop: attempts, not packets)"))
    lines.append(("dataplane rx (median of 1 s stats)", f"{statistics.median(rx_s):.3f} Mpps" if rx_s else "-", ""))
    lines.append(("dataplane tx (median of 1 s stats)", f"{statistics.median(tx_s):.3f} Mpps" if tx_s else "-", ""))
    lines.append(("received at the sink", f"{sink_total / dur / 1e6:.3f} Mpps", f"{sink_total} packets"))
    lines.append(("loss (sent − received) / sent", f"{loss:.3f} %", f"{lost_total} packets"))
    if kill is not None:
        pre = rate(s_rx, max(t0, kill - 1.0), kill - 0.02)
        sil = longest_silence(s_rx, kill - 0.5, t1)
        if sil is None:
            lines.append(("outage at the sink", "none seen", f"poll {a.interval * 1e3:.0f} ms"))
        else:
            mid, hw, s0, s1 = sil
            lines.append(("outage at the sink (longest silence)", f"{mid:.0f} ms ± {hw:.0f}", f"polled every {a.interval * 1e3:.0f} ms"))
            lines.append(("not delivered during the outage", f"{pre * mid / 1e3:.0f} packets", f"pre-kill sink rate {pre / 1e6:.3f} Mpps × outage"))
            # What entered the firewall and never left it: in its rings at the
            # kill, or dropped by it (the generator cannot send while the link is down).
            lines.append(("sent into the dataplane, never delivered", f"{lost_total}", "whole run, the kill included"))
        if down:
            lines.append(("kill → memif servers report link down", f"{(down - kill) * 1e3:.0f} ms", "the killed process's teardown; the restart waits for it"))
        if started:
            lines.append(("kill → restarted dataplane forwarding", f"{(started - kill) * 1e3:.0f} ms", "script's clock; EAL init, checkpointd attach, restore"))
        after = [p for p in s_rx if p[0] > (started or kill)]
        moved = len(after) > 1 and after[-1][1] > after[0][1]
        lines.append(("traffic at the sink after the restart", "yes" if moved else "NO", ""))
    if a.markdown:
        print(f"**{title}**\n\n| figure | value | note |\n|---|---:|---|")
        for n, v, note in lines:
            print(f"| {n} | {v} | {note} |")
    else:
        print(title)
        for n, v, note in lines:
            print(f"  {n:50} {v:>18}  {note}")
    if sink_total <= 0:
        sys.exit("bench-load: nothing reached the sink")
    if kill is not None and not moved:
        sys.exit("bench-load: no traffic reached the sink after the restart")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "wait-down":
        wait_down(float(sys.argv[2]), sys.argv[3], sys.argv[4:])
    if len(sys.argv) > 1 and sys.argv[1] == "poll":
        poll(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
        return
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["report"])
    ap.add_argument("--samples", required=True)
    ap.add_argument("--dataplane-log", required=True)
    ap.add_argument("--gen-log")
    ap.add_argument("--kill-times")
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--generator", default="dpdk-testpmd txonly")
    ap.add_argument("--label", default="")
    ap.add_argument("--markdown", action="store_true")
    report(ap.parse_args())


if __name__ == "__main__":
    main()
