#!/usr/bin/python3
"""Many real servers in two network namespaces, for check-real's benchmark and netns tests.

Topology (host kernel, no IPVS needed):

    NAME-dir  10.201.0.1/30 --veth-- 10.201.0.2/30  NAME-real
              route 10.202.0.0/21, 10.203.0.0/24       10.202.0.0/21 on lo (every address local)
              via 10.201.0.2                            10.203.0.0/24: not routed (silently dropped)

A real server is one address in 10.202.0.0/21 with its own listener; the
checker runs in NAME-dir.  Routing the whole range through one next hop keeps
the neighbour table at one entry (the host's gc_thresh stays untouched).
Addresses in 10.203.0.0/24 answer nothing: probes to them time out, as to a
dead host.

serve: netns_reals.py serve --kind tcp|http --port P ADDRESS...   (or - for stdin)
    One process, one listening socket per address, a selector loop; prints
    READY once bound; TCP: accept and close; HTTP: read the request, answer
    200 with body "OK <address>", close.
"""
import ipaddress
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
DEAD_NET = "10.203.0"


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


class Reals:
    """The two namespaces; close() removes them and every process started here."""

    def __init__(self, name="crb"):
        self.dir, self.real = f"{name}-dir", f"{name}-real"
        self.procs = []
        self.close(quiet=True)
        sh("ip", "netns", "add", self.dir)
        sh("ip", "netns", "add", self.real)
        sh("ip", "-n", self.dir, "link", "add", "v-dir", "type", "veth", "peer", "name", "v-real",
           "netns", self.real)
        for ns, dev, addr in ((self.dir, "v-dir", "10.201.0.1/30"), (self.real, "v-real", "10.201.0.2/30")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.real, "addr", "add", "10.202.0.0/21", "dev", "lo")
        for net in ("10.202.0.0/21", f"{DEAD_NET}.0/24"):
            sh("ip", "-n", self.dir, "route", "add", net, "via", "10.201.0.2")

    @staticmethod
    def addresses(n, skip=0):
        base = ipaddress.IPv4Address("10.202.0.1")
        return [str(base + skip + i) for i in range(n)]

    @staticmethod
    def dead(n):
        return [f"{DEAD_NET}.{i + 1}" for i in range(n)]

    def serve(self, addresses, port, kind="tcp"):
        """Start a listener process for these addresses in NAME-real; returns the Popen."""
        p = subprocess.Popen(["ip", "netns", "exec", self.real, PY, os.path.join(HERE, "netns_reals.py"),
                              "serve", "--kind", kind, "--port", str(port), "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.stdin.write("\n".join(addresses) + "\n")
        p.stdin.close()
        line = p.stdout.readline().strip()
        if line != "READY":
            p.kill()
            raise RuntimeError(f"listener did not start: {line!r}")
        self.procs.append(p)
        return p

    def in_dir(self, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.dir] + list(argv), **kw)

    def close(self, quiet=False):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        for ns in (self.dir, self.real):
            sh("ip", "netns", "del", ns, check=False)


# --- the listener process ---------------------------------------------------------

def serve(addresses, port, kind):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 3 * len(addresses) + 256), hard))
    sel = selectors.DefaultSelector()
    for a in addresses:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, port))
        s.listen(1024)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("listen", a))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    bufs = {}
    while True:
        for key, _ in sel.select():
            role, addr = key.data
            if role == "listen":
                while True:
                    try:
                        c, _ = key.fileobj.accept()
                    except BlockingIOError:
                        break
                    if kind == "tcp":
                        c.close()
                        continue
                    c.setblocking(False)
                    bufs[c] = b""
                    sel.register(c, selectors.EVENT_READ, ("conn", addr))
                continue
            c = key.fileobj
            try:
                data = c.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            bufs[c] += data
            if data and b"\r\n\r\n" not in bufs[c]:
                continue
            if data:
                body = f"OK {addr}\n".encode()
                try:
                    c.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\n\r\n" + body)
                except OSError:
                    pass
            sel.unregister(c)
            del bufs[c]
            c.close()


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["serve"])
    ap.add_argument("--kind", choices=["tcp", "http"], default="tcp")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("addresses", nargs="+")
    a = ap.parse_args()
    addrs = sys.stdin.read().split() if a.addresses == ["-"] else a.addresses
    serve(addrs, a.port, a.kind)
