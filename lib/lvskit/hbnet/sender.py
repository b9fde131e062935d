"""hb-send's loop: one signed datagram per path per interval, saying this node's role."""
import math
import time

from .. import log
from ..heartbeat import Beat, encode
from ..rolefile import RoleFile
from .daemon import Limited
from .sockets import sender_socket

AHEAD = 50      # beats signed in one go (see Sender._sign)


class _Path:
    """One heartbeat path of this node: where it sends from and to, and its socket once bound."""

    def __init__(self, name, local, dests):
        self.name, self.local, self.dests = name, local, dests
        self.sock, self.failed = None, False


class Sender:
    """One socket per path, each bound to this node's address on it.

    A path whose address is not (yet) local -- IPv6 still tentative, the
    cable's address not configured -- must not silence the others: it is
    logged once, tried again at every beat, and used once it binds.
    """

    def __init__(self, cfg, me, key, generation):
        hb = cfg.heartbeat
        self.me, self.key, self.generation, self.seq = me, key, generation, 0
        self.multicast = hb.multicast
        self.paths = []
        self.signed, self.signed_role = [], None
        self.limited = Limited()
        for name, local in sorted(me.paths.items()):
            dests = []
            if hb.unicast:
                dests += [n.paths[name] for n in cfg.nodes if n.name != me.name and name in n.paths]
            if hb.multicast and (":" in hb.multicast) == (":" in local):
                dests.append(hb.multicast)
            path = _Path(name, local, [(d, hb.port) for d in dests])
            self.paths.append(path)
            self._open(path)

    def _open(self, path):
        try:
            path.sock = sender_socket(path.local, self.multicast)
        except OSError as e:
            if not path.failed:
                path.failed = True
                log.warning(f"path {path.name}: cannot send from {path.local} ({e.strerror}); "
                            "trying again at every beat")
            return
        if path.failed:
            path.failed = False
            log.info(f"path {path.name}: sending from {path.local} now")

    def send(self, role):
        """One beat: the next sequence number, signed, on every path that has a socket."""
        self.seq += 1
        if role != self.signed_role or not self.signed:
            self._sign(role)
        for path, data in zip(self.paths, self.signed.pop()):
            if path.sock is None:
                self._open(path)
                if path.sock is None:
                    continue
            for dest in path.dests:
                try:
                    path.sock.sendto(data, dest)
                except OSError as e:     # a dead cable: the other paths carry on
                    self.limited(("send", path.name, dest[0]), log.warning,
                                 f"path {path.name}: sending to {dest[0]}: {e.strerror}")

    def _sign(self, role):
        """The datagrams of the next AHEAD beats with this role, the next beat's last.

        The same bytes as signing each beat when it is sent.  hb-send wakes
        once a beat with cold caches, and signing then costs several times
        what it costs in a row.
        A role change throws the rest away: the next beat has the new role.
        """
        self.signed_role = role
        self.signed = [tuple(encode(Beat(self.me.name, role, self.me.priority, p.name, self.generation, seq),
                                    self.key) for p in self.paths)
                       for seq in range(self.seq + AHEAD - 1, self.seq - 1, -1)]


def send_loop(cfg, sender, interval, count=None, role=None, notify=None, status=None):
    """Beat every interval (count times, or forever), with the role the role file says at that beat.

    The role file (role: a RoleFile; by default one that never asks the
    interface) is looked at (a stat; read when it changed) before every
    beat, so a role change goes out with the next beat: within one interval
    of takeover writing it.

    notify (an sdnotify.Notifier): READY=1 (with status) once the first beat
    is out, then WATCHDOG=1 from this loop itself, so that a loop stuck
    anywhere stops the pings and systemd's watchdog acts.  Per beat that is
    one compare, with the clock read the loop needs anyway; a ping goes out
    at the last beat before it falls due (at most one interval early).
    """
    role = role or RoleFile(cfg)
    deadline, sent = time.monotonic(), 0
    ping_at = -math.inf if notify else math.inf     # -inf: ready after the first beat
    while count is None or sent < count:
        sender.send(role.get())
        sent += 1
        deadline += interval
        now = time.monotonic()
        if deadline > ping_at:      # a ping falls due before the next beat: now, a little early
            ping_at = notify.ping(now) if ping_at > -math.inf else notify.ready(status)
            while deadline > ping_at:       # a beat interval longer than the pings' period
                time.sleep(max(0.0, ping_at - now))
                now = time.monotonic()
                ping_at = notify.ping(now)
        delay = deadline - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -interval:     # fell behind (suspended?): do not burst to catch up
            deadline = time.monotonic()
