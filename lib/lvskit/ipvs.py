"""The kernel's IPVS table over generic netlink: the one module that talks to it.

Why a codec of our own and not pyroute2's IPVS layer (measured, see
bench/README.md and ../shared/notes/ipvs-guest.md): pyroute2's generic
encoder/decoder costs about 2,450 Python calls per message, so 10,000 real
servers took 68.6 s to load and 41.3 s to dump in the lab guest, against
1.2-1.4 s for messages packed with ``struct``; its import alone loads ~370
modules, which a cron script pays on every run; and its dump misreports the
forwarding method.  The IPVS message set is small and stable (uapi
linux/ip_vs.h), so we pack it here with the standard library: one socket,
requests batched per ``sendmsg``, every failure answered with its request's
sequence number, so it is tied to its operation.  pyroute2 stays the project's netlink
library for addresses, links and neighbours (lvskit.vip).
"""
import errno
import functools
import operator
import os
import socket
import struct
import sys
from itertools import count

from .errors import Fatal, NOT_INSTALLED, PERMISSION
from .model import AF_INET, AF_INET6, F_HASHED, Dest, Service, ServiceKey
from . import plan as P

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1

# uapi/linux/ip_vs.h
(CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE,
 CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST,
 CMD_NEW_DAEMON, CMD_DEL_DAEMON, CMD_GET_DAEMON) = range(1, 12)
CMD_ATTR_SERVICE, CMD_ATTR_DEST, CMD_ATTR_DAEMON = 1, 2, 3
(SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK, SVC_SCHED_NAME, SVC_FLAGS,
 SVC_TIMEOUT, SVC_NETMASK) = range(1, 10)
(DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH,
 DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS, DEST_STATS, DEST_ADDR_FAMILY) = range(1, 12)
(DAEMON_STATE, DAEMON_MCAST_IFN, DAEMON_SYNC_ID) = range(1, 4)
DAEMON_MASTER, DAEMON_BACKUP = 1, 2
FWD_MASK = 0x7

_OP_CMD = {P.ADD_SERVICE: CMD_NEW_SERVICE, P.EDIT_SERVICE: CMD_SET_SERVICE,
           P.DEL_SERVICE: CMD_DEL_SERVICE, P.ADD_DEST: CMD_NEW_DEST,
           P.EDIT_DEST: CMD_SET_DEST, P.DEL_DEST: CMD_DEL_DEST}
BATCH = 128     # requests per sendmsg; the answers to all of them failing fit the receive buffer

_HDR = struct.Struct("=IHHII")      # nlmsghdr
_GENL = struct.Struct("=BBH")       # genlmsghdr
_REQUEST = struct.Struct("=IHHIIBBH")   # both, in one pack: a cold load sends 11,000
_NLA = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")        # nlmsgerr.error: 0 in an ack, -errno in an error


def _attr(kind, payload):
    n = 4 + len(payload)
    return _NLA.pack(n, kind) + payload + b"\0" * (-n % 4)


def _nest(kind, payload):
    return _attr(kind | NLA_F_NESTED, payload)


def _attrs(buf, start=0, end=None):
    """{type: bytes} of the attributes in buf[start:end] (nested flag stripped)."""
    out, off, end = {}, start, len(buf) if end is None else end
    while off + 4 <= end:
        n, kind = _NLA.unpack_from(buf, off)
        if n < 4 or off + n > end:     # malformed or truncated: stop there
            break
        out[kind & 0x3FFF] = buf[off + 4:off + n]
        off += (n + 3) & ~3
    return out


def _u16(b):
    return struct.unpack("=H", b[:2])[0]


def _u32(b):
    return struct.unpack("=I", b[:4])[0]


@functools.lru_cache(maxsize=65536)
def _pack_addr(af, text):
    raw = socket.inet_pton(af, text)
    return raw + b"\0" * (16 - len(raw))


@functools.lru_cache(maxsize=65536)
def _unpack_addr(af, raw):
    return socket.inet_ntop(af, bytes(raw[:4] if af == AF_INET else raw[:16]))  # raw: hashable bytes


@functools.lru_cache(maxsize=4096)
def _service_id(key):
    """The attributes that name a service (its identity); cached: every dest op repeats them."""
    a = _attr(SVC_AF, struct.pack("=H", key.af))
    if key.fwmark:
        return a + _attr(SVC_FWMARK, struct.pack("=I", key.fwmark))
    return (a + _attr(SVC_PROTOCOL, struct.pack("=H", key.protocol))
            + _attr(SVC_ADDR, _pack_addr(key.af, key.address))
            + _attr(SVC_PORT, struct.pack(">H", key.port)))


# FLAGS (flags, mask), TIMEOUT, NETMASK in one pack: a cold load adds 1,000 services
_SERVICE_TAIL = struct.Struct("=HHII HHI HH4s")


def _service_full(svc):
    if svc.key.af == AF_INET6:
        netmask = struct.pack("=I", svc.netmask)
    else:   # an IPv4 mask travels in network byte order
        netmask = struct.pack(">I", (0xFFFFFFFF << (32 - svc.netmask)) & 0xFFFFFFFF)
    return (_service_id(svc.key)
            + _attr(SVC_SCHED_NAME, svc.scheduler.encode() + b"\0")
            + _SERVICE_TAIL.pack(12, SVC_FLAGS, svc.flags, 0xFFFFFFFF, 8, SVC_TIMEOUT, svc.timeout,
                                 8, SVC_NETMASK, netmask))


# A full destination, nested attribute header included, in one pack (a cold
# load encodes ten thousand of them): ADDR, PORT (network order), FWD_METHOD,
# WEIGHT, U_THRESH, L_THRESH, ADDR_FAMILY.
_DEST_FULL = struct.Struct("=HH HH16s HH2s2x HHI HHi HHI HHI HHH2x")


def _dest_full(dest):
    """A real server's whole nested attribute, its family from its address."""
    address = dest[0]
    af = AF_INET6 if ":" in address else AF_INET
    return _DEST_FULL.pack(_DEST_FULL.size, CMD_ATTR_DEST | NLA_F_NESTED,
                           20, DEST_ADDR, socket.inet_pton(af, address),     # "16s" pads it
                           6, DEST_PORT, dest[1].to_bytes(2, "big"),
                           8, DEST_FWD_METHOD, dest[2], 8, DEST_WEIGHT, dest[3],
                           8, DEST_U_THRESH, dest[4], 8, DEST_L_THRESH, dest[5],
                           6, DEST_ADDR_FAMILY, af)


# The nested identity of an address+port service in one pack (a read asks for
# the real servers of each of 1,000 services): the nest's header, then AF,
# PROTOCOL, ADDR (16 bytes, "16s" pads an IPv4 one), PORT (network order).
_SERVICE_NEST = struct.Struct("=HH HHH2x HHH2x HH16s HH2s2x")


@functools.lru_cache(maxsize=4096)
def _service_nest(key):
    """The nested service identity every real-server operation starts with."""
    if key.fwmark:
        return _nest(CMD_ATTR_SERVICE, _service_id(key))
    return _SERVICE_NEST.pack(_SERVICE_NEST.size, CMD_ATTR_SERVICE | NLA_F_NESTED,
                              6, SVC_AF, key.af, 6, SVC_PROTOCOL, key.protocol,
                              20, SVC_ADDR, socket.inet_pton(key.af, key.address),
                              6, SVC_PORT, key.port.to_bytes(2, "big"))


def encode_op(op):
    """(command, attributes) of one planned operation."""
    kind, svc, dest = op
    cmd = _OP_CMD[kind]
    if kind == P.DEL_SERVICE:
        return cmd, _service_nest(svc.key)
    if kind in (P.ADD_SERVICE, P.EDIT_SERVICE):
        return cmd, _nest(CMD_ATTR_SERVICE, _service_full(svc))
    if kind == P.DEL_DEST:
        daf = AF_INET6 if ":" in dest.address else AF_INET
        return cmd, _service_nest(svc.key) + _nest(
            CMD_ATTR_DEST, _attr(DEST_ADDR, _pack_addr(daf, dest.address))
            + _attr(DEST_PORT, struct.pack(">H", dest.port))
            + _attr(DEST_ADDR_FAMILY, struct.pack("=H", daf)))
    return cmd, _service_nest(svc.key) + _dest_full(dest)


def encode_ops(ops):
    """[encode_op(op) for op in ops], the real servers' additions and edits inline.

    A cold load is 10,000 of them, mostly in runs of one service: its
    identity is looked up once a run (11,000 operations: 18 -> 11 ms on the
    test host).
    """
    out, last, nest = [], None, b""
    add, dest_ops, cmds = out.append, (P.ADD_DEST, P.EDIT_DEST), _OP_CMD
    for op in ops:
        kind, svc, dest = op
        if kind in dest_ops:
            if svc is not last:
                last, nest = svc, _service_nest(svc.key)
            add((cmds[kind], nest + _dest_full(dest)))
        else:
            add(encode_op(op))
    return out


def decode_service(a):
    """A Service from the attributes of an IPVS_CMD_ATTR_SERVICE."""
    af = _u16(a[SVC_AF])
    if SVC_FWMARK in a:
        key = ServiceKey.fw(af, _u32(a[SVC_FWMARK]))
    else:
        key = ServiceKey(af, _u16(a[SVC_PROTOCOL]), _unpack_addr(af, bytes(a[SVC_ADDR])),
                         struct.unpack(">H", a[SVC_PORT][:2])[0])
    netmask = _u32(a.get(SVC_NETMASK, b"\0\0\0\0"))
    if af == AF_INET:
        netmask = bin(struct.unpack(">I", a.get(SVC_NETMASK, b"\xff\xff\xff\xff")[:4])[0]).count("1")
    flags = struct.unpack("=II", a[SVC_FLAGS][:8])[0] & ~F_HASHED if SVC_FLAGS in a else 0
    sched = bytes(a.get(SVC_SCHED_NAME, b"")).split(b"\0")[0].decode()
    return Service(key, sched, flags, _u32(a.get(SVC_TIMEOUT, b"\0" * 4)), netmask)


def decode_dest(svc_af, a):
    af = _u16(a[DEST_ADDR_FAMILY]) if DEST_ADDR_FAMILY in a else svc_af

    def u32(kind):
        return _u32(a[kind]) if kind in a else 0
    return Dest(_unpack_addr(af, bytes(a[DEST_ADDR])), struct.unpack(">H", a[DEST_PORT][:2])[0],
                u32(DEST_FWD_METHOD) & FWD_MASK, struct.unpack("=i", a[DEST_WEIGHT][:4])[0],
                u32(DEST_U_THRESH), u32(DEST_L_THRESH),
                u32(DEST_ACTIVE_CONNS), u32(DEST_INACT_CONNS), u32(DEST_PERSIST_CONNS))


# a Dest in one C call, its address in another: 10,000 per read
_new, _ntohs, _ntop = tuple.__new__, socket.ntohs, socket.inet_ntop


def _shape(payload, nest, codes, strings=()):
    """What one reply teaches about its shape: (format pieces, header indexes, {type: value index}).

    payload: a reply after its genl header, one nested attribute of type
    nest.  Its attributes become struct pieces in order: "HH" for each
    header, then the value's code from codes ({type: code}; a type in
    strings is a string of its own length) or padding for a value we do
    not read.  None when the reply is malformed (an attribute longer than
    the message), holds a type twice, or a value of a known type has
    another size: the generic walk (_attrs) copes with those.
    """
    if len(payload) < 4:
        return None
    n, kind = _NLA.unpack_from(payload, 0)
    if kind & 0x3FFF != nest or not 4 <= n <= len(payload):
        return None
    pieces, heads, fields, idx, off = ["=4x"], [], {}, 0, 4
    while off + 4 <= n:
        alen, akind = _NLA.unpack_from(payload, off)
        akind &= 0x3FFF
        if alen < 4 or off + alen > n or akind in fields:
            return None
        pieces.append("HH")
        heads += [idx, idx + 1]
        idx += 2
        plen, pad = alen - 4, (-alen) % 4
        code = f"{plen}s" if akind in strings else codes.get(akind)
        if code is None:
            pieces.append(f"{plen + pad}x")
        elif struct.calcsize("=" + code) != plen:
            return None
        else:
            pieces.append(code + (f"{pad}x" if pad else ""))
            fields[akind] = idx
            idx += 1
        off += alen + pad
    if struct.calcsize("".join(pieces)) > len(payload):     # a last attribute's padding beyond it
        return None
    return pieces, heads, fields


class DestLayout:
    """Decodes GET_DEST replies with one struct call when they share a learnt layout.

    The kernel writes a destination's attributes in a fixed order and size
    (ip_vs_genl_fill_dest), so after one generic walk the rest of a dump is
    unpacked at known offsets: the attribute headers come out of the same
    call and are compared with the learnt ones, and any message that differs
    falls back to the generic walk.  Reading 10,000 real servers back is
    most of a no-op run, so this is where the time goes.
    """
    _CODES = {DEST_ADDR: "16s", DEST_PORT: "H", DEST_FWD_METHOD: "I", DEST_WEIGHT: "i",
              DEST_U_THRESH: "I", DEST_L_THRESH: "I", DEST_ACTIVE_CONNS: "I",
              DEST_INACT_CONNS: "I", DEST_PERSIST_CONNS: "I", DEST_ADDR_FAMILY: "H"}
    _ORDER = (DEST_ADDR_FAMILY, DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH,
              DEST_L_THRESH, DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS)

    def __init__(self):
        self.layout = None      # (size, Struct, header getter, headers, field getter, order)

    def _learn(self, payload):
        shape = _shape(payload, CMD_ATTR_DEST, self._CODES)
        if shape is None or set(shape[2]) != set(self._CODES):     # an older kernel: walk each one
            return None
        pieces, heads, at = shape
        st = struct.Struct("".join(pieces))
        head = operator.itemgetter(*heads)
        vals = st.unpack_from(payload, 0)
        get = operator.itemgetter(*(at[k] for k in self._ORDER))
        # Whole netlink messages of this shape, many at once: the same format
        # with the nlmsghdr in front (length, type, sequence number) and the
        # attribute headers skipped, for they were checked above.
        whole = None
        if len(payload) % 4 == 0:
            lean = "".join("4x" if part == "HH" else part for part in pieces[1:])
            values = sorted(at.values())      # where each value sits among the unpacked fields
            whole = (struct.Struct("=IHxxI4x4x4x" + lean),
                     operator.itemgetter(*(3 + values.index(at[k]) for k in self._ORDER)))
        return (len(payload), st, head, head(vals), get, whole)

    def run(self, data, off, end, family, seq, dests):
        """Decode the run of dest messages of the learnt shape at data[off:end] into dests.

        One iter_unpack call over as many whole messages as fit.  The first
        must carry the learnt attribute headers; each must be of the learnt
        size and carry our family and sequence number, and the first that
        does not (NLMSG_DONE, an error, another shape) ends the run.  The
        kernel writes every destination with the same attributes
        (ip_vs_genl_fill_dest), so one of the learnt size is of the learnt
        shape.  Returns the offset after the run (off itself when none
        matched).
        """
        lay = self.layout
        if lay is None or lay[5] is None:
            return off
        whole, get = lay[5]
        size = whole.size
        count = (end - off) // size
        if not count or lay[2](lay[1].unpack_from(data, off + _HDR.size + _GENL.size)) != lay[3]:
            return off
        for vals in whole.iter_unpack(data[off:off + count * size]):
            if vals[0] != size or vals[1] != family or vals[2] != seq:
                break
            af, addr, port, fwd, weight, uth, lth, active, inactive, persist = get(vals)
            address = _ntop(af, addr[:4] if af == AF_INET else addr)
            port = _ntohs(port)
            dests[address, port] = _new(Dest, (address, port, fwd & FWD_MASK, weight, uth, lth,
                                               active, inactive, persist))
            off += size
        return off

    def decode(self, svc_af, payload):
        lay = self.layout
        if lay is None or len(payload) != lay[0]:
            lay = self.layout = self._learn(payload)
        if lay is not None:
            vals = lay[1].unpack_from(payload, 0)
            if lay[2](vals) == lay[3]:
                af, addr, port, fwd, weight, uth, lth, active, inactive, persist = lay[4](vals)
                return _new(Dest, (_unpack_addr(af, addr), _ntohs(port), fwd & FWD_MASK,
                                   weight, uth, lth, active, inactive, persist))
        return decode_dest(svc_af, _attrs(_attrs(payload)[CMD_ATTR_DEST]))


class ServiceLayout:
    """Decodes GET_SERVICE replies with one struct call per learnt shape.

    As for real servers (DestLayout), ip_vs_genl_fill_service writes a
    service's attributes in a fixed order; the shape changes only with the
    scheduler's name (its length), a firewall mark in place of protocol,
    address and port, or a persistence engine.  Shapes are kept by message
    length: a message is decoded by the shape of its length whose attribute
    headers (unpacked by the same call) are its own, else a shape is learnt
    from it ("rr" and "wlc" are two shapes of one length: the header holds
    the name's length).  Past MAX_SHAPES of one length, or when no shape can
    be learnt, a message is walked the generic way (decode_service).  A read
    decodes 1,000 services.
    """
    MAX_SHAPES = 8
    _CODES = {SVC_AF: "H", SVC_PROTOCOL: "H", SVC_ADDR: "16s", SVC_PORT: "2s", SVC_FWMARK: "I",
              SVC_FLAGS: "I4x", SVC_TIMEOUT: "I", SVC_NETMASK: "4s"}

    def __init__(self):
        self.shapes = {}    # message length -> [(Struct, header getter, headers, value getter, fwmark?)]

    def _learn(self, body):
        shape = _shape(body, CMD_ATTR_SERVICE, self._CODES, (SVC_SCHED_NAME,))
        if shape is None:
            return None
        pieces, heads, fields = shape
        fw = SVC_FWMARK in fields
        order = ((SVC_AF, SVC_FWMARK) if fw else (SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT)) + (
            SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK)
        if not all(k in fields for k in order):
            return None
        st = struct.Struct("".join(pieces))
        head = operator.itemgetter(*heads)
        return st, head, head(st.unpack_from(body)), operator.itemgetter(*(fields[k] for k in order)), fw

    def decode(self, body):
        """A Service from a reply's bytes after its genl header."""
        shapes = self.shapes.setdefault(len(body), [])
        for st, head, heads, get, fw in shapes:
            vals = st.unpack_from(body)
            if head(vals) == heads:
                break
        else:
            shape = self._learn(body) if len(shapes) < self.MAX_SHAPES else None
            if shape is None:
                return decode_service(_attrs(_attrs(body)[CMD_ATTR_SERVICE]))
            shapes.append(shape)
            st, head, heads, get, fw = shape
            vals = st.unpack_from(body)
        if fw:
            af, fwmark, sched, flags, timeout, netmask = get(vals)
            key = _new(ServiceKey, (af, 0, "", 0, fwmark))
        else:
            af, proto, addr, port, sched, flags, timeout, netmask = get(vals)
            key = _new(ServiceKey, (af, proto, _ntop(af, addr[:4] if af == AF_INET else addr),
                                    int.from_bytes(port, "big"), 0))
        if af == AF_INET:   # a mask, in network order
            netmask = bin(int.from_bytes(netmask, "big")).count("1")
        else:
            netmask = int.from_bytes(netmask, sys.byteorder)
        return _new(Service, (key, _sched_name(sched), flags & ~F_HASHED, timeout, netmask, {}))


@functools.lru_cache(maxsize=64)
def _sched_name(raw):
    return raw.split(b"\0")[0].decode()


def _explain(op, err):
    """One line a sysadmin understands for a failed operation."""
    if op.kind in (P.ADD_SERVICE, P.EDIT_SERVICE) and err == errno.ENOENT:
        return f"scheduler {op.service.scheduler!r} is not available in this kernel (ip_vs_{op.service.scheduler})"
    if err == errno.ESRCH:
        return "no such service in the kernel"
    if op.kind in (P.EDIT_DEST, P.DEL_DEST) and err == errno.ENOENT:
        return "no such real server in the kernel"
    if err == errno.EEXIST:
        return "already in the kernel"
    return os.strerror(err)


class Kernel:
    """The live IPVS table of the current network namespace."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except OSError as e:
            raise Fatal(f"cannot open a netlink socket: {e.strerror}", NOT_INSTALLED) from None
        self.sock.bind((0, 0))
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self._buf = bytearray(1 << 18)
        self._view = memoryview(self._buf)
        self.seq = 0
        self.writes = 0     # requests that changed (or tried to change) the table
        self.family = self._family("IPVS")

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the wire --------------------------------------------------------------
    def _message(self, family, cmd, attrs, flags):
        self.seq += 1
        return self.seq, _REQUEST.pack(_REQUEST.size + len(attrs), family, flags, self.seq, 0,
                                       cmd, 1, 0) + attrs

    def _replies(self, flags=0):
        """Yield (type, seq, payload) of every message in the next datagram."""
        n = self.sock.recv_into(self._buf, 0, flags)
        data = self._view[:n].tobytes()
        off = 0
        while off + _HDR.size <= len(data):
            n, kind, flags, seq, _ = _HDR.unpack_from(data, off)
            if n < _HDR.size:
                break
            yield kind, seq, memoryview(data)[off + _HDR.size:off + n]
            off += (n + 3) & ~3

    @staticmethod
    def _error(payload):
        """(errno, extended-ack text) of an NLMSG_ERROR payload."""
        err = -struct.unpack("=i", payload[:4])[0]
        text = ""
        # with NETLINK_CAP_ACK the echoed request is just its header (16 bytes)
        tlv = _attrs(payload, 4 + _HDR.size)
        if NLMSGERR_ATTR_MSG in tlv:
            text = bytes(tlv[NLMSGERR_ATTR_MSG]).split(b"\0")[0].decode(errors="replace")
        return err, text

    def _family(self, name):
        """The generic-netlink id of a family; loads ip_vs once if it is missing."""
        family = self._resolve(name)
        if family is None and _load_module("ip_vs"):
            family = self._resolve(name)
        if family is None:
            raise Fatal("this kernel has no IPVS (modprobe ip_vs failed, or CONFIG_IP_VS is off)",
                        NOT_INSTALLED)
        return family

    def _resolve(self, name):
        seq, msg = self._message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                                 _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"),
                                 NLM_F_REQUEST | NLM_F_ACK)
        self.sock.send(msg)
        family = None
        while True:
            for kind, rseq, payload in self._replies():
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:     # the ack (or the error) ends the answer
                    return family
                family = _u16(_attrs(payload, _GENL.size)[CTRL_ATTR_FAMILY_ID])

    def _dump(self, cmd, attrs=b"", each=None, run=None):
        """Send a dump request and take its replies: [attribute dict] of each, or each(body).

        body: a reply's bytes after its genl header.  run(data, off, end,
        family, seq) -> offset: an optional fast path that takes a run of
        replies straight from the receive buffer (DestLayout.run); whatever
        it leaves is taken one message at a time.
        """
        seq, msg = self._message(self.family, cmd, attrs, NLM_F_REQUEST | NLM_F_DUMP)
        self.sock.send(msg)
        out = []
        each = each or (lambda body: out.append(_attrs(body)))
        while True:
            n = self.sock.recv_into(self._buf)
            data, off = self._view, 0
            while off + _HDR.size <= n:
                if run is not None:
                    off = run(data, off, n, self.family, seq)
                    if off + _HDR.size > n:
                        break
                length, kind, _, rseq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    break
                if rseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        self._dump_error(data[off + _HDR.size:off + length].tobytes())
                    each(data[off + _HDR.size + _GENL.size:off + length].tobytes())
                off += (length + 3) & ~3

    def _dump_error(self, payload):
        err, text = self._error(payload)
        if err == errno.EPERM:
            raise Fatal("not allowed to read the IPVS table (run as root)", PERMISSION)
        raise Fatal(f"reading the IPVS table: {text or os.strerror(err)}")

    def _requests(self, items):
        """Send [(cmd, attrs)] batched; return {index: (errno, text)} of failures.

        No acknowledgement is asked for.  The kernel handles a generic
        netlink request inside the sendmsg() that carries it and always
        answers a failure, with an NLMSG_ERROR of the request's sequence
        number; so when a batch is sent, the answers to its failures are
        already queued, and are read without waiting.  Asking for an ack of
        each success too cost 0.21 s of 0.49 s for a cold load's 11,000
        requests in the lab guest (bench/README.md, session 4).
        """
        failed, pack, size, family = {}, _REQUEST.pack, _REQUEST.size, self.family
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            first = self.seq + 1        # the chunk's sequence numbers: first, first + 1, ...
            self.seq += len(chunk)      # headers packed here as _message does, without its call each
            self.sock.send(b"".join([pack(size + len(attrs), family, NLM_F_REQUEST, seq, 0, cmd, 1, 0)
                                     + attrs for seq, (cmd, attrs) in zip(count(first), chunk)]))
            self.writes += len(chunk)
            while True:
                try:
                    answers = list(self._replies(socket.MSG_DONTWAIT))
                except BlockingIOError:
                    break
                for kind, seq, payload in answers:
                    if kind == NLMSG_ERROR and first <= seq <= self.seq:
                        if _ERRNO.unpack_from(payload)[0]:     # 0 would be an ack: nothing failed
                            failed[start + seq - first] = self._error(payload)
        return failed

    # --- the table ---------------------------------------------------------------
    def read(self, keys=None):
        """{ServiceKey: Service with its dests}: every service, or those in keys."""
        table, services = {}, ServiceLayout()

        def each(body):
            svc = services.decode(body)
            if keys is None or svc.key in keys:
                table[svc.key] = svc
        self._dump(CMD_GET_SERVICE, each=each)
        layout = DestLayout()
        for key, svc in table.items():
            self._dests(key, layout, svc.dests)
        return table

    def _dests(self, key, layout, dests):
        """Fill dests with one service's real servers: its GET_DEST dump.

        Reading 10,000 real servers back is most of a no-op run, so the
        replies are decoded in runs (DestLayout.run) straight from the
        receive buffer; what does not fit the learnt shape is decoded one
        by one.
        """
        def each(body):
            dest = layout.decode(key.af, body)
            dests[dest[0], dest[1]] = dest
        self._dump(CMD_GET_DEST, _service_nest(key), each,
                   lambda data, off, end, family, seq: layout.run(data, off, end, family, seq, dests))

    def execute(self, ops):
        """Apply operations in order; return [(op, message)] for those that failed."""
        failed = self._requests(encode_ops(ops))
        return [(ops[i], text or _explain(ops[i], err)) for i, (err, text) in sorted(failed.items())]

    # --- connection synchronisation (for takeover) ---------------------------------
    def sync_daemons(self):
        """{"master"|"backup": (interface, syncid)} of the running sync daemons."""
        out = {}
        for msg in self._dump(CMD_GET_DAEMON):
            a = _attrs(msg[CMD_ATTR_DAEMON])
            state = {DAEMON_MASTER: "master", DAEMON_BACKUP: "backup"}.get(_u32(a[DAEMON_STATE]))
            ifn = bytes(a.get(DAEMON_MCAST_IFN, b"")).split(b"\0")[0].decode()
            out[state] = (ifn, _u32(a.get(DAEMON_SYNC_ID, b"\0" * 4)))
        return out

    def _daemon(self, cmd, state, interface="", syncid=0):
        attrs = _attr(DAEMON_STATE, struct.pack("=I", state))
        if cmd == CMD_NEW_DAEMON:
            attrs += (_attr(DAEMON_MCAST_IFN, interface.encode() + b"\0")
                      + _attr(DAEMON_SYNC_ID, struct.pack("=I", syncid)))
        failed = self._requests([(cmd, _nest(CMD_ATTR_DAEMON, attrs))])
        if failed:
            err, text = failed[0]
            raise Fatal(f"IPVS sync daemon: {text or os.strerror(err)}")

    def start_sync_daemon(self, role, interface, syncid=0):
        self._daemon(CMD_NEW_DAEMON, DAEMON_MASTER if role == "master" else DAEMON_BACKUP,
                     interface, syncid)

    def stop_sync_daemon(self, role):
        self._daemon(CMD_DEL_DAEMON, DAEMON_MASTER if role == "master" else DAEMON_BACKUP)


def _load_module(name):
    """modprobe a kernel module as ipvsadm does; True when it may have worked."""
    for path in ("/sbin/modprobe", "/usr/sbin/modprobe"):
        if os.access(path, os.X_OK):
            from . import run
            return run.quiet([path, "-q", "--", name]) == 0
    return False
