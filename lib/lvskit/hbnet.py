"""Heartbeats on the wire: which node we are, the send loop, the listen loop.

hb-listen runs takeover as a subprocess, started once at its own start
(``takeover --serve``) and fed one command per line.  Why not a library
call: taking over needs pyroute2, whose import costs 0.3 s and 20 MB; paid
in a worker started in advance, hb-listen stays at the size of a bare Python
and the takeover is still immediate.  And a hook or a kernel step that
hangs or crashes stays in the worker; the heartbeat keeps being heard.
"""
import ctypes
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

from . import log, state
from .errors import Fatal, NOT_CONFIGURED, USAGE
from .heartbeat import ACTIVE, BadBeat, Encoder, HELD, Receiver, STANDBY
from .roles import ACQUIRE, ANNOUNCE, PeerView, Policy, RELEASE, decide
from .takeover import peers_path, read_role, role_path

MCL_CURRENT, MCL_FUTURE = 1, 2
LOOK_EVERY = 0.25       # seconds between looks at the role file (a `takeover` by hand)
PUBLISH_EVERY = 1.0     # seconds between rewrites of the peers view when nothing changed
GATHER = 0.05           # seconds hb-listen lets heartbeats queue between reads (see Listener.run)
AHEAD = 50              # beats hb-send signs in one go (see Sender)
READ_AT_ONCE = 64       # datagrams hb-listen reads from one socket before it looks at the others
PAUSE = 0.01            # seconds a socket that gave READ_AT_ONCE bad datagrams is left unread
FLOORS_FILE = "hb-replay.json"      # in STATE_DIR: see load_floors

# Linux's SO_TIMESTAMPNS (also its SCM_ type): Python 3.11's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")        # struct timespec: time_t and long, both a C long on Linux
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


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
    """SCHED_FIFO and locked memory: a busy CPU or a swapped page must not look like a dead peer."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.warning(f"no real-time scheduling ({getattr(e, 'strerror', e)}): "
                    "a busy CPU may delay heartbeats")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.warning(f"mlockall: {os.strerror(ctypes.get_errno())}")


class _Limited:
    """At most one log line per key per period (a flood of bad datagrams is one line)."""

    def __init__(self, period=10.0):
        self.period, self.last = period, {}

    def __call__(self, key, fn, message):
        now = time.monotonic()
        if now - self.last.get(key, -1e9) >= self.period:
            self.last[key] = now
            fn(message)


_UNREAD = object()


class RoleFile:
    """The advertised role, re-read only when the file changes.

    A missing file, or one not of its shape (read_role: one warning), is no
    news: the role last read stays.  Were
    it read as "standby", an active node whose file was deleted would say
    standby while it holds the VIPs, a higher-ranked peer would take them, and
    neither would let go.  `lost` tells hb-listen to have the worker rewrite
    the file from the interface; `fallback` gives the role when no file was
    ever read (hb-send starting after the file went).
    """

    def __init__(self, cfg, fallback=None):
        self.cfg, self.path, self.fallback = cfg, role_path(cfg), fallback
        self.stamp, self.role, self.lost = _UNREAD, None, False

    def get(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stamp = None
        if stamp != self.stamp:
            self.stamp = stamp
            role = read_role(self.cfg) if stamp else None
            self.lost = role is None
            if role is not None:
                self.role = role
            elif self.role is None:
                self.role = (self.fallback() if self.fallback else None) or STANDBY
        return self.role

    def reread(self):
        """Read again at the next get() (our own worker just wrote the file)."""
        self.stamp = _UNREAD


def interface_role(takeover_argv):
    """Active when `takeover status` says this node holds every VIP; else standby.

    A subprocess, once at hb-send's start and only when the role file is
    gone: the interface is read with pyroute2, whose import hb-send must not
    carry.
    """
    try:
        r = subprocess.run(takeover_argv + ["status"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning(f"cannot ask takeover status ({e}): saying standby")
        return STANDBY
    return ACTIVE if r.returncode == 0 else STANDBY


# --- sending -------------------------------------------------------------------

class _Path:
    """One heartbeat path of this node: its socket, once its address could be bound."""

    def __init__(self, name, local, dests, encode):
        self.name, self.local, self.dests, self.encode = name, local, dests, encode
        self.af = socket.AF_INET6 if ":" in local else socket.AF_INET
        self.sock, self.failed = None, False


class Sender:
    """One socket per path, each bound to this node's address on it.

    A path whose address is not (yet) local -- IPv6 still tentative, the
    cable's address not configured -- must not silence the others: it is
    logged once, tried again at every beat, and used once it binds.
    """

    def __init__(self, cfg, me, key, generation):
        hb = cfg.heartbeat
        self.me, self.key, self.generation, self.seq, self.port = me, key, generation, 0, hb.port
        self.multicast = hb.multicast
        self.paths = []
        self.signed, self.signed_role = [], None
        self.limited = _Limited()
        for name, local in sorted(me.paths.items()):
            v6 = ":" in local
            dests = []
            if hb.unicast:
                dests += [n.paths[name] for n in cfg.nodes if n.name != me.name and name in n.paths]
            if hb.multicast and (":" in hb.multicast) == v6:
                dests.append(hb.multicast)
            path = _Path(name, local, [(d, self.port) for d in dests],
                         Encoder(me.name, me.priority, name, generation, key))
            self.paths.append(path)
            self._open(path)

    def _open(self, path):
        s = socket.socket(path.af, socket.SOCK_DGRAM)
        try:
            s.bind((path.local, 0))
            if self.multicast and path.af == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(path.local))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            elif self.multicast:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, _index_of(path.local))
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        except OSError as e:
            s.close()
            if not path.failed:
                path.failed = True
                log.warning(f"path {path.name}: cannot send from {path.local} ({e.strerror}); "
                            "trying again at every beat")
            return
        s.setblocking(False)
        path.sock = s
        if path.failed:
            path.failed = False
            log.info(f"path {path.name}: sending from {path.local} now")

    def send(self, role):
        self.seq += 1
        if role != self.signed_role or not self.signed:
            self._sign(role)
        datagrams = self.signed.pop()
        for path, data in zip(self.paths, datagrams):
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
        # The same bytes as signing each beat when it is sent, made earlier:
        # after a 20 ms sleep, signing one beat's two datagrams took 35-50 us
        # of CPU here (cold caches: eight OpenSSL context copies), against
        # 2.7 us each in one go.  Listed last beat first: send() pops the end.
        self.signed_role = role
        self.signed = [tuple(p.encode(role, seq) for p in self.paths)
                       for seq in range(self.seq + AHEAD - 1, self.seq - 1, -1)]


class DirWatch:
    """`changed` turns True when something in a directory changes: inotify, told by SIGIO.

    hb-send's news of a role change, at no cost per beat: a stat of the role
    file at every beat took ~25 us of CPU here (a cold path walk after a 20 ms
    sleep), an eighth of the beat.  The signal only sets the flag (the sleep
    goes on); the role is read at the next beat, as with the stat.  `ok` is
    False while there is no watch (no inotify, the directory missing or
    removed): the caller then looks at every beat, as without it; `look()`
    tries again.
    """

    # what state.save (a rename), a write in place and a removal make
    EVENTS = 0x8 | 0x80 | 0x40 | 0x100 | 0x200      # CLOSE_WRITE MOVED_TO MOVED_FROM CREATE DELETE
    IGNORED = 0x8000                                # the watch is gone (directory removed)

    def __init__(self, path):
        self.path, self.changed, self.ok, self.fd = path, False, False, -1
        self.libc = ctypes.CDLL(None, use_errno=True)
        fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.warning(f"inotify: {os.strerror(ctypes.get_errno())}: reading the role file at every beat")
            return
        self.fd = fd
        signal.signal(signal.SIGIO, self._signalled)
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        self._add()

    def _signalled(self, signum, frame):
        self.changed = True

    def _add(self):
        self.ok = self.libc.inotify_add_watch(self.fd, os.fsencode(self.path), self.EVENTS) >= 0

    def look(self):
        """Empty the event queue, and watch again a directory that went; call before reading."""
        self.changed = False
        gone = False
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 4096)
            except OSError:         # EAGAIN: all read
                break
            at = 0
            while at + 16 <= len(data):
                _, mask, _, length = struct.unpack_from("=iIII", data, at)
                gone |= bool(mask & self.IGNORED)
                at += 16 + length
        if self.fd >= 0 and (gone or not self.ok):
            self._add()


def send_loop(cfg, sender, interval, count=None, fallback=None):
    role = RoleFile(cfg, fallback)
    watch = DirWatch(cfg.run_dir)
    # A look at the role file every LOOK_EVERY even with the watch: a change
    # the watch cannot see (RUN_DIR replaced between two looks) is late by that
    # much at most, not forever.
    every = max(1, int(LOOK_EVERY / interval))
    deadline, sent, look = time.monotonic(), 0, 0
    current = None
    while count is None or sent < count:
        if watch.changed or sent >= look or not watch.ok:
            watch.look()
            current = role.get()
            look = sent + every
        sender.send(current)
        sent += 1
        deadline += interval
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -interval:     # fell behind (suspended?): do not burst to catch up
            deadline = time.monotonic()


# --- listening -------------------------------------------------------------------

def listen_sockets(cfg, me, inetd=False):
    """The listening sockets, and a Joins that keeps trying the multicast groups not joined yet.

    One socket per path, bound to this node's address on it, and with
    multicast one more per path, bound to the group and hearing only the
    datagrams that came through the interface where it joined: every path
    has its own receive queue, so a flood on one path fills that queue alone
    and the others' heartbeats still arrive.  inetd hands over one socket for
    all paths (its own, on stdin): no such separation there.
    """
    hb = cfg.heartbeat
    joins = Joins(hb.multicast)
    if inetd:
        try:
            s = socket.socket(fileno=0)
        except OSError as e:
            raise Fatal(f"--inetd: stdin is not a socket ({e.strerror}); inetd.conf: dgram udp wait",
                        USAGE) from None
        if s.type != socket.SOCK_DGRAM:
            raise Fatal("--inetd: stdin is not a datagram socket (inetd.conf: dgram udp wait)", USAGE)
        s.setblocking(False)
        return [s], joins
    out = []
    try:
        for name, local in sorted(me.paths.items()):
            peers = [n.paths[name] for n in cfg.nodes if n.name != me.name and name in n.paths]
            out.append(_path_socket(name, local, hb.port, peers))
            if hb.multicast and (":" in hb.multicast) == (":" in local):
                out.append(_path_socket(name, local, hb.port, peers, hb.multicast))
                joins.add(out[-1], name, local)
    except BaseException:
        for s in out:
            s.close()
        raise
    joins.retry()
    return out, joins


IP_FREEBIND = 15            # Linux's numbers: Python 3.11's socket module names none of these
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29


SO_ATTACH_FILTER = 26
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SKF_NET_OFF = -0x100000        # classic BPF: offsets from the IP header


def _only_from(sock, sources):
    """Have the kernel drop every datagram to sock whose IP source is not in sources.

    The Receiver checks the source too; this is the same check made before
    the datagram is queued: a flood from elsewhere neither fills the path's
    queue (crowding out its heartbeats) nor wakes hb-listen, which runs at
    real-time priority and would otherwise spend a CPU reading it, starving
    the kernel's own packet work on that CPU and delaying every path's beats.
    A classic BPF program: compare the source address word by word, accept
    at the first match.
    """
    v6 = sock.family == socket.AF_INET6
    at, words = (8, 4) if v6 else (12, 1)
    if 2 * words * len(sources) + 1 > 255:
        return          # beyond the 8-bit jumps (30 IPv6 peers on one path): the Receiver's check alone
    blocks = []
    for address in sources:
        raw = socket.inet_pton(sock.family, address)
        blocks.append(struct.unpack(f"!{words}I", raw))
    program = []                # (code, jt, jf, k); jumps are relative to the next instruction
    for b, block in enumerate(blocks):
        left = len(blocks) - b - 1          # the blocks after this one: 2 * words instructions each
        for w, word in enumerate(block):
            program.append((_BPF_LD_W_ABS, 0, 0, (_SKF_NET_OFF + at + 4 * w) & 0xFFFFFFFF))
            rest = 2 * (words - w - 1)      # this block's instructions after this jump
            accept = rest + 2 * words * left + 1        # past the other blocks and the drop
            # mismatch: skip the rest of this block, to the next block or the drop
            program.append((_BPF_JEQ_K, accept if w == words - 1 else 0, rest, word))
    program += [(_BPF_RET_K, 0, 0, 0), (_BPF_RET_K, 0, 0, 0xFFFFFFFF)]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("@HP", len(program), ctypes.addressof(buffer)))


def _path_socket(name, local, port, peers, group=None):
    """A socket bound to (local, port), or to (group, port) hearing only local's interface.

    IP_FREEBIND: a path whose address is not there yet (IPv6 still
    tentative, the cable's address missing) is bound all the same, and heard
    from once the address comes; the other paths never wait for it.  The
    kernel queues only datagrams from the peers' addresses on the path (see
    _only_from).
    """
    v6 = ":" in local
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    where = (group or local, port)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        # Several paths' sockets share the group: each must hear only what
        # came through its own path's interface.  IPv4 checks the interface
        # of the membership (IP_MULTICAST_ALL off); IPv6 checks only the
        # group, so its socket is bound to the interface (a link-local group
        # needs that as its scope anyway).
        if group and v6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            index = _index_of(local)
            if index:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, socket.if_indextoname(index).encode())
                where = (group, port, 0, index)
            else:           # the address is not there at all yet: its interface is unknown
                where = ("::", port)
        elif group:
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        _only_from(s, peers)
        s.bind(where)
    except OSError as e:
        s.close()
        raise Fatal(f"path {name}: cannot listen on {where[0]} UDP port {port}: {e.strerror}") from None
    s.setblocking(False)
    return s


class Joins:
    """Multicast memberships, one per path: one that fails (the path's address is
    not there yet) is logged once and tried again, and never stops the others."""

    RETRY = 1.0

    def __init__(self, group):
        self.group, self.pending, self.failed, self.tried = group, [], set(), -1e9

    def add(self, sock, name, local):
        self.pending.append((sock, name, local))

    def retry(self, now=None):
        now = time.monotonic() if now is None else now
        if not self.pending or now - self.tried < self.RETRY:
            return
        self.tried, left = now, []
        for sock, name, local in self.pending:
            try:
                if ":" in local:
                    mreq = (socket.inet_pton(socket.AF_INET6, self.group)
                            + _index_of(local).to_bytes(4, sys.byteorder))
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                else:
                    mreq = socket.inet_aton(self.group) + socket.inet_aton(local)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            except OSError as e:
                left.append((sock, name, local))
                if name not in self.failed:
                    self.failed.add(name)
                    log.warning(f"path {name}: cannot join {self.group} on {local} ({e.strerror}); "
                                "trying again every second")
                continue
            if name in self.failed:
                self.failed.discard(name)
                log.info(f"path {name}: joined {self.group} on {local}")
        self.pending = left


def _index_of(address):
    """Interface index of a local IPv6 address (0: let the kernel choose)."""
    want = socket.inet_pton(socket.AF_INET6, address).hex()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if fields[0] == want:
                    return int(fields[1], 16)
    except OSError:
        pass
    return 0


class Worker:
    """The `takeover --serve` subprocess.

    Only its first start is waited for (hb-listen cannot act without it).  A
    restart is not: waiting for "ready" (the pyroute2 import: 0.3 s here, 2 s
    in a slow guest) would stop the loop from reading heartbeats, and the
    first decision after it would see every peer silent for that long: a
    false takeover.  Instead "ready" arrives like an answer, and until then
    the loop hears but does not act.  A command unanswered for TIMEOUT s
    (a worker stuck in the kernel or a hook) restarts it: a stuck worker must
    not freeze every later decision, a release in a split brain included.
    """

    TIMEOUT = 5.0

    def __init__(self, argv, timeout=None):
        self.argv, self.proc, self.pending, self.role, self.sent_at = argv, None, None, None, 0.0
        self.timeout = self.TIMEOUT if timeout is None else timeout
        self.zombies = []
        self.start()
        ok, text = self.answer()
        if not ok:
            raise Fatal(f"{' '.join(self.argv)} did not start ({text or 'no answer'})")

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.fd = self.proc.stdout.fileno()
        self.pending, self.sent_at = "start", time.monotonic()

    def fileno(self):
        return self.fd

    def send(self, command):
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            self.pending, self.sent_at = command, time.monotonic()
        except OSError:
            self.restart("is gone")

    def overdue(self):
        return self.pending is not None and time.monotonic() - self.sent_at > self.timeout

    def answer(self):
        """Read one answer; returns (ok, role or message)."""
        line = self.proc.stdout.readline()
        starting, self.pending = self.pending == "start", None
        if not line:
            if self.role is not None:       # not at the first start: that is hb-listen's failure
                self.restart("died")
            return False, "worker died"
        word, _, rest = line.strip().partition(" ")
        if word == ("ready" if starting else "done") and rest:
            self.role = rest
            return True, rest
        return False, rest or line.strip()

    def restart(self, why):
        log.error(f"takeover worker {why}; restarting it")
        old = self.proc
        try:
            old.kill()
        except OSError:
            pass
        for f in (old.stdin, old.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.zombies = [p for p in self.zombies + [old] if p.poll() is None]
        self.start()


_FIONREAD = bytearray(4)


def _queued(s):
    """Another datagram waiting?  Asked rather than found out by a recvfrom that
    fails: raising (its errno text looked up and decoded, a traceback) costs
    more than the question, and the loop would pay it at every wake.  A
    datagram of 0 bytes reads as none; select() then wakes again for it."""
    try:
        fcntl.ioctl(s, termios.FIONREAD, _FIONREAD, True)
    except OSError:
        return True
    return _FIONREAD != b"\0\0\0\0"


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


def load_floors(path, peers):
    """The replay floors hb-listen left in path: {peer: (generation, seq)}.

    No beat of an older generation, or of that one numbered seq or less, is
    accepted after a restart.  Written by ``Listener`` at every half span of
    beats (seq reserved ahead, so a crash leaves it beyond every beat that
    was accepted) and at a clean exit (seq exact).  A file of any other
    shape is treated as absent, with one warning: it is state, deletable
    (deleted, beats captured before the restart are accepted once each again).
    """
    floors = state.load(path, {}, check_floors)
    return {name: floor for name, floor in floors.items() if name in peers}


def check_floors(data):
    """hb-replay.json's shape: {peer: {"generation": N, "seq": N}}, N in 0..2**64-1."""
    out = {}
    for name, v in state.obj(data, "the file").items():
        v = state.obj(v, name)
        out[name] = (state.integer(v.get("generation"), f"{name}.generation", 0, (1 << 64) - 1),
                     state.integer(v.get("seq"), f"{name}.seq", 0, (1 << 64) - 1))
    return out


class Listener:
    """The listen loop: hears heartbeats, tracks peers and paths, has the worker act.

    At a fast interval most of its cost is waking up (a bare Python loop that
    only sleeps 20 ms costs 0.2 % of a core here), and a wake per heartbeat is
    more than any decision needs.  So after reading it lets heartbeats queue
    for `gather` (GATHER, at most half of deadtime; none when that is not
    longer than the interval) and reads them all in one wake, each timed by the
    kernel (SO_TIMESTAMPNS).  Deadlines stay exact: a wake at a peer's warntime
    or deadtime reads the queue first and judges by arrival times.  What comes
    later, by up to `gather`: noticing a change a heartbeat announces (a
    peer's new role, a peer back), hence a planned handover or a failback.
    """

    def __init__(self, cfg, me, key, sockets, worker, clock=time.monotonic, joins=None, wall=time.time):
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
        self.floors_path = os.path.join(cfg.state_dir, FLOORS_FILE)
        self.kept = load_floors(self.floors_path, peers)       # what the file holds
        self.receiver = Receiver(key, peers, me.name, self.kept)
        # How far beyond a peer's newest beat the file reserves (see _keep_floors):
        # after a crash, a live peer stays unheard for up to that long.
        self.span = max(1, round(min(max(hb.initdead / 2, 0.5), 10.0) / hb.interval))
        self.keep_retry = -1e9
        self.policy = Policy(hb.deadtime, hb.initdead, hb.auto_failback, hb.failback_delay)
        self.clock = clock
        self.started = clock()
        self.peers = {}         # name -> PeerView
        self.paths = {}         # (name, path name) -> last heard
        self.dead_paths = set()
        self.warned = set()
        self.published = None
        self.published_at = -1e9
        self.limited = _Limited()
        self.buffer = bytearray(512)
        self.paused = {}        # fd -> until when a flooded socket is not read
        self.last_try = {}
        self.role_file = RoleFile(cfg)
        self.role_file.role = worker.role
        self.wake = self.next_look = self.read_at = self.started
        self.quiet_until = -1e9
        self.role = worker.role
        self.announce_due = None
        self.peer_names = [n.name for n in cfg.nodes if n.name != me.name]

    def run(self):
        # select() on numbers: on objects it calls their fileno() at every wake.
        # The worker's number changes when it is restarted.
        fds = list(self.by_fd)
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
        # datagram: heartbeats arriving every 20 ms must not keep pushing it away.
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
        if not ready and not _queued(s):
            return 0, False
        floor, oversized, read = self.read_at, False, 0
        for read in range(1, READ_AT_ONCE + 1):
            try:
                size, ancillary, _, source = s.recvmsg_into([self.buffer], _ANCILLARY, socket.MSG_TRUNC)
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
                    if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(raw) == _TIMESPEC.size:
                        at = arrival(_TIMESPEC.unpack(raw), now, wall, floor)
                batch.append((at, bytes(self.buffer[:size]), source[0], fd))
            if not _queued(s):
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
        # _only_from).  Read as fast as it comes, it would keep hb-listen, at
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
        return changed or self._floors_due(now)

    def heard(self, beat, now):
        """Record a verified beat; True when the peer is new, back, or changed role or priority."""
        old = self.peers.get(beat.name)
        key = (beat.name, beat.path)
        if (old is not None and now - old.last <= self.hb.deadtime and old.state == beat.state
                and old.priority == beat.priority and key not in self.dead_paths):
            # The routine beat, 50 times a second per path: only the times move.
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
        # A peer back from silence may have announced the VIPs as its own
        # meanwhile (a healed partition), and one that just released surely
        # did: whoever stays active says so again, or the ARP caches keep
        # pointing at the node that let go.
        if back or (old is not None and old.state == ACTIVE and beat.state != ACTIVE):
            self.announce_due = f"peer {beat.name} {'back' if back else 'released'}"
        self.peers[beat.name] = PeerView(beat.priority, beat.state, now, since)
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
        self._keep_floors(now)
        if self.joins is not None:
            self.joins.retry(now)

    def _act(self, now):
        if self.worker.pending is not None:
            if self.worker.overdue():
                self.worker.restart(f"gave no answer to {self.worker.pending!r} "
                                    f"in {self.worker.timeout:g} s")
            return
        role = self.role = self.role_file.get()
        if self.role_file.lost and now - self.last_try.get("status", -1e9) >= 0.5:
            # Deleted or garbled: the worker reads the interface and writes it again.
            self.last_try["status"] = now
            self.worker.send("status")
            return
        action = decide(self.me.name, self.me.priority, role, self.peers, now, self.started,
                        self.policy, self.peer_names)
        if self.announce_due and role == ACTIVE and action is None:
            self.worker.send("announce")
            log.warning(f"{self.announce_due}: staying active, announcing again")
        self.announce_due = None
        if action is None:
            return
        period = 1.0 if action == ANNOUNCE else 0.5
        if now - self.last_try.get(action, -1e9) < period:
            return
        self.last_try[action] = now
        self.worker.send(action)
        if action == ACQUIRE:
            log.warning("taking over: " + self._why(now))
        elif action == RELEASE:
            log.warning("releasing: " + ", ".join(
                f"{n} {p.state} priority {p.priority}" for n, p in self.peers.items()
                if now - p.last <= self.hb.deadtime))
        else:
            log.warning("split brain healed: staying active, announcing again")

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

    def _why(self, now):
        parts = []
        for name, p in self.peers.items():
            if now - p.last > self.hb.deadtime:
                parts.append(f"{name} silent for {(now - p.last) * 1000:.0f} ms")
            else:
                parts.append(f"{name} {p.state}")
        return ", ".join(parts) or "no peer heard since start"

    def _answer(self):
        ok, text = self.worker.answer()
        if ok:
            self.role = text
            # Our own write: not a hand change.  Still missing (RUN_DIR not
            # writable?): the worker's word is the role.
            self.role_file.reread()
            self.role_file.role = text
            self.role_file.get()
            if text == ACTIVE:
                self.last_try.pop(RELEASE, None)
            log.info(f"now {text}")
        else:
            log.error(f"takeover: {text}")

    def _floors_due(self, now):
        """True when a peer's newest beat came within half a span of what the file reserves."""
        if now < self.keep_retry:
            return False
        for name, (generation, seq) in self.receiver.tops.items():
            kept = self.kept.get(name)
            if kept is None or kept[0] != generation or seq + self.span // 2 > kept[1]:
                return True
        return False

    def _keep_floors(self, now):
        """Reserve the next span of every heard peer's numbers in STATE_DIR, ahead of the beats.

        Written every half span, after acting, so the file always names a
        number beyond every beat accepted (the half span's margin covers the
        write's delay): a restart after a crash refuses every beat accepted
        before it, and a live peer's next beats are heard within a span.
        """
        if self._floors_due(now):
            ahead = {n: (g, seq + self.span) for n, (g, seq) in self.receiver.tops.items()}
            self._save_floors({**self.kept, **ahead}, now)

    def close(self):
        """At a clean exit: the exact newest beats, so that the next start hears the peers at once."""
        self._save_floors({**self.receiver.floors, **self.receiver.tops}, self.clock())

    def _save_floors(self, floors, now):
        try:
            state.save(self.floors_path, {n: {"generation": g, "seq": seq} for n, (g, seq) in floors.items()})
        except OSError as e:
            self.keep_retry = now + 1.0
            self.limited("floors", log.warning, f"{self.floors_path}: {e.strerror or e}: a restart after a "
                         "crash may accept heartbeats captured before it")
            return
        self.kept = floors

    def _publish(self, now):
        """RUN_DIR/hb-peers.json: each peer's state, and when it was last heard on each path.

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
            state.save(peers_path(self.cfg), out, durable=False)
        except OSError as e:
            self.limited("publish", log.warning, f"{peers_path(self.cfg)}: {e.strerror}")


__all__ = ["which_node", "realtime", "Sender", "send_loop", "listen_sockets", "Worker", "Listener",
           "ACTIVE", "STANDBY", "HELD", "RELEASE"]
