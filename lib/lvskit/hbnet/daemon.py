"""What both heartbeat daemons need: which [node] this machine is, real-time
scheduling, and log lines limited to one per period."""
import ctypes
import os
import socket
import time

from .. import log
from ..errors import Fatal, NOT_CONFIGURED

MCL_CURRENT, MCL_FUTURE = 1, 2


def _is_local(address):
    af = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(af, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def which_node(cfg, name=None):
    """This machine's [node]: by name, else the one whose address is local, else the hostname."""
    if name:
        try:
            return cfg.node(name)
        except KeyError:
            raise Fatal(f"{cfg.path}: no [node {name}]", NOT_CONFIGURED) from None
    local = [n for n in cfg.nodes if any(_is_local(a) for a in n.paths.values())]
    if len(local) == 1:
        return local[0]
    host = socket.gethostname().split(".")[0]
    for n in cfg.nodes:
        if n.name == host:
            return n
    raise Fatal(f"{cfg.path}: cannot tell which [node] this machine is "
                f"({'several' if local else 'none'} have a local address); use --node NAME",
                NOT_CONFIGURED)


def realtime(priority=50):
    """SCHED_FIFO and locked memory: a busy CPU or a swapped page must not look like a dead peer.

    For this process only: with SCHED_RESET_ON_FORK every child (the
    takeover worker, `takeover status`) starts at normal priority, from its
    first instruction.  Its imports (pyroute2) and hooks at real-time
    priority would keep every lower real-time task (audio, a control loop, a
    probe) off the CPUs while they run.  Memory locks are not inherited
    either (fork and exec drop them, MCL_FUTURE included).

    Memory first: locking faults in every page mapped (the interpreter, its
    libraries), work that must not run at real-time priority either.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.warning(f"mlockall: {os.strerror(ctypes.get_errno())}")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.warning(f"no real-time scheduling ({getattr(e, 'strerror', e)}): "
                    "a busy CPU may delay heartbeats")


class Limited:
    """At most one log line per key per period (a flood of bad datagrams is one line)."""

    def __init__(self, period=10.0):
        self.period, self.last = period, {}

    def __call__(self, key, fn, message):
        now = time.monotonic()
        if now - self.last.get(key, -1e9) >= self.period:
            self.last[key] = now
            fn(message)
