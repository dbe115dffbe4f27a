"""Test frames and pcap files, for the benches, the fuzz seeds and the e2e tests.

Ethernet (optionally VLAN-tagged), IPv4 with a correct header checksum, IPv6,
and TCP/UDP/ICMP/ICMPv6 with correct checksums (TCP, UDP and ICMPv6 over the
pseudo-header, RFC 768/793/8200; ICMPv4 over its message). Builders return
bytes; the L4 builders leave the checksum zero and `ipv4`/`ipv6` fill it in,
since only they know the addresses of the pseudo-header.

    from frames import eth, ipv4, tcp, pad
    f = pad(eth(ipv4(src, dst, 6, tcp(40000, 80, 0x02, seq=1000))))

Import from elsewhere in the repository:

    sys.path.insert(0, os.path.join(ROOT, "scripts", "lib"))

`python3 scripts/lib/frames.py` runs a self-test (and compares with scapy
when it is installed).
"""
import struct

# TCP flags.
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

MAC_A = bytes([2, 0, 0, 0, 0, 1])
MAC_B = bytes([2, 0, 0, 0, 0, 2])

# Where each protocol keeps its checksum, from the start of its header.
_CSUM_AT = {6: 16, 17: 6, 1: 2, 58: 2}


def ones_sum(data):
    """The 16-bit one's-complement sum of data (odd length: padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data):
    """The Internet checksum of data (RFC 1071): one's complement of ones_sum."""
    return ~ones_sum(data) & 0xFFFF


def _b(addr):
    return bytes(addr)


def pseudo_header(src, dst, proto, length):
    """IPv4 (4-byte addresses) or IPv6 (16-byte) pseudo-header."""
    src, dst = _b(src), _b(dst)
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def l4_checksum(proto, src, dst, segment):
    """The checksum `segment` (its checksum field zero) must carry. UDP's 0
    means "none", so a computed 0 is sent as 0xFFFF (RFC 768)."""
    if proto == 1:
        return csum(segment)
    c = csum(pseudo_header(src, dst, proto, len(segment)) + segment)
    return 0xFFFF if proto == 17 and c == 0 else c


def with_l4_checksum(proto, src, dst, segment):
    """segment with its checksum field filled in (TCP, UDP, ICMP, ICMPv6);
    other protocols, and segments too short to hold the field, unchanged."""
    at = _CSUM_AT.get(proto)
    if at is None or (proto == 1 and len(_b(src)) != 4) or len(segment) < at + 2:
        return segment
    seg = bytearray(segment)
    seg[at:at + 2] = b"\0\0"
    seg[at:at + 2] = struct.pack("!H", l4_checksum(proto, src, dst, bytes(seg)))
    return bytes(seg)


def eth(l3, ethertype=0x0800, dst=MAC_B, src=MAC_A, tags=()):
    """Ethernet header + l3; tags: (tpid, tci) pairs, outermost first."""
    f = _b(dst) + _b(src)
    for tpid, tci in tags:
        f += struct.pack("!HH", tpid, tci)
    return f + struct.pack("!H", ethertype) + l3


def ipv4(src, dst, proto, payload, ident=0, frag=0x4000, ttl=64, tos=0, opts=b"", length=None, l4_csum=None):
    """IPv4 header (checksum computed) + payload. frag: the flags and
    fragment offset field (0x4000: DF). The L4 checksum is filled in unless
    this is a fragment (MF set or an offset) or l4_csum is False. length:
    the total length to claim, if not the real one (a header-only capture)."""
    hl = 20 + len(opts)
    assert hl % 4 == 0 and hl <= 60, "IPv4 options must pad the header to 32-bit words"
    if l4_csum is None:
        l4_csum = frag & 0x3FFF == 0
    if l4_csum:
        payload = with_l4_checksum(proto, src, dst, payload)
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, tos, length if length is not None else hl + len(payload),
                              ident, frag, ttl, proto, 0, _b(src), _b(dst)) + opts)
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + payload


def ipv6(src, dst, nh, payload, hop_limit=64, l4_csum=True):
    """IPv6 header + payload; the L4 checksum filled in when nh is TCP, UDP
    or ICMPv6 itself (behind extension headers, call with_l4_checksum)."""
    if l4_csum:
        payload = with_l4_checksum(nh, src, dst, payload)
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hop_limit) + _b(src) + _b(dst) + payload


def tcp(sport, dport, flags, seq=0, ack=0, window=0xFAF0, opts=b"", payload=b"", urg=0):
    """TCP header + payload, checksum zero (ipv4/ipv6 fill it in)."""
    assert len(opts) % 4 == 0, "TCP options must pad the header to 32-bit words"
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, ((20 + len(opts)) // 4) << 4,
                       flags, window, 0, urg) + opts + payload


def udp(sport, dport, payload=b""):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(typ, code, rest=bytes(4), payload=b""):
    """ICMP or ICMPv6 message; rest: the 4 bytes after the checksum (echo id
    and sequence, or unused)."""
    return struct.pack("!BBH", typ, code, 0) + _b(rest) + payload


def pad(frame, size=60):
    """Ethernet padding up to `size` bytes (60: the minimum without FCS)."""
    return frame + bytes(max(0, size - len(frame)))


def tcp4_frame(src, dst, sport, dport, flags, seq=0, ack=0, payload=b"", window=0xFAF0, size=60):
    """The common case: an Ethernet/IPv4/TCP frame, padded to `size`."""
    return pad(eth(ipv4(src, dst, 6, tcp(sport, dport, flags, seq, ack, window, payload=payload))), size)


# ---------------------------------------------------------------- pcap

PCAP_MAGIC = 0xA1B2C3D4


def write_pcap(path, frames, snaplen=65535, linktype=1):
    """A classic pcap (microseconds, little-endian). frames: bytes, or
    (timestamp in seconds, bytes); untimed frames get 1 µs apart. Frames
    longer than snaplen are cut to it, keeping their original length."""
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, snaplen, linktype))
        for i, fr in enumerate(frames):
            ts, fr = fr if isinstance(fr, tuple) else (i * 1e-6, fr)
            sec = int(ts)
            usec = int(round((ts - sec) * 1e6))
            if usec >= 1000000:
                sec, usec = sec + 1, usec - 1000000
            incl = min(len(fr), snaplen)
            f.write(struct.pack("<IIII", sec, usec, incl, len(fr)))
            f.write(fr[:incl])
            n += 1
    return n


def read_pcap(path):
    """(timestamp in seconds, frame bytes) of each packet of a classic pcap,
    either byte order, micro- or nanosecond timestamps."""
    d = open(path, "rb").read()
    e = "<" if d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = d[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    off = 24
    while off + 16 <= len(d):
        s, u, incl, _ = struct.unpack(e + "IIII", d[off:off + 16])
        yield s + u / (1e9 if nano else 1e6), d[off + 16:off + 16 + incl]
        off += 16 + incl


# ---------------------------------------------------------------- checks

def checksums_ok(frame):
    """Whether an Ethernet frame's IPv4 header checksum and its TCP/UDP/ICMP/
    ICMPv6 checksum verify (the one's-complement sum over the covered bytes,
    checksum included, is 0xFFFF). None when there is nothing to check."""
    off, et = 12, struct.unpack("!H", frame[12:14])[0]
    while et in (0x8100, 0x88A8):
        off += 4
        et = struct.unpack("!H", frame[off:off + 2])[0]
    l3 = frame[off + 2:]
    if et == 0x0800:
        hl = (l3[0] & 15) * 4
        if ones_sum(l3[:hl]) != 0xFFFF:
            return False
        total, frag, proto = struct.unpack("!H", l3[2:4])[0], struct.unpack("!H", l3[6:8])[0], l3[9]
        if frag & 0x3FFF or proto not in _CSUM_AT:
            return True
        seg, src, dst = l3[hl:total], l3[12:16], l3[16:20]
    elif et == 0x86DD:
        proto, seg, src, dst = l3[6], l3[40:40 + struct.unpack("!H", l3[4:6])[0]], l3[8:24], l3[24:40]
        if proto not in _CSUM_AT:
            return None
    else:
        return None
    if proto == 17 and seg[6:8] == b"\0\0":
        return len(src) == 4  # no checksum: allowed over IPv4 only
    covered = seg if proto == 1 else pseudo_header(src, dst, proto, len(seg)) + seg
    return ones_sum(covered) == 0xFFFF


def selftest():
    c4, s4 = bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2])
    c6, s6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
    cases = {
        "tcp4 syn": pad(eth(ipv4(c4, s4, 6, tcp(40000, 80, SYN, 1000, opts=bytes([2, 4, 5, 0xB4]))))),
        "tcp4 data, odd length": eth(ipv4(c4, s4, 6, tcp(40000, 80, PSH | ACK, 1001, 5001, payload=b"hello"))),
        "udp4": eth(ipv4(c4, s4, 17, udp(5353, 53, b"query"))),
        "icmp4 echo": eth(ipv4(c4, s4, 1, icmp(8, 0, struct.pack("!HH", 7, 1), b"ping"))),
        "ipv4 options": eth(ipv4(c4, s4, 17, udp(1, 2, b"o"), opts=bytes([1, 7, 7, 4, 0, 0, 0, 0]))),
        "vlan tcp4": eth(ipv4(c4, s4, 6, tcp(1, 2, ACK)), tags=[(0x8100, 100)]),
        "tcp6": eth(ipv6(c6, s6, 6, tcp(50000, 443, SYN, 7)), 0x86DD),
        "udp6": eth(ipv6(c6, s6, 17, udp(1, 2, b"x")), 0x86DD),
        "icmp6 echo": eth(ipv6(c6, s6, 58, icmp(128, 0, struct.pack("!HH", 42, 9), b"p6")), 0x86DD),
        "tcp4 helper": tcp4_frame(c4, s4, 1024, 80, ACK, 1001, 5001),
    }
    bad = [name for name, f in cases.items() if not checksums_ok(f)]
    # The check must see a wrong checksum: flip a bit of each L4 header.
    for name, f in cases.items():
        tags = 4 if name.startswith("vlan") else 0
        l3 = 14 + tags
        l4 = l3 + (40 if f[l3] >> 4 == 6 else (f[l3] & 15) * 4)
        g = bytearray(f)
        g[l4 + 4] ^= 0x01
        if checksums_ok(bytes(g)):
            bad.append(name + " (corrupted, yet accepted)")
    # A known value (RFC 1071's example): the sum of 0001 f203 f4f5 f6f7 is ddf2.
    if ones_sum(bytes.fromhex("0001f203f4f5f6f7")) != 0xDDF2:
        bad.append("RFC 1071 example")
    try:
        from scapy.layers.l2 import Ether
        from scapy.layers.inet import IP, TCP, UDP, ICMP
        from scapy.layers.inet6 import ICMPv6EchoRequest
        compared = 0
        for name, f in cases.items():
            # scapy recomputes what is deleted: the two must agree.
            q = Ether(f)
            n = 0
            for layer, field in ((IP, "chksum"), (TCP, "chksum"), (UDP, "chksum"), (ICMP, "chksum"), (ICMPv6EchoRequest, "cksum")):
                if q.haslayer(layer):
                    delattr(q[layer], field)
                    n += 1
            if n == 0 or bytes(Ether(bytes(q))) != f:
                bad.append(name + " (differs from scapy)")
            compared += 1
        print(f"frames.py selftest: compared {compared} frames with scapy")
    except ImportError:
        print("frames.py selftest: scapy not installed, one's-complement check only")
    for b in bad:
        print("frames.py selftest: FAIL", b)
    print(f"frames.py selftest: {len(cases)} frames, {'FAILED' if bad else 'every checksum right'}")
    return not bad


if __name__ == "__main__":
    import sys
    sys.exit(0 if selftest() else 1)
