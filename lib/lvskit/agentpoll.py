"""Ask many lvs-agents (or HAProxy-style agents) at once over TCP.

One thread, non-blocking sockets and a selector: a thousand agents cost a
thousand sockets and no threads, and the whole round ends by one deadline,
so a dead server delays nothing but its own answer.  We send nothing (an
inetd agent reads nothing), read up to one line or EOF, and hand the raw
bytes to agentproto.
"""
import errno
import os
import resource
import selectors
import socket
import time

from .agentproto import MAX_LINE


def _fd_budget():
    """Sockets we may hold at once; raise the soft limit when we can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096 and (hard == resource.RLIM_INFINITY or hard > soft):
        want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return max(16, (soft if soft != resource.RLIM_INFINITY else 4096) - 64)


def poll(targets, timeout=1.0):
    """targets: {key: (address, port)} -> {key: bytes or an error string}.

    Bytes are what the agent sent up to its first newline (or EOF); an error
    string says what went wrong ("timeout", "connection refused", ...).
    """
    results = {}
    pending = list(targets.items())
    pending.reverse()
    budget = _fd_budget()
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    bufs = {}
    try:
        while pending or bufs:
            while pending and len(bufs) < budget:
                key, (address, port) = pending.pop()
                _start(sel, bufs, results, key, address, port)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sk, events in sel.select(min(left, 0.5)):
                _ready(sel, bufs, results, sk)
    finally:
        for sock, (key, _) in list(bufs.items()):
            results[key] = "timeout"
            sel.unregister(sock)
            sock.close()
        for key, _ in pending:
            results[key] = "timeout"
        sel.close()
    return results


def _start(sel, bufs, results, key, address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as e:
        results[key] = e.strerror or str(e)
        return
    try:
        err = sock.connect_ex((address, port))
    except OSError as e:
        sock.close()
        results[key] = e.strerror or str(e)
        return
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        results[key] = _strerror(err)
        return
    bufs[sock] = (key, bytearray())
    sel.register(sock, selectors.EVENT_READ)


def _strerror(err):
    return os.strerror(err).lower()


def _finish(sel, bufs, sock, results, value):
    key, _ = bufs.pop(sock)
    results[key] = value
    sel.unregister(sock)
    sock.close()


def _ready(sel, bufs, results, sk):
    sock = sk.fileobj
    key, buf = bufs[sock]
    try:
        data = sock.recv(MAX_LINE + 1)
    except BlockingIOError:
        return
    except OSError as e:
        # connection refused shows up here: the connect failed asynchronously
        _finish(sel, bufs, sock, results, (e.strerror or str(e)).lower())
        return
    if data:
        buf += data
        nl = buf.find(b"\n")
        if nl >= 0:
            _finish(sel, bufs, sock, results, bytes(buf[:nl + 1]))
        elif len(buf) > MAX_LINE:
            _finish(sel, bufs, sock, results, bytes(buf))
        return
    if buf:
        _finish(sel, bufs, sock, results, bytes(buf))
    else:
        _finish(sel, bufs, sock, results, "closed without an answer")
