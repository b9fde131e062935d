"""lvs-agent's work: one answer line, to stdout (inetd) or to each TCP client.

The line is computed afresh for every connection (a few small /proc reads),
so there is no daemon state to go stale; the one thing kept is the previous
reading of the [agent] cgroup's CPU time, so that a rate needs no wait
(capacity.CgroupCPU says when it is used).  Standalone mode serves one
client at a time, which is all a director polling every few seconds needs,
and a client that never reads, or never closes, can hold it for at most a
second each.

A client may send something first (HAProxy's agent-send); we never need it,
but we read it before closing (close_gently): Linux answers a close with
unread data by a reset, and a reset can destroy our answer before the
client has read it.
"""
import socket
import time

from . import agentproto, capacity, log


def answer(knobs, proc_root="/proc", meter=None):
    """The agent line for this machine now, e.g. 'up ready 73%\\n'."""
    reading = capacity.measure(knobs, proc_root, meter=meter)
    log.debug(reading.explain())
    return agentproto.format_answer(capacity.admin_state(knobs.state_file), reading.capacity)


def serve(knobs, address, port, proc_root="/proc", ready=None):
    """Answer every TCP connection on address:port with one line, forever."""
    meter = capacity.CgroupCPU(knobs.cgroup, knobs.cpu_sample) if knobs.cgroup else None
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address in ("", "::"):
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind((address or "0.0.0.0", port))
        srv.listen(512)
        if ready:
            ready(srv.getsockname())
        while True:
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(1.0)
                try:
                    line = answer(knobs, proc_root, meter)
                except (OSError, ValueError, KeyError, IndexError) as e:
                    log.error(f"cannot measure load: {e}")
                    continue    # no answer beats a wrong one: reweight keeps the weight
                try:
                    conn.sendall(line.encode("ascii"))
                except OSError:
                    continue
                close_gently(conn)


def close_gently(conn, timeout=1.0):
    """End our side (the client sees the end after the answer), then read and
    drop what the client sent until it closes, for at most timeout seconds:
    closed with unread data, the connection would be reset."""
    deadline = time.monotonic() + timeout
    try:
        conn.shutdown(socket.SHUT_WR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            conn.settimeout(left)
            if not conn.recv(4096):
                return
    except OSError:
        pass
