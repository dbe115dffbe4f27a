#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/ (checked in; rerun after editing).

parse_frame: small valid frames, one per shape the parser handles: TCP SYN
with options, UDP, ICMP echo and a port-unreachable quoting UDP, VLAN and
QinQ, IPv4 options, IPv4 first/later fragments, IPv6 TCP, ICMPv6 echo and an
unreachable quoting TCP behind a destination-options header, IPv6 fragment
header, ARP. ftp_lines: a first byte (how to cut the stream) then control lines.
Checksums are right (scripts/lib/frames.py), so the seeds get past a parser
that checks them.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts", "lib"))
import frames as F  # noqa: E402

MAC = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2])
A4, B4 = bytes([10, 0, 0, 1]), bytes([192, 168, 1, 2])
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")


# Thin wrappers over scripts/lib/frames.py in this file's argument order:
# the IPv4 header and the L4 checksums come out right (none for fragments).
def eth(ethertype, l3, tags=()):
    return F.eth(l3, ethertype, dst=MAC[:6], src=MAC[6:], tags=tags)


def ipv4(proto, l4, opts=b"", ident=0x1234, frag=0x4000, src=A4, dst=B4):
    return F.ipv4(src, dst, proto, l4, ident=ident, frag=frag, opts=opts)


def ipv6(nh, payload, src=A6, dst=B6):
    return F.ipv6(src, dst, nh, payload)


def tcp(sport, dport, flags, opts=b"", payload=b""):
    return F.tcp(sport, dport, flags, seq=1000, ack=0, window=65535, opts=opts, payload=payload)


def udp(sport, dport, payload=b""):
    return F.udp(sport, dport, payload)


def icmp(typ, code, rest, payload=b""):
    return F.icmp(typ, code, rest, payload)


SYN_OPTS = bytes([2, 4, 5, 0xb4, 4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7])


def frames():
    yield "tcp4_syn", eth(0x0800, ipv4(6, tcp(40000, 80, 0x02, SYN_OPTS)))
    yield "tcp4_data", eth(0x0800, ipv4(6, tcp(40000, 21, 0x18, b"", b"PORT 10,0,0,1,195,80\r\n")))
    yield "udp4", eth(0x0800, ipv4(17, udp(5353, 53, b"query")))
    yield "icmp4_echo", eth(0x0800, ipv4(1, icmp(8, 0, struct.pack("!HH", 7, 1), b"ping")))
    quote = ipv4(17, udp(3333, 53, b"q"), src=B4, dst=A4)[:28]
    yield "icmp4_unreach", eth(0x0800, ipv4(1, icmp(3, 3, bytes(4), quote)))
    yield "vlan_udp4", eth(0x0800, ipv4(17, udp(1, 2, b"v")), tags=[(0x8100, 100)])
    yield "qinq_tcp4", eth(0x0800, ipv4(6, tcp(1, 2, 0x10)), tags=[(0x88a8, 10), (0x8100, 20)])
    yield "ipv4_opts", eth(0x0800, ipv4(17, udp(1, 2, b"o"), opts=bytes([1, 7, 7, 4, 0, 0, 0, 0])))
    yield "frag4_first", eth(0x0800, ipv4(17, udp(1, 2, bytes(16)), frag=0x2000))
    yield "frag4_later", eth(0x0800, ipv4(6, bytes(12), frag=5))
    yield "tcp6_syn", eth(0x86dd, ipv6(6, tcp(50000, 443, 0x02, SYN_OPTS)))
    yield "icmp6_echo", eth(0x86dd, ipv6(58, icmp(128, 0, struct.pack("!HH", 42, 9), b"p6")))
    dstopts = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    # The quoted TCP sits behind the options header: its checksum by hand.
    inner = ipv6(60, dstopts + F.with_l4_checksum(6, B6, A6, tcp(50000, 80, 0x02)), src=B6, dst=A6)[:56]
    yield "icmp6_unreach", eth(0x86dd, ipv6(58, icmp(1, 4, bytes(4), inner)))
    frag6 = struct.pack("!BBHI", 17, 0, (0 << 3) | 1, 0xABCD0001)
    yield "frag6_first", eth(0x86dd, ipv6(44, frag6 + udp(1, 2, bytes(8))))
    hop = bytes([44, 0, 1, 4, 0, 0, 0, 0])
    frag6_later = struct.pack("!BBHI", 6, 0, (3 << 3), 0xABCD0001)
    yield "hop_frag6_later", eth(0x86dd, ipv6(0, hop + frag6_later + bytes(16)))
    yield "arp", eth(0x0806, bytes.fromhex("0001080006040001") + MAC[6:] + A4 + bytes(6) + B4)


FTP = {
    "port": b"\x00PORT 10,99,0,1,195,80\r\n",
    "eprt6": b"\x13EPRT |2|1080::8:800:200C:417A|5282|\r\nEPRT |1|132.235.1.2|6275|\r\n",
    "pasv": b"\x35227 Entering Passive Mode (10,99,0,2,117,48).\r\n",
    "epsv": b"\x52229 Entering Extended Passive Mode (|||6446|)\r\n230 OK\r\n",
    "long": b"\x07" + b"A" * 200 + b"\r\nPORT 1,2,3,4,0,99\r\n",
}


def write(target, items):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in items:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("parse_frame", frames())
write("ftp_lines", FTP.items())
