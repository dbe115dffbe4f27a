#!/usr/bin/env python3
"""An 802.1Q access port for the end-to-end tests, where the kernel has no
VLAN device, no VLAN-filtering bridge and no tc vlan action.

  vlan_tagger.py PLAIN TAGGED VID

Frames arriving on PLAIN (from a namespace's kernel) leave on TAGGED with a
tag of VID inserted after the MAC addresses; frames arriving on TAGGED with
that tag leave on PLAIN without it, and any other frame there is dropped, as
an access port would. Both links must have offloads off (the frames are
copied as they are).
"""
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
TPID = b"\x81\x00"


SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid.
AUXDATA = struct.Struct("=IIIHHHH")


def open_link(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # A veth takes an 802.1Q tag out of the frame into the packet's metadata
    # as it receives it; the auxiliary data gives it back.
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((name, 0))
    return s


def receive(s):
    """One frame with its tag (if any) back in place, and its packet type."""
    frame, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
    for level, kind, data in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                tag = struct.pack("!HH", tpid or 0x8100, tci)
                frame = frame[:12] + tag + frame[12:]
    return frame, addr[2]


def main():
    plain_name, tagged_name, vid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    plain, tagged = open_link(plain_name), open_link(tagged_name)
    tag = TPID + struct.pack("!H", vid & 0x0FFF)
    while True:
        ready, _, _ = select.select([plain, tagged], [], [])
        for s in ready:
            frame, kind = receive(s)
            if kind == PACKET_OUTGOING or len(frame) < 14:
                continue
            if s is plain:
                tagged.send(frame[:12] + tag + frame[12:])
            elif frame[12:14] == TPID and struct.unpack_from("!H", frame, 14)[0] & 0x0FFF == vid:
                plain.send(frame[:12] + frame[16:])


if __name__ == "__main__":
    main()
