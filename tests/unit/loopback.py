"""Real sockets on loopback for tests, and never a guessed port.

A port is only ever known from a socket that stays bound: refused() is bound
and not listening (a connect is refused), shared_port() holds one port on
every address so listeners on several 127.0.0.N can share it, never_accepting()
drops SYNs.

Servers that misbehave on purpose, over listening sockets the test made; each
listening socket gets one behaviour:
  good          an HTTP 200 with the body "ok", at once
  trickle-head  an HTTP status line, then one header byte per tick, never ending the headers
  trickle-body  whole headers (a long Content-Length), then one body byte per tick
  trickle-line  an agent answer (or an ssh banner) one byte per tick, never a newline
  banner        an ssh server's banner line, at once
  silent        accepts and reads, never says a word

serve() runs them in one selector loop (in a test's thread, or in a process of
its own: `python3 loopback.py FD=BEHAVIOUR...` with the sockets passed in,
so a thousand servers do not compete with the prober for its interpreter).
never_accepting() makes a listener that drops SYNs, as a hung host does.
"""
import selectors
import socket
import struct
import sys
import time

TICK = 0.1
BEHAVIOURS = ("good", "trickle-head", "trickle-body", "trickle-line", "silent", "banner")
_OPENING = {
    "trickle-head": b"HTTP/1.1 200 OK\r\nX-Slow: ",
    "trickle-body": b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
    "trickle-line": b"",
}


def listener(address="127.0.0.1", backlog=128):
    s = socket.socket()
    s.bind((address, 0))
    s.listen(backlog)
    return s


def refused(address="127.0.0.1", kind=socket.SOCK_STREAM):
    """A socket holding a port that refuses: TCP bound and not listening; UDP bound and
    connected elsewhere (the kernel answers others' datagrams with port unreachable)."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind((address, 0))
    if kind == socket.SOCK_DGRAM:
        s.connect((address, 9))
    return s


def _reusable():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


def shared_port():
    """A socket bound to port 0 on every address and never listening: its port was free
    everywhere and stays ours; on_port() listens on it on one address."""
    s = _reusable()
    s.bind(("0.0.0.0", 0))
    return s


def on_port(address, port, backlog=64):
    """A listener on address:port, where port is held by shared_port()."""
    s = _reusable()
    s.bind((address, port))
    s.listen(backlog)
    return s


def serve(listeners, stop=None):
    """listeners: [(listening socket, behaviour)]; runs until stop() is true (or forever)."""
    sel = selectors.DefaultSelector()
    for s, behaviour in listeners:
        assert behaviour in BEHAVIOURS, behaviour
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("listen", behaviour))
    trickling = {}          # connection -> behaviour
    next_tick = time.monotonic() + TICK
    while not (stop and stop()):
        for key, _ in sel.select(max(0.0, next_tick - time.monotonic())):
            role, behaviour = key.data
            if role == "listen":
                try:
                    conn, _ = key.fileobj.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, ("conn", behaviour))
                if behaviour == "good":
                    _send(conn, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                elif behaviour == "banner":
                    _send(conn, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                elif behaviour != "silent":
                    _send(conn, _OPENING[behaviour])
                    trickling[conn] = behaviour
                continue
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data:            # the prober gave up (or was cut): forget the connection
                trickling.pop(key.fileobj, None)
                sel.unregister(key.fileobj)
                key.fileobj.close()
        if time.monotonic() >= next_tick:
            next_tick = time.monotonic() + TICK
            for conn in list(trickling):
                if not _send(conn, b"a"):
                    del trickling[conn]


def _send(conn, data):
    try:
        conn.send(data)
        return True
    except OSError:
        return False


def _tcp_info(sock):
    """(connections in the accept queue, its limit) of a listening socket (Linux TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("II", info, 24)       # tcpi_unacked, tcpi_sacked


def never_accepting(address="127.0.0.1"):
    """(listener, fillers): a listener whose accept queue is full, so the kernel drops
    every further SYN and a connect to it hangs.  Keep both open while in use."""
    s = socket.socket()
    s.bind((address, 0))
    s.listen(0)
    fillers = []
    deadline = time.monotonic() + 5
    while True:
        queued, limit = _tcp_info(s)
        if queued > limit:
            return s, fillers
        assert time.monotonic() < deadline, "the accept queue did not fill"
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(s.getsockname())
        fillers.append(c)
        while _tcp_info(s)[0] == queued and time.monotonic() < deadline:
            time.sleep(0.005)       # poll: the handshake completes in the kernel


if __name__ == "__main__":
    pairs = []
    for arg in sys.argv[1:]:
        fd, behaviour = arg.split("=")
        pairs.append((socket.socket(fileno=int(fd)), behaviour))
    print("serving", flush=True)
    serve(pairs, stop=lambda: False)
