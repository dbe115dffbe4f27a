#!/usr/bin/env python3
"""What the e2e tests read from their captures (classic pcap; `rst` wants Ethernet frames).

  pcap.py outage FILE   the longest silence between two packets, in ms (-1: fewer than two)
  pcap.py rst FILE      RSTs, from a capture of RSTs and FINs: prints "BAD LATE"

An RST is late when both ends had sent their FIN on that connection before
it: all data was delivered and the close exchanged, and the RST is a kernel
answering a stray duplicate (after a stall longer than the retransmission
timeout, a retransmitted FIN is ACKed twice and the second ACK finds the
server's socket gone). Any other RST is bad, and printed on stderr.
"""
import struct
import sys


def records(path):
    """(timestamp in seconds, frame bytes) of each packet."""
    d = open(path, "rb").read()
    e = "<" if d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = d[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    off = 24
    while off + 16 <= len(d):
        s, u, incl, _ = struct.unpack(e + "IIII", d[off:off + 16])
        yield s + u / (1e9 if nano else 1e6), d[off + 16:off + 16 + incl]
        off += 16 + incl


def outage(path):
    ts = [t for t, _ in records(path)]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    print(round(max(gaps) * 1000, 1) if gaps else -1)


def endpoint(e):
    return "%s:%d" % (".".join(map(str, e[0])), int.from_bytes(e[1], "big"))


def rst(path):
    fins, bad, late = set(), [], 0
    for ts, f in records(path):
        if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
            continue
        t = f[14 + (f[14] & 15) * 4:]
        if len(t) < 14:
            continue
        src, dst, flags = (f[26:30], t[0:2]), (f[30:34], t[2:4]), t[13]
        if flags & 0x01:
            fins.add((src, dst))
        if flags & 0x04:
            if (src, dst) in fins and (dst, src) in fins:
                late += 1
            else:
                bad.append("%.6f %s > %s" % (ts, endpoint(src), endpoint(dst)))
    for b in bad:
        print("bad RST:", b, file=sys.stderr)
    print(len(bad), late)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("outage", "rst"):
        sys.exit(__doc__)
    {"outage": outage, "rst": rst}[sys.argv[1]](sys.argv[2])
