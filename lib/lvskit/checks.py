"""Probes of real servers, all of a round at once.

A round lasts about one timeout, not the sum of them (ldirectord and mon
check one server after the other): socket probes (tcp, ssh, udp, xdmcp,
ping) are non-blocking sockets in one selector loop; http/https and external
programs, which block, each run on a thread of their own alongside
(deadline.py).  Every probe has a deadline for its whole exchange: the
round's start plus its check_timeout, whatever the server does (trickles its
answer, accepts and says nothing, never accepts); what is still running then
is a timeout, cut off (its sockets shut down, its process group killed), and
the round ends with its last deadline.

A Probe is the question asked of one endpoint; two services that ask the same
question of the same server share one Probe (it is hashable), so each
endpoint is probed once per round.
"""
import errno
import os
import re
import resource
import selectors
import socket
import struct
import time

from . import deadline, xdmcp
from .health import DOWN, UNKNOWN, UP, WARNING, Result
from .model import record

SOCKET_KINDS = ("tcp", "ssh", "udp", "xdmcp", "ping")
THREAD_KINDS = ("http", "https", "external")
# descriptors a probe holds at once: a socket; a socket and the duplicate that
# cuts it; a process's pipes and terminal
_FILES = {"http": 2, "https": 2, "external": 4}
_BANNER_MAX = 512


class Probe(record("Probe", "kind", "address", "port",
                   "check")):       # the service's config.Check with its scheduling fields zeroed
    __slots__ = ()

    @property
    def timeout(self):
        return self.check.timeout

    def __str__(self):
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.kind} {host}:{self.port}" if self.port else f"{self.kind} {self.address}"


def probe_for(check, dest):
    """The Probe a service's check makes of one real server (a config.Dest)."""
    port = 0 if check.kind == "ping" else (check.port or dest.port)
    question = check.replace(interval=0, rise=0, fall=0, flap_changes=0, flap_window=0,
                             hold_down=0, warning_weight=0)
    return Probe(check.kind, dest.address, port, question)


def run(probes):
    """{Probe: health.Result} for every probe, run concurrently; returns by the last deadline."""
    probes = list(dict.fromkeys(probes))
    _enough_files(sum(_FILES.get(p.kind, 1) for p in probes))
    if any(p.kind in ("http", "https") for p in probes):
        from . import httpcheck  # noqa: F401 (the only module that imports requests: before any clock)
    start = time.monotonic()
    threaded = deadline.Batch({p: (start + p.timeout, lambda exchange, p=p: _threaded(p, exchange))
                               for p in probes if p.kind in THREAD_KINDS})
    results = _socket_round([p for p in probes if p.kind in SOCKET_KINDS], start)
    for p, r in threaded.wait().items():
        if isinstance(r, TimeoutError):
            r = Result(DOWN, _late(p), p.timeout)
        elif isinstance(r, Exception):      # a bug in one probe must not lose the round
            r = Result(UNKNOWN, f"check failed: {r.__class__.__name__}: {r}")
        results[p] = r
    return results


def _enough_files(n):
    """Every socket probe holds a descriptor: lift the soft limit when a round needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _threaded(p, exchange):
    start = time.monotonic()
    if p.kind == "external":
        r = _external(p, exchange)
    else:
        from . import httpcheck
        r = httpcheck.probe(p)
    return r.replace(elapsed=time.monotonic() - start)


def _late(p):
    if p.kind == "external":
        return f"{os.path.basename(command_line(p)[0])} killed after {p.timeout:g}s"
    return f"timeout after {p.timeout:g}s"


# --- external programs: the monitoring-plugins contract ------------------------

def command_line(p):
    """argv with {address} and {port} filled in."""
    return [w.replace("{address}", p.address).replace("{port}", str(p.port)) for w in p.check.command]


def _external(p, exchange):
    from . import run as runner
    argv = command_line(p)
    env = dict(os.environ, LVSKIT_ADDRESS=p.address, LVSKIT_PORT=str(p.port))
    r = runner.run(argv, timeout=exchange.left(), env=env)
    first = (r.stdout.strip().splitlines() or r.stderr.strip().splitlines() or [""])[0][:200]
    if r.timed_out:
        return Result(DOWN, _late(p))
    status = {0: UP, 1: WARNING, 2: DOWN}.get(r.code, UNKNOWN)
    reason = first or f"{os.path.basename(argv[0])} exit {r.code}"
    if r.code not in (0, 1, 2, 3):
        reason = f"exit {r.code}: {reason}"
    return Result(status, reason)


# --- socket probes, one selector loop ------------------------------------------

class _Sock:
    """One socket probe in flight: open() arms it, on_event() advances it."""

    def __init__(self, probe, start):
        self.probe, self.start = probe, start
        self.deadline = start + probe.timeout
        self.sock, self.buf, self.result = None, b"", None

    def open(self, sel):
        p = self.probe
        af = socket.AF_INET6 if ":" in p.address else socket.AF_INET
        stype = socket.SOCK_STREAM if p.kind in ("tcp", "ssh") else socket.SOCK_DGRAM
        self.sock = socket.socket(af, stype | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        if stype == socket.SOCK_STREAM:
            err = self.sock.connect_ex((p.address, p.port))
            if err not in (0, errno.EINPROGRESS):
                return self.done(DOWN, _why(err))
            sel.register(self.sock, selectors.EVENT_WRITE, self)
            return None
        try:
            self.sock.connect((p.address, p.port))
            self.sock.send(xdmcp.query() if p.kind == "xdmcp" else p.check.send)
        except OSError as e:
            return self.done(DOWN, _why(e.errno))
        sel.register(self.sock, selectors.EVENT_READ, self)
        return None

    def done(self, status, reason):
        self.result = Result(status, reason, time.monotonic() - self.start)
        return self.result

    def on_event(self, sel):
        p, s = self.probe, self.sock
        if p.kind in ("tcp", "ssh") and not self.connected():
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self.done(DOWN, _why(err))
            self._connected = True
            if p.kind == "tcp":
                return self.done(UP, f"connected in {_ms(self.start)}")
            sel.modify(s, selectors.EVENT_READ, self)
            return None
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return None
        except OSError as e:
            return self.done(DOWN, _why(e.errno))
        if p.kind == "ssh":
            return self._banner(data)
        if p.kind == "xdmcp":
            return self._willing(data)
        if p.check.expect and not re.search(p.check.expect.encode(), data):
            return self.done(DOWN, f"reply {data[:60]!r} does not match {p.check.expect!r}")
        return self.done(UP, f"{len(data)} bytes in {_ms(self.start)}")

    def connected(self):
        return getattr(self, "_connected", False)

    def _banner(self, data):
        self.buf += data
        line = self.buf.split(b"\n", 1)[0]
        if not data or b"\n" in self.buf or len(self.buf) >= _BANNER_MAX:
            pattern = self.probe.check.expect or r"^SSH-\d"
            text = line.decode("latin-1").strip()
            if re.search(pattern, text):
                return self.done(UP, text[:80])
            return self.done(DOWN, f"banner {text[:60]!r} does not match {pattern!r}"
                             if data or self.buf else "closed without a banner")
        return None

    def _willing(self, data):
        try:
            opcode, fields = xdmcp.parse(data)
        except xdmcp.BadPacket as e:
            return self.done(DOWN, f"bad XDMCP reply: {e}")
        status = fields.get("status", b"").decode("latin-1")[:60]
        if opcode == xdmcp.WILLING:
            return self.done(UP, f"Willing: {status}" if status else "Willing")
        if opcode == xdmcp.UNWILLING:
            return self.done(DOWN, f"Unwilling: {status}")
        return self.done(DOWN, f"XDMCP opcode {opcode}, want Willing")

    def close(self, sel):
        if self.sock is not None:
            try:
                sel.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()


def _why(err):
    if err == errno.ECONNREFUSED:
        return "connection refused"
    return os.strerror(err).lower() if err else "error"


def _ms(start):
    return f"{(time.monotonic() - start) * 1000:.0f}ms"


def _socket_round(probes, start):
    if not probes:
        return {}
    sel = selectors.DefaultSelector()
    pending, results = [], {}
    pinger = _Pinger(sel) if any(p.kind == "ping" for p in probes) else None
    for p in probes:
        if p.kind == "ping":
            r = pinger.send(p, start)
        else:
            s = _Sock(p, start)
            r = s.open(sel)
            if r is None:
                pending.append(s)
            else:
                s.close(sel)
        if r is not None:
            results[p] = r
    try:
        while pending or (pinger and pinger.waiting):
            now = time.monotonic()
            deadlines = [s.deadline for s in pending] + (pinger.deadlines() if pinger else [])
            wait = max(0.0, min(deadlines) - now)
            for key, _ in sel.select(wait):
                owner = key.data
                if owner is pinger:
                    results.update(pinger.on_event())
                    continue
                if owner.result is None and owner.on_event(sel) is not None:
                    owner.close(sel)
                    results[owner.probe] = owner.result
            now = time.monotonic()
            still = []
            for s in pending:
                if s.result is not None:
                    continue
                if now >= s.deadline:
                    s.done(DOWN, f"timeout after {s.probe.timeout:g}s")
                    s.close(sel)
                    results[s.probe] = s.result
                else:
                    still.append(s)
            pending = still
            if pinger:
                results.update(pinger.expire(now))
    finally:
        for s in pending:
            s.close(sel)
        if pinger:
            pinger.close()
        sel.close()
    return results


class _Pinger:
    """ICMP echo to many hosts from one socket per family.

    Raw sockets as root; otherwise the kernel's unprivileged ICMP datagram
    sockets (net.ipv4.ping_group_range), which rewrite the identifier, so
    replies are matched by (address, sequence).
    """

    def __init__(self, sel):
        self.sel, self.socks, self.raw = sel, {}, {}
        self.out = {}           # (address, seq) -> (probe, start, deadline)
        self.seq = 0
        self.ident = os.getpid() & 0xFFFF

    def _sock(self, af):
        if af not in self.socks:
            proto = socket.IPPROTO_ICMPV6 if af == socket.AF_INET6 else socket.IPPROTO_ICMP
            try:
                s, raw = socket.socket(af, socket.SOCK_RAW, proto), True
            except PermissionError:
                s, raw = socket.socket(af, socket.SOCK_DGRAM, proto), False
            s.setblocking(False)
            self.socks[af], self.raw[af] = s, raw
            self.sel.register(s, selectors.EVENT_READ, self)
        return self.socks[af]

    @property
    def waiting(self):
        return bool(self.out)

    def deadlines(self):
        return [d for _, _, d in self.out.values()]

    def send(self, p, start):
        af = socket.AF_INET6 if ":" in p.address else socket.AF_INET
        self.seq = (self.seq + 1) & 0xFFFF
        kind = 128 if af == socket.AF_INET6 else 8
        head = struct.pack("!BBHHH", kind, 0, 0, self.ident, self.seq)
        body = b"lvskit check-real"
        if af == socket.AF_INET:
            head = struct.pack("!BBHHH", kind, 0, _checksum(head + body), self.ident, self.seq)
        try:
            self._sock(af).sendto(head + body, (p.address, 0))
        except OSError as e:
            return Result(DOWN, _why(e.errno))
        self.out[(p.address, self.seq)] = (p, start, start + p.timeout)
        return None

    def on_event(self):
        found = {}
        for af, s in self.socks.items():
            while True:
                try:
                    data, addr = s.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if af == socket.AF_INET and self.raw[af]:
                    data = data[(data[0] & 0x0F) * 4:]
                if len(data) < 8:
                    continue
                kind, _, _, ident, seq = struct.unpack_from("!BBHHH", data)
                if kind != (129 if af == socket.AF_INET6 else 0):
                    continue
                if self.raw[af] and ident != self.ident:
                    continue
                key = (socket.inet_ntop(af, socket.inet_pton(af, addr[0].split("%")[0])), seq)
                hit = self.out.pop(key, None)
                if hit:
                    p, start, _ = hit
                    found[p] = Result(UP, f"echo reply in {_ms(start)}", time.monotonic() - start)
        return found

    def expire(self, now):
        gone = {}
        for key, (p, start, deadline) in list(self.out.items()):
            if now >= deadline:
                del self.out[key]
                gone[p] = Result(DOWN, f"no echo reply in {p.timeout:g}s", now - start)
        return gone

    def close(self):
        for s in self.socks.values():
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
