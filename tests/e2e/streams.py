#!/usr/bin/env python3
"""Traffic whose every byte is checked, for the kill test.

  streams.py tcp-server --bind IP --port P
  streams.py tcp-client --server IP --port P --conns N --bytes B --rate BPS --stall S [--stagger S]
  streams.py udp-server --bind IP --port P
  streams.py udp-client --server IP --port P --interval S --duration S

Each TCP connection sends a header (seed, length) and then `length` bytes of a
stream derived from the seed, paced at `rate` bytes per second; the server
regenerates the stream, compares every byte and answers "OK <n>" or
"BAD <offset>". The client prints one JSON line: how many connections
completed with every byte verified, and why the others failed. A connection
that makes no progress for `stall` seconds counts as broken.
"""
import argparse
import json
import random
import socket
import struct
import sys
import threading
import time

CHUNK = 16384


class Stream:
    """The bytes a connection carries: chunks of a seeded PRNG, so both ends
    produce them independently and in the same order."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.buf = b""

    def take(self, n):
        while len(self.buf) < n:
            self.buf += self.rng.randbytes(CHUNK)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        got = s.recv(n - len(b))
        if not got:
            raise ConnectionError("closed after %d of %d header bytes" % (len(b), n))
        b += got
    return b


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_server(a):
    ls = socket.socket(family(a.bind), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(256)

    def serve(c):
        with c:
            try:
                seed, length = struct.unpack("!QQ", recv_exact(c, 16))
                want = Stream(seed)
                got = 0
                while got < length:
                    b = c.recv(min(65536, length - got))
                    if not b:
                        c.sendall(b"SHORT %d\n" % got)
                        return
                    if b != want.take(len(b)):
                        c.sendall(b"BAD %d\n" % got)
                        return
                    got += len(b)
                c.sendall(b"OK %d\n" % got)
            except OSError:
                pass

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def tcp_client(a):
    results = [None] * a.conns

    def run(i):
        seed = (a.seed << 16) | i
        s = socket.socket(family(a.server), socket.SOCK_STREAM)
        s.settimeout(a.stall)
        try:
            s.connect((a.server, a.port))
            s.sendall(struct.pack("!QQ", seed, a.bytes))
            st = Stream(seed)
            start = time.monotonic()
            sent = 0
            while sent < a.bytes:
                # Pace: never ahead of rate * elapsed.
                allowed = int((time.monotonic() - start) * a.rate) + CHUNK
                if sent >= allowed:
                    time.sleep(0.01)
                    continue
                n = min(CHUNK, a.bytes - sent)
                s.sendall(st.take(n))
                sent += n
            s.shutdown(socket.SHUT_WR)
            # Read to the server's FIN before closing. Closing as soon as the
            # reply line is in races the server's FIN: on a plain veth pair,
            # no dataplane, 177 of 6000 connections left the FIN unanswered
            # until the server retransmitted it 200 ms later, and in the kill
            # test one answered it twice, so the server's kernel, its socket
            # already gone, sent an RST. Read to EOF: 0 of 3000.
            reply = b""
            while True:
                b = s.recv(64)
                if not b:
                    break
                reply += b
            results[i] = reply.decode(errors="replace").strip() or "no reply"
        except socket.timeout:
            results[i] = "stalled %ss" % a.stall
        except OSError as e:
            results[i] = "error: %s" % (e.strerror or e)
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(a.conns)]
    t0 = time.monotonic()
    for i, t in enumerate(threads):
        # Opened one by one, `stagger` apart: new connections arriving
        # through a flood rather than all at once.
        time.sleep(max(0.0, t0 + i * a.stagger - time.monotonic()))
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r == "OK %d" % a.bytes)
    failed = {}
    for r in results:
        if r != "OK %d" % a.bytes:
            failed[r] = failed.get(r, 0) + 1
    print(json.dumps({"conns": a.conns, "ok": ok, "bytes_each": a.bytes, "failed": failed, "seconds": round(time.monotonic() - t0, 2)}))
    return 0 if ok == a.conns else 1


def udp_server(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, a.port))
    while True:
        b, peer = s.recvfrom(2048)
        s.sendto(b, peer)


def udp_client(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((a.server, a.port))
    s.setblocking(False)
    sent, seen = 0, set()
    replies = []  # (monotonic, seq)
    t0 = time.monotonic()
    nxt = t0
    while time.monotonic() - t0 < a.duration:
        now = time.monotonic()
        if now >= nxt:
            s.send(struct.pack("!Q", sent))
            sent += 1
            nxt += a.interval
        try:
            while True:
                b = s.recv(64)
                q = struct.unpack("!Q", b[:8])[0]
                if q not in seen:
                    seen.add(q)
                    replies.append((time.monotonic() - t0, q))
        except (BlockingIOError, ConnectionRefusedError):
            pass
        time.sleep(min(0.002, a.interval / 4))
    time.sleep(0.3)
    try:
        while True:
            seen.add(struct.unpack("!Q", s.recv(64)[:8])[0])
    except (BlockingIOError, ConnectionRefusedError):
        pass
    gap = 0.0
    for (t1, _), (t2, _) in zip(replies, replies[1:]):
        gap = max(gap, t2 - t1)
    last = replies[-1][0] if replies else 0.0
    print(json.dumps({"sent": sent, "received": len(seen), "lost": sent - len(seen), "max_gap_s": round(gap, 3), "last_reply_s": round(last, 2), "duration_s": a.duration}))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("tcp-server", "udp-server"):
        q = sub.add_parser(name)
        q.add_argument("--bind", required=True)
        q.add_argument("--port", type=int, required=True)
    q = sub.add_parser("tcp-client")
    q.add_argument("--server", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--conns", type=int, default=50)
    q.add_argument("--bytes", type=int, default=2_000_000)
    q.add_argument("--rate", type=float, default=200_000, help="bytes per second per connection")
    q.add_argument("--stall", type=float, default=10.0, help="seconds without progress that break a connection")
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--stagger", type=float, default=0.0, help="seconds between two connections' starts")
    q = sub.add_parser("udp-client")
    q.add_argument("--server", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--interval", type=float, default=0.01)
    q.add_argument("--duration", type=float, default=10.0)
    a = p.parse_args()
    fn = {"tcp-server": tcp_server, "tcp-client": tcp_client, "udp-server": udp_server, "udp-client": udp_client}[a.cmd]
    sys.exit(fn(a))


if __name__ == "__main__":
    main()
