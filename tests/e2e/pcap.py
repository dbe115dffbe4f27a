#!/usr/bin/env python3
"""What the e2e tests read from their captures (classic pcap; `rst` wants Ethernet frames).

  pcap.py outage FILE [FROM TO]  the longest silence between two packets (sent
                        between FROM and TO, seconds since the epoch), in ms (-1: fewer than two)
  pcap.py blackout FILE T  the silence a kill at time T (seconds since the epoch) made, in ms
  pcap.py selftest      checks `rst` on hand-made captures
  pcap.py rst FILE      RSTs, from a capture of RSTs and FINs (and of the
                        segments of any connection whose aborts it should
                        recognise): prints "BAD LATE ABORTS"

An RST is late when both ends had sent their FIN on that connection before
it: all data was delivered and the close exchanged, and the RST is a kernel
answering a stray duplicate (after a stall longer than the retransmission
timeout, a retransmitted FIN is ACKed twice and the second ACK finds the
server's socket gone).

An RST is an abort when its sender's kernel had received every byte its peer
sent: it carries an ACK at or past the end of the peer's last segment in the
capture (so the capture must hold that connection's segments from the peer).
Only an application does that to a live connection: closing a socket with
data still unread makes the kernel send RST instead of FIN (RFC 1122
4.2.2.13; Linux counts it as TCPAbortOnClose). iperf3's server does so by
design when the client's last data and its end-of-test message arrive
together (esnet/iperf#382). Nothing the network did is lost: every byte had
arrived.

Any other RST is bad, and printed on stderr.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import frames as F  # noqa: E402


def records(path):
    """(timestamp in seconds, frame bytes) of each packet."""
    return F.read_pcap(path)


def outage(path, since=0.0, until=float("inf")):
    ts = [t for t, _ in records(path) if since <= t <= until]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    print(round(max(gaps) * 1000, 1) if gaps else -1)


def blackout(path, kill):
    """The silence the kill made: the longest gap between two forwarded
    packets that ends after the kill and starts less than 100 ms after it (a
    SIGKILLed process stops within microseconds; the window only keeps the
    ordinary gaps of a quiet moment later out)."""
    ts = [t for t, _ in records(path)]
    gaps = [b - a for a, b in zip(ts, ts[1:]) if b > kill and a < kill + 0.1]
    print(round(max(gaps) * 1000, 1) if gaps else -1)


def endpoint(e):
    return "%s:%d" % (".".join(map(str, e[0])), int.from_bytes(e[1], "big"))


def after(a, b):
    """Whether sequence number a is at or after b (mod 2**32)."""
    return (a - b) & 0xFFFFFFFF < 0x80000000


def rst(path):
    fins, ends, bad, late, aborts = set(), {}, [], 0, 0
    for ts, f in records(path):
        if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        ihl = (f[14] & 15) * 4
        t = f[14 + ihl:]
        if len(t) < 14:
            continue
        src, dst, flags = (f[26:30], t[0:2]), (f[30:34], t[2:4]), t[13]
        seq, ack = struct.unpack(">II", t[4:12])
        if not flags & 0x04:
            # Where this side's bytes end: payload, and the FIN's one.
            length = struct.unpack(">H", f[16:18])[0] - ihl - (t[12] >> 4) * 4 + (flags & 0x01) + (flags & 0x02) // 2
            end = (seq + length) & 0xFFFFFFFF
            if (src, dst) not in ends or after(end, ends[(src, dst)]):
                ends[(src, dst)] = end
        if flags & 0x01:
            fins.add((src, dst))
        if flags & 0x04:
            peer_end = ends.get((dst, src))
            if (src, dst) in fins and (dst, src) in fins:
                late += 1
            elif flags & 0x10 and peer_end is not None and after(ack, peer_end):
                aborts += 1
            else:
                bad.append("%.6f %s > %s" % (ts, endpoint(src), endpoint(dst)))
    for b in bad:
        print("bad RST:", b, file=sys.stderr)
    print(len(bad), late, aborts)


def frame(src, dst, flags, seq, ack, payload=0):
    """An Ethernet/IPv4/TCP frame carrying `payload` bytes (checksums right);
    the selftest's capture keeps only its headers, as tcpdump -s does."""
    return F.eth(F.ipv4(bytes(src[0]), bytes(dst[0]), 6, F.tcp(src[1], dst[1], flags, seq, ack, window=512, payload=bytes(payload))),
                 dst=bytes(6), src=bytes(6))


def selftest():
    import io
    import contextlib
    import tempfile
    c, s = ((10, 0, 0, 1), 40000), ((10, 0, 0, 2), 5201)
    ACK, PSH, FIN, RST = 0x10, 0x08, 0x01, 0x04
    cases = {
        # Every byte the client sent had arrived: the server's application
        # closed with data unread.
        "abort": ([(c, s, PSH | ACK, 1000, 1, 500), (s, c, RST | ACK, 1, 1500)], "0 0 1"),
        # The RST leaves the client's last 100 bytes unacknowledged.
        "abort with bytes missing": ([(c, s, PSH | ACK, 1000, 1, 500), (s, c, RST | ACK, 1, 1400)], "1 0 0"),
        # Nothing of the peer's in the capture: nothing to say every byte arrived.
        "abort unseen": ([(s, c, RST | ACK, 1, 1500)], "1 0 0"),
        # A RST without ACK answers a segment for a socket that is gone
        # (its acknowledgment field means nothing).
        "no socket": ([(c, s, PSH | ACK, 1000, 1, 500), (s, c, RST, 1, 1500)], "1 0 0"),
        "after both FINs": ([(c, s, FIN | ACK, 1000, 1), (s, c, FIN | ACK, 1, 1001), (s, c, RST, 2, 0)], "0 1 0"),
        "after one FIN": ([(c, s, FIN | ACK, 1000, 1), (s, c, RST | ACK, 1, 1000)], "1 0 0"),
        # Sequence numbers wrap: 0xFFFFFF00 + 0x200 ends at 0x100.
        "abort across the wrap": ([(c, s, PSH | ACK, 0xFFFFFF00, 1, 0x200), (s, c, RST | ACK, 1, 0x100)], "0 0 1"),
    }
    failed = 0
    for name, (pkts, want) in cases.items():
        with tempfile.NamedTemporaryFile(suffix=".pcap") as tmp:
            F.write_pcap(tmp.name, [(1000 + i * 1e-6, frame(*p)) for i, p in enumerate(pkts)], snaplen=96)
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rst(tmp.name)
        got = out.getvalue().strip()
        if got != want:
            print("pcap.py selftest: %s: got %r, want %r" % (name, got, want), file=sys.stderr)
            failed += 1
    print("pcap.py selftest: %d of %d cases right" % (len(cases) - failed, len(cases)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if sys.argv[1:] == ["selftest"]:
        selftest()
    if len(sys.argv) == 5 and sys.argv[1] == "outage":
        outage(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "blackout":
        blackout(sys.argv[2], float(sys.argv[3]))
        sys.exit(0)
    if len(sys.argv) != 3 or sys.argv[1] not in ("outage", "rst"):
        sys.exit(__doc__)
    {"outage": outage, "rst": rst}[sys.argv[1]](sys.argv[2])
