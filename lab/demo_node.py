#!/usr/bin/python3
"""The demo's real-server services and its client (stdlib only; lab/demo.py runs them).

serve NAME
    What check-real's shipped checks ask for, answered as NAME: HTTP on TCP 80
    (200, body NAME), an SSH banner on TCP 22, XDMCP Willing on UDP 177
    (hostname NAME).  v4+v6 wildcard.  Prints READY once bound.

client LOG VIP [--users FIRST,COUNT] [--www S] [--xdmcp S] [--ssh S]
    Until SIGTERM: an HTTP GET to VIP:80 every S seconds, an XDMCP Query to
    VIP:177 and an SSH banner read from VIP:22 at their own pace.  One JSON
    line per request to LOG: {"t": start (CLOCK_MONOTONIC, shared by every
    namespace), "d": duration, "svc", "server": who answered or null, "err"}.
    Each XDMCP query comes from the next of COUNT extra source addresses
    (FIRST, FIRST+1, ...): xdmcp is persistent per client address, so a new
    desktop user is a new address; the demo adds them to the client's eth0.
    A request gives up after TIMEOUT (1.5 s), which falls between the
    kernel's SYN retransmissions (1 s, 3 s): see client().
"""
import ipaddress
import json
import signal
import socket
import struct
import sys
import threading
import time

XDMCP_VERSION, QUERY, WILLING = 1, 2, 5


def _array8(data):
    return struct.pack("!H", len(data)) + data


def willing(hostname):
    body = _array8(b"") + _array8(hostname) + _array8(b"lvskit demo")
    return struct.pack("!HHH", XDMCP_VERSION, WILLING, len(body)) + body


def query():
    body = b"\x00"      # no authentication names
    return struct.pack("!HHH", XDMCP_VERSION, QUERY, len(body)) + body


def parse_willing(data):
    version, opcode, length = struct.unpack_from("!HHH", data)
    if version != XDMCP_VERSION or opcode != WILLING:
        raise ValueError("not a Willing")
    pos = 6
    for _ in range(2):          # auth name, then hostname
        (n,) = struct.unpack_from("!H", data, pos)
        field, pos = data[pos + 2:pos + 2 + n], pos + 2 + n
    return field.decode(errors="replace")


# --- serve ---------------------------------------------------------------------------
def serve(name):
    me = name.encode()

    def listener(kind, port):
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        return s

    def http(conn):
        try:
            conn.settimeout(2)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            body = me + b"\n"
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()

    def ssh(conn):
        try:
            conn.sendall(b"SSH-2.0-lvskit_demo " + me + b"\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def accept_loop(s, handler):
        while True:
            conn, _ = s.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def xdmcp_loop(s):
        while True:
            data, peer = s.recvfrom(2048)
            if len(data) >= 6 and struct.unpack_from("!HH", data) == (XDMCP_VERSION, QUERY):
                s.sendto(willing(me), peer)

    socks = [(listener(socket.SOCK_STREAM, 80), http), (listener(socket.SOCK_STREAM, 22), ssh)]
    udp = listener(socket.SOCK_DGRAM, 177)
    for s, handler in socks:
        threading.Thread(target=accept_loop, args=(s, handler), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    xdmcp_loop(udp)


# --- client ----------------------------------------------------------------------------
def ask_www(vip, timeout, rec):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind(("", 0))
        rec["port"] = s.getsockname()[1]
        s.connect((vip, 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: www.ime.usp.br\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        raise OSError("bad answer")
    return body.decode(errors="replace").strip()


def ask_ssh(vip, timeout):
    with socket.create_connection((vip, 22), timeout=timeout) as s:
        banner = s.makefile("rb").readline().decode(errors="replace").strip()
    if not banner.startswith("SSH-2.0-lvskit_demo "):
        raise OSError("bad banner")
    return banner.split()[-1]


def ask_xdmcp(vip, timeout, source):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(query(), (vip, 177))
        data, _ = s.recvfrom(2048)
    return parse_willing(data)


# Not 1 s: the kernel sends its first SYN again after 1 s, and a client that gives up at
# that instant may close while the SYN it re-sent reaches a new director.  It then resets
# the real server's SYN-ACK, and IPVS keeps the half-open entry as SYN_RECV, counted as an
# active connection, for 60 s (a client's RST does not end SYN_RECV): wlc gives that server
# no new connection for most of a minute.  Half a second after the retransmission, the
# handshake it carries has completed or was lost before reaching a director.
TIMEOUT = 1.5


def client(log, vip, users_first=None, users_count=0, every=None, timeout=TIMEOUT):
    every = every or {"www": 0.1, "xdmcp": 0.25, "ssh": 1.0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    users = ([str(ipaddress.ip_address(users_first) + i) for i in range(users_count)]
             if users_first else [])
    nxt = {svc: time.monotonic() for svc in every}
    user = 0
    with open(log, "a", buffering=1) as out:
        while not stop:
            svc = min(nxt, key=nxt.get)
            wait = nxt[svc] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                if stop:
                    break
            t = time.monotonic()
            nxt[svc] = max(nxt[svc] + every[svc], t)
            rec = {"t": round(t, 4), "svc": svc}
            try:
                if svc == "www":
                    rec["server"] = ask_www(vip, timeout, rec)
                elif svc == "ssh":
                    rec["server"] = ask_ssh(vip, timeout)
                else:
                    src = users[user % len(users)] if users else None
                    user += 1
                    rec["src"] = src
                    rec["server"] = ask_xdmcp(vip, timeout, src)
            except (OSError, ValueError, struct.error) as e:
                rec["server"], rec["err"] = None, (type(e).__name__ if isinstance(e, socket.timeout)
                                                   else str(e) or type(e).__name__)
            rec["d"] = round(time.monotonic() - t, 4)
            out.write(json.dumps(rec) + "\n")


def main(argv):
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
    elif argv[:1] == ["client"] and len(argv) >= 3:
        log, vip, rest = argv[1], argv[2], argv[3:]
        opts = dict(zip(rest[::2], rest[1::2]))
        every = {"www": float(opts.get("--www", 0.1)), "xdmcp": float(opts.get("--xdmcp", 0.25)),
                 "ssh": float(opts.get("--ssh", 1.0))}
        users = opts.get("--users", "").split(",") if "--users" in opts else (None, 0)
        client(log, vip, users[0], int(users[1]), every)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
