"""hb-listen's loop: hears the peers' heartbeats, tracks peers and paths, has the worker act.

The decisions are lvskit.roles'; the acting is the takeover worker's
(worker.Worker).  What this loop adds is time: when each beat arrived,
which peer or path went silent for how long, and when to wake next.
"""
import math
import select
import socket
import time

from .. import log, sdnotify, state
from ..heartbeat import ACTIVE, HELD, STANDBY, BadBeat, Receiver
from ..roles import ACQUIRE, ANNOUNCE, PeerView, Policy, RELEASE, decide
from ..rolefile import RoleFile
from .daemon import Limited
from .floors import Floors
from .sockets import ANCILLARY, SO_TIMESTAMPNS, TIMESPEC, queued

LOOK_EVERY = 0.25       # seconds between looks at the role file (a `takeover` by hand)
PUBLISH_EVERY = 1.0     # seconds between rewrites of the peers view when nothing changed
GATHER = 0.05           # seconds hb-listen lets heartbeats queue between reads (see Listener)
READ_AT_ONCE = 64       # datagrams read from one socket before looking at the others
PAUSE = 0.01            # seconds a socket that gave READ_AT_ONCE bad datagrams is left unread


def arrival(stamp, now, wall, floor):
    """The monotonic time a datagram arrived, from its kernel stamp (wall-clock sec, ns).

    now and wall: the monotonic and wall clocks read together, after it
    arrived.  Clamped to [floor, now], floor being the previous read of the
    queue (it was not there before that): a wall clock stepped meanwhile
    (NTP, by hand) cannot put an arrival in the future or before it could be.
    """
    at = now - (wall - stamp[0] - stamp[1] * 1e-9)
    return floor if at < floor else now if at > now else at


def _first(item):
    return item[0]


# Why the role file changed when hb-listen's worker did not change it.
BY_HAND = {ACTIVE: "takeover by hand", HELD: "takeover --release by hand", STANDBY: "takeover --rejoin by hand"}


class Listener:
    """The listen loop: hears heartbeats, tracks peers and paths, has the worker act.

    At a fast interval most of its cost is waking up, and a wake per
    heartbeat is more than any decision needs.  So after reading it lets
    heartbeats queue for `gather` (GATHER, at most half of deadtime; none when
    that is not longer than the interval) and reads them all in one wake,
    each timed by the kernel (SO_TIMESTAMPNS).  Deadlines stay exact: a wake
    at a peer's warntime or deadtime reads the queue first and judges by
    arrival times.  What comes later, by up to `gather`: noticing a change a
    heartbeat announces (a peer's new role, a peer back), hence a planned
    handover or a failback.

    notify (an sdnotify.Notifier): READY=1 as the loop starts (the sockets
    bound, the worker ready), STATUS= at each change of role, and WATCHDOG=1
    from the loop itself, which wakes at least every LOOK_EVERY: a loop
    stuck anywhere stops the pings, and systemd's watchdog acts.
    """

    def __init__(self, cfg, me, key, sockets, worker, clock=time.monotonic, joins=None, wall=time.time,
                 notify=None):
        hb = cfg.heartbeat
        self.cfg, self.hb, self.me, self.sockets, self.worker = cfg, hb, me, sockets, worker
        self.by_fd = {s.fileno(): s for s in sockets}
        self.wall = wall
        self.gather = min(GATHER, hb.deadtime / 2)
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:     # read late, a beat would count late: read each as it comes
                self.gather = 0.0
        if self.gather <= hb.interval:
            self.gather = 0.0
        self.joins = joins
        peers = {n.name: dict(n.paths) for n in cfg.nodes if n.name != me.name}
        self.limited = Limited()
        # The floors file reserves half of initdead's beats (0.5 to 10 s of
        # them): after a crash, a live peer stays unheard for up to that long.
        span = max(1, round(min(max(hb.initdead / 2, 0.5), 10.0) / hb.interval))
        self.floors = Floors(state.replay_path(cfg), peers, span, self.limited)
        self.receiver = Receiver(key, peers, me.name, self.floors.kept)
        self.policy = Policy(hb.deadtime, hb.initdead, hb.auto_failback, hb.failback_delay)
        self.clock = clock
        self.started = clock()
        self.peers = {}         # name -> PeerView
        self.paths = {}         # (name, path name) -> last heard
        self.dead_paths = set()
        self.warned = set()
        self.published = None
        self.published_at = -1e9
        self.buffer = bytearray(512)
        self.paused = {}        # fd -> until when a flooded socket is not read
        self.last_try = {}
        self.role_file = RoleFile(cfg)
        self.role_file.role = worker.role       # the worker read it at its start
        self.wake = self.next_look = self.read_at = self.started
        self.quiet_until = -1e9
        self.role = worker.role
        self.announce_due = None
        self.why = None         # why the command the worker is doing was sent (logged at its answer)
        self.split = set()      # peers heard already active while we were active (see heard)
        self.split_said = set()
        self.peer_names = [n.name for n in cfg.nodes if n.name != me.name]
        self.notify = notify or sdnotify.Notifier({})

    def status(self):
        """What `systemctl status` shows: who we are, where we listen, our role."""
        return f"{self.me.name}: listening on port {self.hb.port}, role {self.role}"

    def run(self):
        # The worker's number changes when it is restarted: read at every wake.
        fds = list(self.by_fd)
        ping_at = self.notify.ready(self.status()) if self.notify else math.inf
        while True:
            worker, now = self.worker.fd, self.clock()
            timeout = self._timeout(now)
            if now < self.quiet_until:
                # Gathering: heartbeats queue with their kernel times; only the
                # worker, a deadline or the end of the gathering wakes us.
                ready, _, _ = select.select([worker], [], [], min(timeout, self.quiet_until - now))
            elif self.paused:
                listened = [fd for fd in fds if self.paused.get(fd, now) <= now]
                timeout = min([timeout] + [t - now for t in self.paused.values() if t > now])
                ready, _, _ = select.select(listened + [worker], [], [], timeout)
            else:
                ready, _, _ = select.select(fds + [worker], [], [], timeout)
            changed = False
            if worker in ready:
                self._answer()
                changed = True
            now = self.clock()
            if now >= ping_at:
                ping_at = self.notify.ping(now)
            changed |= self._receive(ready, now)
            # A routine heartbeat changes no decision: only a change, or a deadline, does.
            if changed or now >= self.wake:
                self.step(now)
                self.next_look = now + LOOK_EVERY

    def _timeout(self, now):
        """Sleep until the next thing that can happen without a datagram.

        That is a peer's warntime or deadtime running out (to the exact
        moment, not a tick later), the end of initdead, or a look at the role
        file (a `takeover` by hand) every quarter second.  No polling tick:
        between heartbeats hb-listen sleeps.
        """
        # The look is due LOOK_EVERY after the last step, not after the last
        # datagram: a steady stream of heartbeats must not keep pushing it away.
        hb, wake = self.hb, max(now, self.next_look)
        for p in self.peers.values():
            for t in (p.last + hb.warntime, p.last + hb.deadtime):
                if now < t < wake:
                    wake = t
        for last in self.paths.values():
            if now < last + hb.deadtime < wake:
                wake = last + hb.deadtime
        if now < self.started + hb.initdead < wake:
            wake = self.started + hb.initdead
        self.wake = wake
        return max(0.0, wake - now + 0.0002)

    def _read(self, s, fd, ready, now, wall, batch):
        """Append (arrival, data, source, fd) of the datagrams queued on s to batch.

        At most READ_AT_ONCE: a path flooded faster than we read must not
        keep us from the other paths' sockets (select() wakes us again at
        once for the rest).  ready: select() said so, and a datagram of 0
        bytes (FIONREAD says 0) must then be read, or select() would wake for
        it again at once.  Returns how many were read, and True when one too
        big to be a heartbeat was dropped (logged here with its real size:
        MSG_TRUNC gives it).
        """
        if not ready and not queued(s):
            return 0, False
        floor, oversized, read = self.read_at, False, 0
        for read in range(1, READ_AT_ONCE + 1):
            try:
                size, ancillary, _, source = s.recvmsg_into([self.buffer], ANCILLARY, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.limited("recv", log.warning, f"receiving: {e.strerror}")
                break
            if size > len(self.buffer):
                oversized = True
                self.limited(("bad", "oversized"), log.warning,
                             f"from {source[0]}: oversized datagram ({size} bytes)")
            else:
                at = now
                for level, kind, raw in ancillary:
                    if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(raw) == TIMESPEC.size:
                        at = arrival(TIMESPEC.unpack(raw), now, wall, floor)
                batch.append((at, bytes(self.buffer[:size]), source[0], fd))
            if not queued(s):
                break
        return read, oversized

    def _receive(self, ready, now):
        """Read every socket's queue; True when a datagram changed what we know.

        Each beat counts from when the kernel received it, not from when we
        read it: read late (gathered), it still moves the peer's deadline from
        the moment it arrived, so gathering never makes a dead peer look alive
        longer, nor a live one silent.
        """
        batch, wall, bad, full = [], self.wall(), False, []
        for fd, s in self.by_fd.items():
            if self.paused.get(fd, now) > now:
                continue
            read, oversized = self._read(s, fd, fd in ready, now, wall, batch)
            bad |= oversized
            if read == READ_AT_ONCE:
                full.append(fd)
        self.read_at = now
        if len(self.sockets) > 1:
            batch.sort(key=_first)      # one socket per path: in the order they arrived
        changed, good = False, set()
        for at, data, source, fd in batch:
            try:
                changed |= self.heard(self.receiver.accept(data, source), at)
                good.add(fd)
            except BadBeat as e:
                bad = True
                self.limited(("bad", str(e).split(" ")[0]), log.warning, f"from {source}: {e}")
        # A socket that gave a full read without one good beat is flooded
        # (from a peer's forged address: others never reach the queue, see
        # sockets.only_from).  Read as fast as it comes, it would keep hb-listen, at
        # real-time priority, on the CPU the kernel needs to deliver every
        # path's beats; it is read again after PAUSE.
        for fd in full:
            if fd not in good:
                self.paused[fd] = now + PAUSE
                self.limited(("flood", fd), log.warning, f"a flood of bad datagrams to "
                             f"{self.by_fd[fd].getsockname()[0]}: reading {READ_AT_ONCE} every {PAUSE * 1000:g} ms")
        # Gather only while nothing but good heartbeats arrives: after a quiet
        # spell the first datagram is heard at once, and a flood of bad ones is
        # read as it comes (a full receive buffer would drop good beats).
        self.quiet_until = now + self.gather if batch and not bad else now
        # A peer's newest beat near what the file reserves: step now, and write.
        return changed or self.floors.due(self.receiver.tops, now)

    def heard(self, beat, now):
        """Record a verified beat; True when the peer is new, back, or changed role or priority."""
        old = self.peers.get(beat.name)
        key = (beat.name, beat.path)
        if (old is not None and now - old.last <= self.hb.deadtime and old.state == beat.state
                and old.priority == beat.priority and old.generation == beat.generation
                and key not in self.dead_paths):
            # The routine beat, the common case by far: only the times move.
            self.paths[key] = now
            if now > old.last:      # another path's beat, read in the same wake, may be newer
                old.last = now
            if self.warned:
                self.warned.discard(beat.name)
            return False
        since = old.since if old and now - old.last <= self.hb.deadtime else now
        back = old is not None and now - old.last > self.hb.deadtime
        if old is None or back:
            log.info(f"peer {beat.name} alive ({beat.state}, priority {beat.priority})")
        elif old.state != beat.state:
            log.info(f"peer {beat.name} now {beat.state}")
        # A peer that just let go of the VIPs had announced them as its own,
        # and so may one heard again in the same run of its hb-send (a healed
        # partition: it may have taken them and let go unheard): whoever
        # stays active says so again, or the ARP caches could keep pointing
        # at the node that let go.  Not for a peer that restarted (a reboot,
        # a crash): it held nothing since, and when it comes back to take the
        # VIPs (failback) an announcement of ours would race its own.
        if back and old.generation == beat.generation:
            self.announce_due = True
        elif old is not None and not back and old.state == ACTIVE and beat.state != ACTIVE:
            self.announce_due = True
        # Split brain: a peer first heard, or heard again after a silence in
        # the same run of its hb-send (generation), active while we are: both
        # held the VIPs without hearing each other.  A peer that turns active
        # while heard, or comes back restarted and active, took the VIPs over
        # from us on purpose (failback, make-before-break): no split brain.
        if beat.state != ACTIVE or back:
            self.split.discard(beat.name)
            self.split_said.discard(beat.name)
        if (beat.state == ACTIVE and self.role == ACTIVE
                and (old is None or (back and old.generation == beat.generation))):
            self.split.add(beat.name)
        self.peers[beat.name] = PeerView(beat.priority, beat.state, now, since, beat.generation)
        if key in self.dead_paths:
            self.dead_paths.discard(key)
            log.info(f"peer {beat.name}: path {beat.path} up again")
        self.paths[key] = now
        self.warned.discard(beat.name)
        return old is None or back or old.state != beat.state or old.priority != beat.priority

    def step(self, now):
        # Act first, then write: a log line or a file write can block (a busy
        # disk, a slow syslog), and nothing may stand between the decision and
        # the worker's VIP.
        self._act(now)
        self._report(now)
        self._publish(now)
        self.floors.keep(self.receiver.tops, now)
        if self.joins is not None:
            self.joins.retry(now)

    def _act(self, now):
        if self.worker.pending is not None:
            if self.worker.overdue():
                self.worker.restart(f"gave no answer to {self.worker.pending!r} "
                                    f"in {self.worker.timeout:g} s")
            return
        role = self.role_file.get()
        if role != self.role:       # not our worker's doing: a `takeover` by hand
            log.warning(f"now {role}: {BY_HAND[role]}")
            self.role = role
            self.notify.status(self.status())
        if self.role_file.lost and now - self.last_try.get("status", -1e9) >= 0.5:
            # Deleted or garbled: the worker reads the interface and writes it again.
            self.last_try["status"] = now
            self.worker.send("status")
            return
        action = decide(self.me.name, self.me.priority, role, self.peers, now, self.started,
                        self.policy, self.peer_names)
        if self.announce_due and role == ACTIVE and action is None:
            self.worker.send("announce")
        self.announce_due = None
        if action is None:
            return
        if action == ANNOUNCE:
            split = {n for n in self._live(now, ACTIVE) if n in self.split}
            # After a failback the peer we took the VIPs from is active until
            # it lets go, and our acquire has just announced: again only if it
            # has not let go a second later.
            if not split and now - self.last_try.get(ACQUIRE, -1e9) < 1.0:
                return
        period = 1.0 if action == ANNOUNCE else 0.5
        if now - self.last_try.get(action, -1e9) < period:
            return
        self.last_try[action] = now
        self.worker.send(self._command(action, now))
        if action == ACQUIRE:
            self.why = self._why_acquire(now)
        elif action == RELEASE:
            self.why = self._why_release(now)
        elif split != self.split_said:
            if split:
                log.warning(f"split brain: {self._peers(split)} active too; staying active, announcing again")
            self.split_said = split

    def _command(self, action, now):
        """The worker's command: a failback's or handover's acquire names the live node that held
        the VIPs (it forwards to it for the handover grace: takeover)."""
        if action == ACQUIRE:
            previous = sorted(self._live(now, ACTIVE)) or sorted(self._live(now, HELD))
            return f"{ACQUIRE} {previous[0]}" if previous else ACQUIRE
        return action

    def _report(self, now):
        for name, peer in self.peers.items():
            quiet = now - peer.last
            if quiet > self.hb.warntime and name not in self.warned:
                self.warned.add(name)
                log.warning(f"peer {name}: no heartbeat for {quiet * 1000:.0f} ms (warntime)")
        for key, last in self.paths.items():
            if now - last > self.hb.deadtime and key not in self.dead_paths:
                self.dead_paths.add(key)
                log.warning(f"peer {key[0]}: path {key[1]} silent for "
                            f"{(now - last) * 1000:.0f} ms")

    def _live(self, now, state):
        return {n: p for n, p in self.peers.items() if now - p.last <= self.hb.deadtime and p.state == state}

    def _peers(self, names):
        return ", ".join(f"peer {n} (priority {self.peers[n].priority})" for n in sorted(names))

    def _why_acquire(self, now):
        """Why we take the VIPs, in the words of the log line."""
        active = self._live(now, ACTIVE)
        if active:
            return f"failback, {self._peers(active)} was active"
        held = self._live(now, HELD)
        if held:
            return f"handover, {self._peers(held)} held"
        silent = [f"peer {n} silent for {(now - p.last) * 1000:.0f} ms"
                  + (" (was active)" if p.state == ACTIVE else "")
                  for n, p in sorted(self.peers.items()) if now - p.last > self.hb.deadtime]
        unheard = [f"peer {n} never heard" for n in self.peer_names if n not in self.peers]
        standby = self._live(now, STANDBY)
        return ", ".join(silent + unheard) or (f"{self._peers(standby)} standby" if standby else "no peer")

    def _why_release(self, now):
        rivals = self._live(now, ACTIVE)
        split = {n for n in rivals if n in self.split}
        if split:
            return f"split brain, {self._peers(split)} was active too"
        return f"failback, {self._peers(rivals)} took the VIPs"

    def _answer(self):
        starting = self.worker.pending == "start"
        ok, text = self.worker.answer()
        why, self.why = self.why, None
        if not ok:
            log.error(f"takeover: {text}")
            return
        old, self.role = self.role, text
        # Our own write: not a hand change.  Still missing (RUN_DIR not
        # writable?): the worker's word is the role.
        self.role_file.told(text)
        if text == ACTIVE:
            self.last_try.pop(RELEASE, None)
        # One line per change of role, once the worker holds (or has
        # dropped) the VIPs: an announcement or a status that changes
        # nothing is no news.
        if text != old:
            self.notify.status(self.status())
            log.warning(f"now {text}: {why or 'the interface says so'}")
        elif starting:
            log.info(f"takeover worker ready, {text}")

    def close(self):
        """At a clean exit: the exact newest beats, so that the next start hears the peers at once."""
        self.floors.save({**self.receiver.floors, **self.receiver.tops}, self.clock())

    def _publish(self, now):
        """hb-peers.json (state.peers_path): each peer's state, and when it was last heard on each path.

        Rewritten at once when a peer's state changes (takeover --release
        waits on it), else once every PUBLISH_EVERY seconds so lvs-status can
        tell heartbeat ages; times are wall-clock (monotonic means nothing to
        another process), written with the file's own time ("written").
        """
        view = {n: {"state": p.state, "alive": now - p.last <= self.hb.deadtime, "priority": p.priority}
                for n, p in self.peers.items()}
        if view == self.published and now - self.published_at < PUBLISH_EVERY:
            return
        self.published, self.published_at = view, now
        wall = time.time()
        out = {"written": round(wall, 3), "peers": {}}
        for name, v in view.items():
            paths = {p: round(wall - (now - t), 3) for (n, p), t in self.paths.items() if n == name}
            out["peers"][name] = dict(v, heard=round(wall - (now - self.peers[name].last), 3),
                                      paths=paths)
        try:
            state.save(state.peers_path(self.cfg), out, durable=False)
        except OSError as e:
            self.limited("publish", log.warning, f"{state.peers_path(self.cfg)}: {e.strerror}")
