#!/usr/bin/env python3
"""One DPDK telemetry request per argument, to the socket of an EAL file
prefix; prints each reply's JSON on a line.

    telemetry.py PREFIX /mempool/info,lazarus_pkts /eal/heap_info,0
"""
import json
import socket
import sys


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(f"/var/run/dpdk/{sys.argv[1]}/dpdk_telemetry.v2")
    json.loads(s.recv(1 << 16))
    for cmd in sys.argv[2:]:
        s.send(cmd.encode())
        print(json.dumps(json.loads(s.recv(1 << 20))))


if __name__ == "__main__":
    main()
