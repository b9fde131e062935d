"""The heartbeat sockets, one per path and direction, each bound to this node's address on it.

Every path has its own receive queue, so a flood on one path fills that
queue alone and the others' heartbeats still arrive; the kernel queues only
datagrams from the peers' addresses on the path (only_from).
"""
import ctypes
import fcntl
import socket
import struct
import sys
import termios
import time

from .. import log
from ..errors import Fatal, USAGE

# Linux's numbers: Python 3.11's socket module names none of these.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)     # also its SCM_ type
IP_FREEBIND = 15
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
SO_ATTACH_FILTER = 26
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SKF_NET_OFF = -0x100000        # classic BPF: offsets from the IP header

TIMESPEC = struct.Struct("@ll")         # struct timespec: time_t and long, both a C long on Linux
ANCILLARY = socket.CMSG_SPACE(TIMESPEC.size)


def sender_socket(local, multicast):
    """A non-blocking socket that sends from local (its interface for multicast); OSError if it cannot."""
    af = socket.AF_INET6 if ":" in local else socket.AF_INET
    s = socket.socket(af, socket.SOCK_DGRAM)
    try:
        s.bind((local, 0))
        if multicast and af == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        elif multicast:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index_of(local))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def listen_sockets(cfg, me, inetd=False):
    """The listening sockets, and a Joins that keeps trying the multicast groups not joined yet.

    One socket per path, bound to this node's address on it, and with
    multicast one more per path, bound to the group and hearing only the
    datagrams that came through the interface where it joined.  inetd hands
    over one socket for all paths (its own, on stdin): no such separation
    there.
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


def only_from(sock, sources):
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
    only_from).
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
            index = index_of(local)
            if index:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, socket.if_indextoname(index).encode())
                where = (group, port, 0, index)
            else:           # the address is not there at all yet: its interface is unknown
                where = ("::", port)
        elif group:
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        only_from(s, peers)
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
                            + index_of(local).to_bytes(4, sys.byteorder))
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


def index_of(address):
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


_FIONREAD = bytearray(4)


def queued(s):
    """True when a datagram waits on s (FIONREAD).  One of 0 bytes reads as
    none: select() then says s is ready, and the caller reads it."""
    try:
        fcntl.ioctl(s, termios.FIONREAD, _FIONREAD, True)
    except OSError:
        return True
    return _FIONREAD != b"\0\0\0\0"
