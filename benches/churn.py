#!/usr/bin/env python3
"""Short TCP connections at a steady rate, through real kernels: the churn
that scripts/bench-replication.sh drives through Lazarus and through a
Linux router running conntrackd, so both replicate the same lives.

A life: connect, send a 64-byte request, read the 64-byte reply, close
(the client closes first). The client paces its starts over the run.

usage: churn.py server --port P
       churn.py client --server IP --port P --rate N --seconds S
The client prints one JSON line: lives started, completed, failed, seconds.
"""
import argparse, json, socket, threading, time

SIZE = 64


def server(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(4096)

    def serve(c):
        try:
            got = b""
            while len(got) < SIZE:
                d = c.recv(SIZE - len(got))
                if not d:
                    return
                got += d
            c.sendall(got)
            c.recv(1)  # until the client's FIN
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def client(a):
    threads = 16
    done = [0] * threads
    failed = [0] * threads
    t0 = time.monotonic() + 0.1
    per = a.rate / threads
    total = int(a.rate * a.seconds)

    def run(i):
        k = 0
        while True:
            n = i + k * threads
            if n >= total:
                return
            start = t0 + n / a.rate
            wait = start - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                s = socket.create_connection((a.server, a.port), timeout=3)
                s.sendall(bytes(SIZE))
                got = b""
                while len(got) < SIZE:
                    d = s.recv(SIZE - len(got))
                    if not d:
                        raise OSError("closed early")
                    got += d
                s.close()
                done[i] += 1
            except OSError:
                failed[i] += 1
            k += 1

    assert per > 0
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"started": total, "completed": sum(done), "failed": sum(failed),
                      "seconds": round(time.monotonic() - t0, 2)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--server", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--rate", type=float, default=1000)
    c.add_argument("--seconds", type=float, default=10)
    a = p.parse_args()
    server(a) if a.cmd == "server" else client(a)


if __name__ == "__main__":
    main()
