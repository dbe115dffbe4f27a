#!/usr/bin/env python3
"""Samples the carrier of network interfaces, about once a millisecond, for a
number of seconds; prints JSON: the samples taken, and per interface how many
read anything but 1 (down, or the interface gone).

    carrier.py SECONDS IFACE...
"""
import json
import sys
import time


def read(iface):
    try:
        with open(f"/sys/class/net/{iface}/carrier") as f:
            return f.read().strip()
    except OSError:
        return "gone"


def main():
    secs, ifaces = float(sys.argv[1]), sys.argv[2:]
    down = {i: 0 for i in ifaces}
    first_down = {}
    samples = 0
    end = time.time() + secs
    while time.time() < end:
        for i in ifaces:
            if read(i) != "1":
                down[i] += 1
                first_down.setdefault(i, time.time())
        samples += 1
        time.sleep(0.001)
    print(json.dumps({"samples": samples, "down": down, "first_down": first_down}))


if __name__ == "__main__":
    main()
