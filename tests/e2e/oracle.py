#!/usr/bin/env python3
"""Linux as the oracle: one corpus of crafted frames, replayed through Linux's
conntrack (a router namespace with nftables) and through Lazarus (net_pcap),
and the verdicts compared datagram by datagram.

  oracle.py corpus DIR          writes DIR/corpus.pcap and DIR/meta.json
  oracle.py linux DIR A B       replays the corpus through a router whose
                                client side is link A and server side link B
                                (both in this namespace), writes DIR/linux.json
  oracle.py lazarus DIR OUT...  reads the dataplane's output pcaps, writes
                                DIR/lazarus.json
  oracle.py compare DIR         prints the differences, per class; exits 1
                                when they are more than the documented ones

Every datagram carries its index as a marker that forwarding keeps: the IPv4
identification, the IPv6 flow label. The router decrements the TTL and
rewrites the MACs; the bridge changes nothing. A fragmented datagram's
verdict is whether any of it came out (Linux reassembles it before
conntrack sees it).
"""
import json
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import frames as F  # noqa: E402

C4, S4 = "10.99.0.1", "10.99.0.2"
C6, S6 = "fd99::1", "fd99::2"
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
WIN = 0xFAF0

# Deliberate differences, by the kind of a datagram (its `what`, or the
# case it follows from), each explained in docs/ORACLE.md.
ALLOWED = {
    "data far below the window": "old data dropped, not ignored",
    "UDP in fragments, incomplete": "no reassembly: the first fragment passes on its own verdict",
    "UDP in fragments, overlap": "no reassembly: overlaps are left to the receiving host",
}


def addr(a):
    return socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)


class Corpus:
    def __init__(self):
        self.frames = []  # (side, frame bytes)
        self.meta = []  # per datagram: index, side, cls, what, frames

    def add(self, cls, what, side, build, v6=False, kind=None):
        """One datagram: build(marker) returns its frames (several when
        fragmented), sent from `side` ("c" or "s")."""
        # Markers from 1: a frame the router makes itself carries 0.
        i = len(self.meta) + 1
        fs = build(i)
        fs = fs if isinstance(fs, list) else [fs]
        for f in fs:
            self.frames.append((side, f))
        self.meta.append({"i": i, "side": side, "cls": cls, "what": what, "kind": kind or what,
                          "frames": len(fs), "v6": v6})


def ip(v6, src, dst, proto, payload, marker, opts=b"", frag=0x4000, bad_ip=False):
    if v6:
        p = F.ipv6(addr(src), addr(dst), proto, payload)
        return struct.pack("!I", 0x60000000 | marker & 0xFFFFF) + p[4:]
    p = bytearray(F.ipv4(addr(src), addr(dst), proto, payload, ident=marker & 0xFFFF, opts=opts, frag=frag))
    if bad_ip:
        p[10] ^= 0x5A
    return bytes(p)


def frame(v6, l3):
    return F.pad(F.eth(l3, 0x86DD if v6 else 0x0800))


class Tcp:
    """One TCP connection of the corpus, client port `sport`."""

    def __init__(self, corpus, cls, sport, dport=80, v6=False, opts_c=b"", opts_s=b""):
        self.c, self.cls, self.v6 = corpus, cls, v6
        self.sport, self.dport = sport, dport
        self.cseq, self.sseq = 1000 + sport * 7, 50000 + sport * 13
        self.opts_c, self.opts_s = opts_c, opts_s

    def seg(self, what, side, flags, seq, ack, payload=b"", win=WIN, opts=b"", bad_l4=False, ipopts=b""):
        src, dst = (C6, S6) if self.v6 else (C4, S4)
        sp, dp = self.sport, self.dport
        if side == "s":
            src, dst, sp, dp = dst, src, dp, sp

        def build(m):
            t = F.tcp(sp, dp, flags, seq, ack, window=win, opts=opts, payload=payload)
            l3 = bytearray(ip(self.v6, src, dst, 6, t, m, opts=ipopts))
            if bad_l4:
                hl = 40 if self.v6 else 20 + len(ipopts)
                l3[hl + 16] ^= 0x5A
            return frame(self.v6, bytes(l3))

        self.c.add(self.cls, what, side, build, self.v6)

    def handshake(self):
        self.seg("SYN", "c", SYN, self.cseq, 0, opts=self.opts_c)
        self.seg("SYN-ACK", "s", SYN | ACK, self.sseq, self.cseq + 1, opts=self.opts_s)
        self.cseq += 1
        self.sseq += 1
        self.seg("ACK", "c", ACK, self.cseq, self.sseq)

    def data(self, side, n, what="data"):
        if side == "c":
            self.seg(what, "c", ACK | PSH, self.cseq, self.sseq, b"x" * n)
            self.cseq += n
        else:
            self.seg(what, "s", ACK | PSH, self.sseq, self.cseq, b"y" * n)
            self.sseq += n

    def ack(self, side, what="ACK"):
        if side == "c":
            self.seg(what, "c", ACK, self.cseq, self.sseq)
        else:
            self.seg(what, "s", ACK, self.sseq, self.cseq)


# Rounds of each case: enough for at least 50 frames a class.
M = 3


def build_corpus():
    c = Corpus()
    port = 20000

    def nxt():
        nonlocal port
        port += 1
        return port

    for v6 in (False, True):
        # Handshakes and teardowns, both ways.
        for k in range(6 * M):
            t = Tcp(c, "handshake", nxt(), v6=v6)
            t.handshake()
            t.data("c", 100)
            t.ack("s")
            closer = "c" if k % 2 == 0 else "s"
            other = "s" if closer == "c" else "c"
            t.seg("FIN", closer, FIN | ACK, t.cseq if closer == "c" else t.sseq, t.sseq if closer == "c" else t.cseq)
            if closer == "c":
                t.cseq += 1
            else:
                t.sseq += 1
            t.seg("FIN back", other, FIN | ACK, t.sseq if other == "s" else t.cseq, t.cseq if other == "s" else t.sseq)
            if other == "s":
                t.sseq += 1
            else:
                t.cseq += 1
            t.ack(closer, "last ACK")
            t.data("c", 10, "data after close")
        for k in range(3 * M):
            t = Tcp(c, "handshake", nxt(), v6=v6)
            t.seg("SYN from the server side", "s", SYN, 7000 + k, 0)
            t.seg("mid-stream ACK, no connection", "c", ACK, 5, 6)

        # Retransmissions and overlaps.
        for k in range(3 * M):
            t = Tcp(c, "retransmit", nxt(), v6=v6)
            t.handshake()
            t.data("c", 200)
            t.seg("retransmission", "c", ACK | PSH, t.cseq - 200, t.sseq, b"x" * 200)
            t.seg("overlap", "c", ACK | PSH, t.cseq - 100, t.sseq, b"x" * 300)
            t.cseq += 200
            t.ack("s")
            t.seg("old retransmission", "c", ACK | PSH, t.cseq - 400, t.sseq, b"x" * 50)
            t.data("s", 100)
            t.seg("server retransmission", "s", ACK | PSH, t.sseq - 100, t.cseq, b"y" * 100)
            t.ack("c")

        # Window edges, ±1.
        for k in range(3 * M):
            t = Tcp(c, "window", nxt(), v6=v6)
            t.handshake()
            edge = t.cseq + WIN  # the server's window ends here
            t.seg("data ending at the window edge", "c", ACK, edge - 10, t.sseq, b"e" * 10)
            t.seg("data one past the window edge", "c", ACK, edge - 9, t.sseq, b"e" * 10)
            t.seg("data starting at the edge", "c", ACK, edge, t.sseq, b"e")
            t.seg("ACK of one byte too many", "s", ACK, t.sseq, edge + 1)
            t.seg("ACK of exactly what was sent", "s", ACK, t.sseq, edge)
            t.seg("data far below the window", "c", ACK, t.cseq - 2 * WIN - 10, t.sseq, b"o")
            t.seg("ACK far ahead", "c", ACK, t.cseq, t.sseq + 10_000_000)

        # RSTs: exact, in window, out of window.
        for kind in ("exact", "in window", "out of window", "exact from the server", "ACK|RST exact"):
            for _ in range(2 * M):
                t = Tcp(c, "rst", nxt(), v6=v6)
                t.handshake()
                t.data("c", 100)
                t.ack("s")
                if kind == "exact":
                    t.seg("RST exact", "c", RST, t.cseq, 0)
                elif kind == "in window":
                    t.seg("RST in window", "c", RST, t.cseq + 1000, 0)
                elif kind == "out of window":
                    t.seg("RST out of window", "c", RST, t.cseq + 5_000_000, 0)
                elif kind == "exact from the server":
                    t.seg("RST exact", "s", RST, t.sseq, 0)
                else:
                    t.seg("RST|ACK exact", "s", RST | ACK, t.sseq, t.cseq)
                t.data("c", 10, "data after the RST")

        # A SYN on an established connection.
        for k in range(4 * M):
            t = Tcp(c, "syn-established", nxt(), v6=v6)
            t.handshake()
            t.data("c", 50)
            t.ack("s")
            t.seg("SYN on established, same ISN", "c", SYN, t.cseq - 51, 0)
            t.seg("SYN on established, new ISN", "c", SYN, t.cseq + 100000, 0)
            t.data("c", 10, "data after the SYNs")
            t.ack("s")

        # Bad checksums.
        for k in range(5 * M):
            t = Tcp(c, "checksum", nxt(), v6=v6)
            t.seg("SYN, bad TCP checksum", "c", SYN, t.cseq, 0, bad_l4=True)
            t.handshake()
            t.seg("RST in window, bad TCP checksum", "s", RST, t.sseq, 0, bad_l4=True)
            t.data("c", 20, "data: the RST changed nothing")
            t.ack("s")
            if not v6:
                src, dst = C4, S4

                def bad(m, t=t):
                    tc = F.tcp(t.sport, t.dport, ACK, t.cseq, t.sseq)
                    return frame(False, ip(False, src, dst, 6, tc, m, bad_ip=True))
                c.add("checksum", "ACK, bad IPv4 checksum", "c", bad)

        # UDP.
        for k in range(8 * M):
            sp = nxt()
            src, dst = (C6, S6) if v6 else (C4, S4)
            for what, side, a, b, p1, p2 in (
                ("UDP request", "c", src, dst, sp, 53),
                ("UDP reply", "s", dst, src, 53, sp),
                ("UDP again", "c", src, dst, sp, 53),
                ("UDP new from the server side", "s", dst, src, 53, sp + 5000),
                ("UDP bad checksum", "c", src, dst, sp + 1, 53),
            ):
                def build(m, a=a, b=b, p1=p1, p2=p2, what=what):
                    u = bytearray(F.udp(p1, p2, b"q" * 8))
                    l3 = bytearray(ip(v6, a, b, 17, bytes(u), m))
                    if "bad" in what:
                        hl = 40 if v6 else 20
                        l3[hl + 6] ^= 0x5A
                    return frame(v6, bytes(l3))
                c.add("udp", what, side, build, v6)

        # ICMP errors quoting a packet: related, unrelated, wrong way.
        for k in range(7 * M):
            sp = nxt()
            src, dst = (C6, S6) if v6 else (C4, S4)
            proto_icmp = 58 if v6 else 1
            unreach = (1, 4) if v6 else (3, 3)

            def udp_l3(a, b, p1, p2, m=0):
                return ip(v6, a, b, 17, F.udp(p1, p2, b"q" * 8), m)

            c.add("icmp", "UDP request", "c", lambda m: frame(v6, udp_l3(src, dst, sp, 53, m)), v6)
            for what, side, a, b, quote in (
                ("port unreachable back to the client", "s", dst, src, udp_l3(src, dst, sp, 53)),
                ("unreachable quoting no connection", "s", dst, src, udp_l3(src, dst, sp + 7000, 53)),
                ("unreachable sent the wrong way", "c", src, dst, udp_l3(src, dst, sp, 53)),
            ):
                def build(m, a=a, b=b, quote=quote):
                    msg = F.icmp(unreach[0], unreach[1], bytes(4), quote[:48 if v6 else 28])
                    return frame(v6, ip(v6, a, b, proto_icmp, msg, m))
                c.add("icmp", what, side, build, v6)

    # IPv4 options: NOP padding, record route.
    for k in range(8 * M):
        t = Tcp(c, "ip-options", nxt())
        nop4 = b"\x01\x01\x01\x00"
        rr = b"\x07\x07\x04" + bytes(4) + b"\x00"
        t.handshake()
        t.seg("data with NOP options", "c", ACK | PSH, t.cseq, t.sseq, b"o" * 5, ipopts=nop4)
        t.cseq += 5
        t.seg("data with record route", "c", ACK | PSH, t.cseq, t.sseq, b"r" * 5, ipopts=rr)
        t.cseq += 5
        t.seg("ACK with options", "s", ACK, t.sseq, t.cseq, ipopts=nop4)
        t.ack("c")
    # TCP options: window scale above 14, MSS 0.
    for k in range(8 * M):
        ws15 = b"\x03\x03\x0f\x01"
        mss0 = b"\x02\x04\x00\x00"
        t = Tcp(c, "tcp-options", nxt(), opts_c=ws15, opts_s=b"\x03\x03\x0e\x01" if k % 2 else ws15)
        t.handshake()
        t.data("c", 100)
        t.seg("data far in a scaled window", "s", ACK | PSH, t.sseq, t.cseq, b"s" * 10, win=4)
        t.seg("ACK", "c", ACK, t.cseq, t.sseq + 10)
        u = Tcp(c, "tcp-options", nxt(), opts_c=mss0, opts_s=mss0)
        u.handshake()
        u.data("c", 10)
        u.ack("s")
    # IPv4 fragments of UDP datagrams: whole and in order, overlapping,
    # never completed.
    for k in range(10 * M):
        sp = nxt()
        body = F.with_l4_checksum(17, addr(C4), addr(S4), F.udp(sp, 53, bytes(range(48))))

        def frags(m, kind, body=body):
            ipf = lambda off, mf, data: frame(False, ip(False, C4, S4, 17, data, m, frag=(0x2000 if mf else 0) | off // 8))
            if kind == "whole":
                return [ipf(0, True, body[:24]), ipf(24, False, body[24:])]
            if kind == "overlap":
                return [ipf(0, True, body[:32]), ipf(24, False, body[24:])]
            return [ipf(0, True, body[:24])]
        kind = ("whole", "overlap", "incomplete")[k % 3]
        c.add("fragments", f"UDP in fragments, {kind}", "c", lambda m, kind=kind: frags(m, kind))
        c.add("fragments", f"UDP reply to the {kind} datagram", "s",
              lambda m, sp=sp: frame(False, ip(False, S4, C4, 17, F.udp(53, sp, b"r" * 8), m)),
              kind=f"UDP in fragments, {kind}")

    # IPv6 extension headers before TCP and UDP: hop-by-hop, destination
    # options, routing (type 0, deprecated: dropped by Linux's stack).
    hbh = lambda nh: bytes([nh, 0, 1, 4, 0, 0, 0, 0])  # PadN
    dst_opts = lambda nh: bytes([nh, 0, 1, 4, 0, 0, 0, 0])
    for k in range(6 * M):
        t = Tcp(c, "ipv6-ext", nxt(), v6=True)
        t.handshake()
        for what, chain in (("data behind hop-by-hop", [0]), ("data behind destination options", [60]),
                            ("data behind hop-by-hop and destination options", [0, 60])):
            def build(m, chain=chain, t=t):
                seg = F.with_l4_checksum(6, addr(C6), addr(S6), F.tcp(t.sport, t.dport, ACK | PSH, t.cseq, t.sseq, payload=b"e" * 4))
                nexts = chain[1:] + [6]
                hdrs = b"".join((hbh if h == 0 else dst_opts)(n) for h, n in zip(chain, nexts))
                p = F.ipv6(addr(C6), addr(S6), chain[0], hdrs + seg, l4_csum=False)
                return frame(True, struct.pack("!I", 0x60000000 | m) + p[4:])
            c.add("ipv6-ext", what, "c", build, True)
            t.cseq += 4
        t.ack("s")
    return c


# ---------------------------------------------------------------- replays

HOSTS = {addr(a) for a in (C4, S4, C6, S6)}


def marker_of(fr):
    """The datagram index a frame between the corpus's hosts carries, or
    None (anything else: what the router says itself)."""
    if len(fr) < 34:
        return None
    et = struct.unpack("!H", fr[12:14])[0]
    if et == 0x0800 and fr[26:30] in HOSTS:
        return struct.unpack("!H", fr[18:20])[0] or None
    if et == 0x86DD and len(fr) >= 54 and fr[22:38] in HOSTS:
        return struct.unpack("!I", fr[14:18])[0] & 0xFFFFF or None
    return None


def corpus_cmd(d):
    c = build_corpus()
    F.write_pcap(os.path.join(d, "corpus.pcap"), [f for _, f in c.frames])
    json.dump({"frames": [s for s, _ in c.frames], "datagrams": c.meta}, open(os.path.join(d, "meta.json"), "w"))
    print(f"{len(c.frames)} frames, {len(c.meta)} datagrams")


def open_link(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((name, 0))
    return s


def linux_cmd(d, link_c, link_s, mac_c, mac_s):
    """Each frame into the router's side it comes from, its destination MAC
    the router's; what comes out of the other side is forwarded."""
    meta = json.load(open(os.path.join(d, "meta.json")))
    frames = [f for _, f in F.read_pcap(os.path.join(d, "corpus.pcap"))]
    socks = {"c": open_link(link_c), "s": open_link(link_s)}
    mac = {"c": bytes.fromhex(mac_c.replace(":", "")), "s": bytes.fromhex(mac_s.replace(":", ""))}
    seen = set()

    def drain(wait):
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select(list(socks.values()), [], [], left)
            for s in r:
                fr, a = s.recvfrom(65535)
                if a[2] == 4:  # our own
                    continue
                m = marker_of(fr)
                if m is not None:
                    seen.add(m)

    for side, fr in zip(meta["frames"], frames):
        socks[side].send(mac[side] + fr[6:])
        drain(0.002)
    drain(0.5)
    json.dump(sorted(seen), open(os.path.join(d, "linux.json"), "w"))


def lazarus_cmd(d, outs):
    seen = set()
    for o in outs:
        for _, fr in F.read_pcap(o):
            m = marker_of(fr)
            if m is not None:
                seen.add(m)
    json.dump(sorted(seen), open(os.path.join(d, "lazarus.json"), "w"))


def compare_cmd(d):
    meta = json.load(open(os.path.join(d, "meta.json")))["datagrams"]
    lin = set(json.load(open(os.path.join(d, "linux.json"))))
    laz = set(json.load(open(os.path.join(d, "lazarus.json"))))
    per = {}
    diffs = []
    for m in meta:
        a, b = m["i"] in lin, m["i"] in laz
        k = per.setdefault(m["cls"], [0, 0, 0])
        k[0] += m["frames"]
        k[1] += 1
        if a != b:
            k[2] += 1
            diffs.append((m, a, b))
    for cls, (fr, dg, df) in per.items():
        print(f"  {cls:16} {fr:4} frames {dg:4} datagrams {df:3} differences")
    unexplained = [x for x in diffs if x[0]["kind"] not in ALLOWED]
    for m, a, b in diffs:
        why = ALLOWED.get(m["kind"], "UNEXPLAINED")
        print(f"  #{m['i']} {m['cls']}/{m['what']} ({'v6' if m['v6'] else 'v4'}, from {m['side']}): "
              f"linux {'forwards' if a else 'drops'}, lazarus {'forwards' if b else 'drops'}: {why}")
    total = sum(v[0] for v in per.values())
    kinds = {m["kind"] for m, _, _ in diffs}
    print(f"oracle: {total} frames, {len(meta)} datagrams, {len(diffs)} differing verdicts "
          f"({len(kinds)} kinds, {len(unexplained)} unexplained); "
          f"linux forwarded {len(lin)}, lazarus {len(laz)}")
    return 1 if unexplained or len(kinds) > 5 else 0


def main():
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "corpus":
        corpus_cmd(d)
    elif cmd == "linux":
        linux_cmd(d, *sys.argv[3:7])
    elif cmd == "lazarus":
        lazarus_cmd(d, sys.argv[3:])
    elif cmd == "compare":
        sys.exit(compare_cmd(d))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
