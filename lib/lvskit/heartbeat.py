"""The heartbeat datagram: encode, decode, verify, and the replay window.

Pure: no sockets, no clocks.  A datagram is

    "LVHB" version state pathlen namelen priority generation seq  name path HMAC
     4s     B       B     B       B       H        Q          Q    N    P    32

in network byte order; the HMAC-SHA256 (shared key) covers every byte before
it, so the sender's name, state, priority and path cannot be altered.

The path travels as its name, not as a number: a number (its place among the
configured path names) changes for every path when one is added that sorts
first, and during a rolling config change every datagram would then fail the
source check on the node not yet changed.  Version 1 carried that number;
versions 1 and 2 do not hear each other.

Replays are refused without trusting any clock: each sender numbers its
datagrams (seq) within a generation that grows at every start of hb-send (see
``next_generation``).  The receiver keeps, per (peer, path), the newest
generation and a 64-wide window of sequence numbers, as IPsec does; a datagram
from an older generation, or a number already seen or too old, is dropped.

A restarted receiver starts from floors: per peer, a (generation, seq) that
no beat it accepts may be at or below (see ``Receiver``).  hb-listen keeps
them in STATE_DIR (see ``hbnet.floors``), so that after its restart or
crash captured datagrams stay refused, those of the peer's current generation
included.
"""
import hashlib
import hmac
import os
import struct
from collections import namedtuple

MAGIC = b"LVHB"
VERSION = 2
_HEAD = struct.Struct("!4sBBBBHQQ")
_MAC = hashlib.sha256().digest_size
MAX_NAME = 64        # a node's name, and a path's
MAX_SIZE = _HEAD.size + 2 * MAX_NAME + _MAC
WINDOW = 64

STANDBY, ACTIVE, HELD = "standby", "active", "held"
_STATE_CODE = {STANDBY: 0, ACTIVE: 1, HELD: 2}
_CODE_STATE = {v: k for k, v in _STATE_CODE.items()}


class BadBeat(ValueError):
    """A datagram we must ignore; the message says why (for a rate-limited log line)."""


# state: STANDBY, ACTIVE or HELD (held: out for maintenance, never takes over);
# path: the name of the path ([node] path.NAME) it was sent on.
Beat = namedtuple("Beat", "name state priority path generation seq")


def sign(body, key):
    """HMAC-SHA256 of body with the shared key: the datagram's last 32 bytes."""
    return hmac.digest(key, body, "sha256")


def encode(beat, key):
    """The signed datagram of beat; ValueError for a name or path that cannot travel."""
    name, path = beat.name.encode("ascii"), beat.path.encode("ascii")     # UnicodeEncodeError: a ValueError
    if not (0 < len(name) <= MAX_NAME and 0 < len(path) <= MAX_NAME):
        raise ValueError(f"node and path names must be 1..{MAX_NAME} ASCII characters")
    body = _HEAD.pack(MAGIC, VERSION, _STATE_CODE[beat.state], len(path), len(name),
                      beat.priority, beat.generation, beat.seq) + name + path
    return body + sign(body, key)


def decode(data, key):
    """The Beat in data, verified with key; BadBeat for anything else."""
    if len(data) > MAX_SIZE:
        raise BadBeat(f"oversized datagram ({len(data)} bytes)")
    if len(data) < _HEAD.size + 2 + _MAC:
        raise BadBeat(f"truncated datagram ({len(data)} bytes)")
    body, signature = data[:-_MAC], data[-_MAC:]
    if not hmac.compare_digest(signature, sign(body, key)):
        raise BadBeat("bad signature (wrong key, or tampered)")
    magic, version, state, pathlen, namelen, priority, generation, seq = _HEAD.unpack_from(body)
    if magic != MAGIC or version != VERSION:
        raise BadBeat(f"not a version {VERSION} heartbeat")
    if not namelen or not pathlen or len(body) != _HEAD.size + namelen + pathlen:
        raise BadBeat("name lengths do not match the datagram")
    if state not in _CODE_STATE:
        raise BadBeat(f"unknown state {state}")
    try:
        name = body[_HEAD.size:_HEAD.size + namelen].decode("ascii")
        path = body[_HEAD.size + namelen:].decode("ascii")
    except UnicodeDecodeError:
        raise BadBeat("name is not ASCII") from None
    return Beat(name, _CODE_STATE[state], priority, path, generation, seq)


class ReplayWindow:
    """Newest generation and a sliding bitmap of seen sequence numbers.

    newest: every number of `generation` up to it counts as seen (a floor
    kept across a restart).
    """

    def __init__(self, generation=-1, newest=-1):
        self.generation = generation
        self.top = newest
        self.bits = (1 << WINDOW) - 1 if newest >= 0 else 0     # bit i set: seq top-i was seen

    def accept(self, generation, seq):
        """Record (generation, seq); BadBeat when it is a replay or too old."""
        if generation < self.generation:
            raise BadBeat(f"old generation {generation} (now {self.generation})")
        if generation > self.generation:
            self.generation, self.top, self.bits = generation, seq, 1
            return
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = seq
            return
        age = self.top - seq
        if age >= WINDOW:
            raise BadBeat(f"sequence {seq} too old (newest {self.top})")
        if self.bits & (1 << age):
            raise BadBeat(f"replayed sequence {seq}")
        self.bits |= 1 << age


class Receiver:
    """Verifies datagrams against the configured nodes and drops replays.

    nodes: {name: {path name: address}} of the peers (not this node).
    floors: {name: (generation, seq)} kept by the caller across restarts
    (hb-listen: STATE_DIR): a beat of an older generation, or of that
    generation numbered seq or less, is refused on every path.  `tops` holds
    each peer's newest (generation, seq) accepted since: the floors to keep.
    """

    def __init__(self, key, nodes, me, floors=None):
        self.key, self.nodes, self.me = key, nodes, me
        self.windows = {}   # (name, path) -> ReplayWindow
        self.floors = {n: f for n, f in (floors or {}).items() if n in nodes}
        self.tops = {}
        self.sources = {a for paths in nodes.values() for a in paths.values()}

    def accept(self, data, source):
        # Before the HMAC: a flood from elsewhere must not cost hb-listen, at
        # real-time priority, a SHA-256 per datagram.  The source is checked
        # against the sender's own path address below anyway.
        plain = source if source in self.sources else _plain(source)
        if plain not in self.sources:
            raise BadBeat(f"source {source} is not a peer's path address")
        beat = decode(data, self.key)
        if beat.name == self.me:
            raise BadBeat(f"datagram claims to be from this node ({beat.name}) (looped back?)")
        paths = self.nodes.get(beat.name)
        if paths is None:
            raise BadBeat(f"unknown peer {beat.name!r}")
        if beat.path not in paths:
            raise BadBeat(f"{beat.name} has no path {beat.path}")
        if plain != paths[beat.path]:
            raise BadBeat(f"{beat.name} path {beat.path} from {source}, expected {paths[beat.path]}")
        # Only a verified datagram may move the window, or forged ones could push it.
        top = self.tops.get(beat.name) or self.floors.get(beat.name)
        if top is not None and beat.generation < top[0]:
            raise BadBeat(f"old generation {beat.generation} (now {top[0]})")
        window = self.windows.get((beat.name, beat.path))
        if window is None:
            window = self.windows[beat.name, beat.path] = ReplayWindow(*self.floors.get(beat.name, (-1, -1)))
        window.accept(beat.generation, beat.seq)
        if beat.name not in self.tops or (beat.generation, beat.seq) > top:
            self.tops[beat.name] = (beat.generation, beat.seq)
        return beat


def _plain(address):
    """'::ffff:10.0.0.1' (a v4 sender on a dual-stack socket) -> '10.0.0.1'; drop %scope."""
    address = address.split("%", 1)[0]
    return address[7:] if address.startswith("::ffff:") and "." in address else address


MAX_GENERATION = 2**64 - 1     # the wire's generation is an unsigned 64-bit number (_HEAD)


def next_generation(path, now_seconds):
    """A generation larger than every earlier one of this node: stored counter + 1.

    The wall clock is only a floor for when the state file was deleted (it is
    state, deletable); its going backwards never makes a generation repeat as
    long as the file is kept, and its jumping forwards is harmless.  A file
    not of its shape ({"generation": N}, N + 1 within the wire's 64 bits) is
    taken as deleted, with one warning.
    """
    from . import log, state
    stored = state.load(path, 0, _check_generation_file)
    generation = max(stored + 1, int(now_seconds))
    try:
        state.save(path, {"generation": generation})
    except OSError as e:    # as if deleted: the clock stays the floor; no reason to stop beating
        log.warning(f"{e}; the next start relies on the clock")
    return generation


def _check_generation_file(data):
    from . import state
    return state.integer(state.obj(data, "the file").get("generation"), "generation", 0, MAX_GENERATION - 1)


def check_key_file(path, st=None):
    """The key's bytes; Fatal(PERMISSION) unless root owns it and others cannot read it.

    Not a regular file (a directory, say), or unreadable: Fatal(NOT_CONFIGURED).
    """
    import stat
    from .errors import Fatal, NOT_CONFIGURED, PERMISSION
    try:
        st = st or os.stat(path)
    except OSError as e:
        raise Fatal(f"{path}: {e.strerror}", NOT_CONFIGURED) from None
    if not stat.S_ISREG(st.st_mode):
        raise Fatal(f"{path}: key file is not a regular file", NOT_CONFIGURED)
    if st.st_uid != 0:
        raise Fatal(f"{path}: key file must be owned by root (uid {st.st_uid})", PERMISSION)
    if st.st_mode & 0o027:
        raise Fatal(f"{path}: key file is accessible by others (mode {st.st_mode & 0o777:o}; "
                    "want 600 or 640)", PERMISSION)
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as e:
        raise Fatal(f"{path}: {e.strerror}", NOT_CONFIGURED) from None
    if len(key) < 16:
        raise Fatal(f"{path}: key shorter than 16 bytes", NOT_CONFIGURED)
    return key
