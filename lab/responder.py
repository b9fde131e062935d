#!/usr/bin/python3
"""Tiny test servers and their client, for lab/topo.py (stdlib only).

serve: python3 responder.py serve NAME [--tcp 80,22] [--udp 177]
    Listens on the IPv4+IPv6 wildcard ([::], dual stack).  TCP: on connect,
    sends NAME + "\\n", then reads at most one line (or waits 0.5 s) and
    closes.  UDP: answers every datagram with NAME.  Prints "READY" on stdout
    once every socket is bound; runs until SIGTERM/SIGINT.

probe: python3 responder.py probe ADDR PORT N [--udp] [--timeout S]
    Makes N sequential connections (TCP) or N datagram exchanges, each from a
    fresh socket (so fresh source ports), and prints a JSON list with the name
    that answered each one, or null for a failure.
"""
import argparse
import json
import selectors
import signal
import socket
import sys
import threading


def serve(name, tcp_ports, udp_ports):
    payload = name.encode()
    sel = selectors.DefaultSelector()
    for port in tcp_ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.listen(128)
        sel.register(s, selectors.EVENT_READ, "tcp")
    for port in udp_ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        sel.register(s, selectors.EVENT_READ, "udp")

    def handle(conn):
        try:
            conn.sendall(payload + b"\n")
            conn.settimeout(0.5)
            buf = b""
            while b"\n" not in buf and len(buf) < 4096:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        finally:
            conn.close()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data == "tcp":
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                threading.Thread(target=handle, args=(conn,), daemon=True).start()
            else:
                try:
                    _, peer = s.recvfrom(65535)
                    s.sendto(payload, peer)
                except OSError:
                    pass


def probe(addr, port, n, udp=False, timeout=2.0):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    out = []
    for _ in range(n):
        name = None
        try:
            if udp:
                with socket.socket(fam, socket.SOCK_DGRAM) as s:
                    s.settimeout(timeout)
                    s.sendto(b"ping\n", (addr, port))
                    data, _ = s.recvfrom(65535)
                    name = data.decode(errors="replace").strip() or None
            else:
                with socket.create_connection((addr, port), timeout=timeout) as s:
                    buf = b""
                    while b"\n" not in buf:
                        chunk = s.recv(1024)
                        if not chunk:
                            break
                        buf += chunk
                    name = buf.decode(errors="replace").strip() or None
        except OSError:
            name = None
        out.append(name)
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("name")
    s.add_argument("--tcp", default="80,22")
    s.add_argument("--udp", default="177")
    p = sub.add_parser("probe")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--udp", action="store_true")
    p.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args()
    ports = lambda s: [int(x) for x in s.split(",") if x.strip()]
    if a.cmd == "serve":
        try:
            serve(a.name, ports(a.tcp), ports(a.udp))
        except KeyboardInterrupt:
            pass
    else:
        probe(a.addr, a.port, a.n, a.udp, a.timeout)


if __name__ == "__main__":
    main()
