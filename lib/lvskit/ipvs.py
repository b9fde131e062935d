"""The kernel's IPVS table over generic netlink: the one module that talks to it.

Why a codec of our own and not pyroute2's IPVS layer: pyroute2's generic
message classes make loading and reading back a table of thousands of real
servers many times slower, its import is heavy for a
script that cron starts, and its dump misreports the forwarding method.  The
IPVS message set is small and stable (uapi linux/ip_vs.h), so it is declared
here once, attribute by attribute (as Seesaw's ipvs package does), and both
encoding and decoding go through that declaration.  Where a big table
spends its time, two forms of it go faster, held to it by the tests: a
whole real server packed in one struct call (_dest_whole), and real-server
replies read back in runs (DestRuns).  One socket; requests
batched per ``sendmsg``, every failure answered with its request's sequence
number, so it is tied to its operation.  pyroute2 stays the project's netlink
library for addresses, links and neighbours (lvskit.vip).
"""
import errno
import functools
import operator
import os
import socket
import struct

from .errors import Fatal, NOT_INSTALLED, PERMISSION
from .model import AF_INET, AF_INET6, F_HASHED, Dest, Service, ServiceKey
from . import plan as P

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11

# uapi/linux/ip_vs.h
(CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE,
 CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST,
 CMD_NEW_DAEMON, CMD_DEL_DAEMON, CMD_GET_DAEMON, CMD_SET_CONFIG, CMD_GET_CONFIG) = range(1, 14)
DAEMON_MASTER, DAEMON_BACKUP = 1, 2
FWD_MASK = 0x7

_OP_CMD = {P.ADD_SERVICE: CMD_NEW_SERVICE, P.EDIT_SERVICE: CMD_SET_SERVICE,
           P.DEL_SERVICE: CMD_DEL_SERVICE, P.ADD_DEST: CMD_NEW_DEST,
           P.EDIT_DEST: CMD_SET_DEST, P.DEL_DEST: CMD_DEL_DEST}
BATCH = 128     # requests per sendmsg; the answers to all of them failing fit the receive buffer

_HDR = struct.Struct("=IHHII")          # nlmsghdr
_GENL = struct.Struct("=BBH")           # genlmsghdr
_REQUEST = struct.Struct("=IHHIIBBH")   # both
_NLA = struct.Struct("=HH")             # nlattr: length, type
_ERRNO = struct.Struct("=i")            # nlmsgerr.error: 0 in an ack, -errno in an error


# --- attribute types: how one value is written ------------------------------------
class _Fixed:
    """A value of a fixed size, packed by struct; code: its struct code in native order."""

    nested = 0

    def __init__(self, fmt, code=None):
        self.st = struct.Struct(fmt)
        self.code = code or fmt.lstrip("=")

    def pack(self, value):
        return self.st.pack(value)


class _Flags(_Fixed):
    """struct ip_vs_flags: the flags, and the mask of those to set (all of them)."""

    def __init__(self):
        super().__init__("=II")

    def pack(self, value):
        return self.st.pack(value, 0xFFFFFFFF)


class _String:
    """A NUL-terminated string."""

    st, nested = None, 0

    def pack(self, value):
        return value.encode() + b"\0"

    def unpack(self, buf, start, end):
        return bytes(buf[start:end]).split(b"\0")[0].decode(errors="replace")


class _Nested(_String):
    """A nested attribute set: its value is a dict of the set's names."""

    nested = NLA_F_NESTED

    def __init__(self, attrs):
        self.attrs = attrs

    def pack(self, value):
        return self.attrs.pack(**value)

    def unpack(self, buf, start, end):
        return self.attrs.unpack(buf, start, end)


U16, U32, S32 = _Fixed("=H"), _Fixed("=I"), _Fixed("=i")
BE16 = _Fixed(">H", "H")    # network order: read natively in a run of replies (DestRuns), then ntohs
ADDR = _Fixed("16s")    # union nf_inet_addr: an IPv4 address in its first 4 bytes
MASK = _Fixed("4s")     # an IPv4 mask in network order, or an IPv6 prefix length
STRING, FLAGS = _String(), _Flags()


class Attrs:
    """A set of netlink attributes, declared once: name=(type number, value type).

    pack(name=value, ...) writes the attributes given, in that order;
    unpack(buf, start, end) reads every declared attribute by its type
    number into {name: value} and skips the others (statistics, attributes
    of newer kernels).  A malformed attribute (shorter than its value type,
    or longer than what holds it) ends the walk.
    """

    def __init__(self, **fields):
        self.fields = fields
        # by type number: (name, struct's unpack_from or None, its size, the value type)
        self.types = {number: (name, kind.st.unpack_from, kind.st.size, kind) if kind.st else
                      (name, None, 0, kind) for name, (number, kind) in fields.items()}

    def pack(self, **values):
        out = []
        for name, value in values.items():
            number, kind = self.fields[name]
            payload = kind.pack(value)
            n = 4 + len(payload)
            out.append(_NLA.pack(n, number | kind.nested) + payload + b"\0" * (-n % 4))
        return b"".join(out)

    def unpack(self, buf, start=0, end=None):
        out, off, end = {}, start, len(buf) if end is None else end
        types, header = self.types, _NLA.unpack_from
        while off + 4 <= end:
            n, number = header(buf, off)
            if n < 4 or off + n > end:
                break
            field = types.get(number & 0x3FFF)
            if field is not None:
                name, unpack_from, size, kind = field
                if unpack_from is None:
                    out[name] = kind.unpack(buf, off + 4, off + n)
                elif n - 4 < size:
                    break
                else:
                    out[name] = unpack_from(buf, off + 4)[0]
            off += (n + 3) & ~3
        return out


SERVICE = Attrs(af=(1, U16), protocol=(2, U16), address=(3, ADDR), port=(4, BE16), fwmark=(5, U32),
                scheduler=(6, STRING), flags=(7, FLAGS), timeout=(8, U32), netmask=(9, MASK))
DEST = Attrs(address=(1, ADDR), port=(2, BE16), forward=(3, U32), weight=(4, S32), u_threshold=(5, U32),
             l_threshold=(6, U32), active=(7, U32), inactive=(8, U32), persistent=(9, U32),
             family=(11, U16))
DAEMON = Attrs(state=(1, U32), interface=(2, STRING), syncid=(3, U32))
MESSAGE = Attrs(service=(1, _Nested(SERVICE)), dest=(2, _Nested(DEST)), daemon=(3, _Nested(DAEMON)),
                tcp=(4, U32), tcpfin=(5, U32), udp=(6, U32))     # the timeouts of ipvsadm --set, seconds
CTRL = Attrs(family_id=(1, U16), family_name=(2, STRING))
ERROR = Attrs(msg=(1, STRING))      # NLMSGERR_ATTR_MSG: the extended ack's text


# --- records <-> attributes ---------------------------------------------------------
def _raw_addr(af, text):
    return socket.inet_pton(af, text).ljust(16, b"\0")


def _text_addr(af, raw):
    return socket.inet_ntop(af, raw[:4] if af == AF_INET else raw)


def _key_attrs(key):
    """The attributes that name a service (its identity)."""
    if key.fwmark:
        return {"af": key.af, "fwmark": key.fwmark}
    return {"af": key.af, "protocol": key.protocol, "address": _raw_addr(key.af, key.address),
            "port": key.port}


def _service_attrs(svc):
    if svc.key.af == AF_INET6:
        netmask = struct.pack("=I", svc.netmask)
    else:
        netmask = ((0xFFFFFFFF << (32 - svc.netmask)) & 0xFFFFFFFF).to_bytes(4, "big")
    return dict(_key_attrs(svc.key), scheduler=svc.scheduler, flags=svc.flags, timeout=svc.timeout,
                netmask=netmask)


def _dest_attrs(dest, whole=True):
    """A real server's attributes: all that can be set, or (whole=False) its identity."""
    af = AF_INET6 if ":" in dest.address else AF_INET
    a = {"address": _raw_addr(af, dest.address), "port": dest.port}
    if whole:
        a.update(forward=dest.forward, weight=dest.weight, u_threshold=dest.u_threshold,
                 l_threshold=dest.l_threshold)
    a["family"] = af
    return a


def service_from(a):
    """A Service (no real servers) from a decoded service attribute set."""
    af = a["af"]
    if a.get("fwmark"):
        key = ServiceKey.fw(af, a["fwmark"])
    else:
        key = ServiceKey(af, a["protocol"], _text_addr(af, a["address"]), a["port"])
    if af == AF_INET:
        netmask = bin(int.from_bytes(a.get("netmask", b"\xff" * 4), "big")).count("1")
    else:
        netmask = struct.unpack("=I", a.get("netmask", b"\0" * 4))[0]
    return Service(key, a.get("scheduler", ""), a.get("flags", 0) & ~F_HASHED, a.get("timeout", 0), netmask)


def dest_from(svc_af, a):
    """A Dest from a decoded real-server attribute set; its family is the service's unless given."""
    af = a.get("family", svc_af)
    return Dest(_text_addr(af, a["address"]), a["port"], a.get("forward", 0) & FWD_MASK, a["weight"],
                a.get("u_threshold", 0), a.get("l_threshold", 0),
                a.get("active", 0), a.get("inactive", 0), a.get("persistent", 0))


@functools.lru_cache(maxsize=4096)
def _service_ident(key):
    """The nested service identity that every real-server request starts with."""
    return MESSAGE.pack(service=_key_attrs(key))


# A real server's whole nested attribute in one struct call, for a load writes ten
# thousand of them: MESSAGE.pack(dest=_dest_attrs(dest)) byte for byte (tested).  After
# the nest's header: address (16 bytes, an IPv4 one padded), port (network order, by
# htons), forward, weight, thresholds, family; each after its attribute header.
_DEST_WHOLE = struct.Struct("=HH HH16s HHH2x HHI HHi HHI HHI HHH2x")
_NEST_DEST = MESSAGE.fields["dest"][0] | NLA_F_NESTED
_ADDR, _PORT, _FORWARD, _WEIGHT, _U_THRESH, _L_THRESH, _FAMILY = (DEST.fields[name][0] for name in (
    "address", "port", "forward", "weight", "u_threshold", "l_threshold", "family"))


def _dest_whole(dest):
    address = dest.address
    af = AF_INET6 if ":" in address else AF_INET
    return _DEST_WHOLE.pack(_DEST_WHOLE.size, _NEST_DEST, 20, _ADDR, socket.inet_pton(af, address),
                            6, _PORT, socket.htons(dest.port), 8, _FORWARD, dest.forward,
                            8, _WEIGHT, dest.weight, 8, _U_THRESH, dest.u_threshold,
                            8, _L_THRESH, dest.l_threshold, 6, _FAMILY, af)


def encode_op(op):
    """(command, attributes) of one planned operation."""
    kind, svc, dest = op
    cmd = _OP_CMD[kind]
    if kind in (P.ADD_SERVICE, P.EDIT_SERVICE):
        return cmd, MESSAGE.pack(service=_service_attrs(svc))
    if kind == P.DEL_SERVICE:
        return cmd, _service_ident(svc.key)
    if kind == P.DEL_DEST:
        return cmd, _service_ident(svc.key) + MESSAGE.pack(dest=_dest_attrs(dest, False))
    return cmd, _service_ident(svc.key) + _dest_whole(dest)


class DestRuns:
    """Real-server replies decoded a run at a time, by the layout of the first one.

    A read-back of a big table is mostly real-server replies, and the kernel
    writes each with the same attributes in the same order and sizes
    (ip_vs_genl_fill_dest).  So the first reply of a read is walked by type,
    where each DEST value sits in it is kept, and the replies that follow
    are unpacked over as many as the datagram holds by two structs: one
    gives each reply's length, family, sequence number and attribute
    headers, the other its values.  Each must have the first one's length
    and attribute headers, our family and the dump's sequence number; the
    first that does not ends the run and is walked by type (DEST.unpack)
    like any reply.
    """

    _ORDER = ("family", "address", "port", "forward", "weight", "u_threshold", "l_threshold",
              "active", "inactive", "persistent")

    def __init__(self):
        self.layout = None      # (heads Struct, values Struct, the first's headers, value getter)
        self.tried = False

    def _learn(self, data, start, end):
        """The layout of the real-server message at data[start:end], or None."""
        body = start + _HDR.size + _GENL.size
        n, number = _NLA.unpack_from(data, body) if end - body >= 4 else (0, 0)
        if number & 0x3FFF != MESSAGE.fields["dest"][0] or body + n != end or (end - start) % 4:
            return None
        # heads: nlmsghdr's length, type and sequence number, then each attribute's header
        # (length, type), the genl header and the values skipped; values: the DEST values only
        heads, values, at, off = ["=IHxxI4x4xHH"], [f"{body + 4 - start}x"], {}, body + 4
        while off + 4 <= end:
            alen, anum = _NLA.unpack_from(data, off)
            if alen < 4 or off + alen > end:
                return None
            pad = -alen % 4
            name, _, size, kind = DEST.types.get(anum & 0x3FFF, (None, None, 0, None))
            heads.append(f"HH{alen - 4 + pad}x")
            if name in at:
                return None
            if name is None or not isinstance(kind, _Fixed) or alen - 4 != size:
                values.append(f"{alen + pad}x")
            else:
                values.append(f"4x{kind.code}{pad}x")
                at[name] = len(at)
            off += alen + pad
        if set(at) != set(self._ORDER):
            return None
        heads, values = struct.Struct("".join(heads)), struct.Struct("".join(values))
        if heads.size != end - start or values.size != end - start:
            return None
        return heads, values, heads.unpack_from(data, start)[3:], operator.itemgetter(*(at[k] for k in self._ORDER))

    def take(self, data, off, end, family, seq, dests):
        """Decode the run of replies at data[off:end] into dests; the offset after it."""
        if not self.tried and off + _HDR.size <= end:
            length, kind, _, rseq, _ = _HDR.unpack_from(data, off)
            if kind == family and rseq == seq and off + length <= end:
                self.tried, self.layout = True, self._learn(data, off, off + length)
        if self.layout is None:
            return off
        heads, values, first, get = self.layout
        size = heads.size
        count = (end - off) // size
        want = (size, family, seq) + first
        got = list(heads.iter_unpack(data[off:off + count * size]))
        if got != [want] * count:       # the first reply that differs ends the run
            count = next(i for i, head in enumerate(got) if head != want)
        for vals in values.iter_unpack(data[off:off + count * size]):
            af, addr, port, forward, weight, uth, lth, active, inactive, persistent = get(vals)
            address, port = socket.inet_ntop(af, addr[:4] if af == AF_INET else addr), socket.ntohs(port)
            dests[address, port] = Dest(address, port, forward & FWD_MASK, weight, uth, lth,
                                        active, inactive, persistent)
        return off + count * size


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
        """[(type, seq, payload after the nlmsghdr)] of every message in the next datagram."""
        n = self.sock.recv_into(self._buf, 0, flags)
        data = self._view[:n].tobytes()
        out, off = [], 0
        while off + _HDR.size <= n:
            length, kind, _, seq, _ = _HDR.unpack_from(data, off)
            if length < _HDR.size:
                break
            out.append((kind, seq, data[off + _HDR.size:off + length]))
            off += (length + 3) & ~3
        return out

    @staticmethod
    def _error(payload):
        """(errno, extended-ack text) of an NLMSG_ERROR payload."""
        err = -_ERRNO.unpack_from(payload)[0]
        # with NETLINK_CAP_ACK the echoed request is just its header
        return err, ERROR.unpack(payload, _ERRNO.size + _HDR.size).get("msg", "")

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
        seq, msg = self._message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL.pack(family_name=name),
                                 NLM_F_REQUEST | NLM_F_ACK)
        self.sock.send(msg)
        family = None
        while True:
            for kind, rseq, payload in self._replies():
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:     # the ack (or the error) ends the answer
                    return family
                family = CTRL.unpack(payload, _GENL.size).get("family_id")

    def _dump(self, cmd, attrs=b"", run=None):
        """Send a dump request; [{name: value}] of its replies, decoded by MESSAGE.

        run(data, off, end, seq) -> offset: given each reply of ours, takes
        the run of replies that starts there straight from the datagram
        (DestRuns.take); a reply it leaves is decoded here.
        """
        seq, msg = self._message(self.family, cmd, attrs, NLM_F_REQUEST | NLM_F_DUMP)
        self.sock.send(msg)
        out = []
        while True:
            n = self.sock.recv_into(self._buf)
            data, off = self._view, 0
            while off + _HDR.size <= n:
                length, kind, _, rseq, _ = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    break
                if rseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        self._dump_error(data[off + _HDR.size:off + length])
                    if run is not None:
                        after = run(data, off, n, seq)
                        if after != off:
                            off = after
                            continue
                    out.append(MESSAGE.unpack(data, off + _HDR.size + _GENL.size, off + length))
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
        already queued, and are read without waiting.  An ack for each
        success too would double the messages of a load.
        """
        failed = {}
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            first = self.seq + 1        # the chunk's sequence numbers: first, first + 1, ...
            self.sock.send(b"".join(self._message(self.family, cmd, attrs, NLM_F_REQUEST)[1]
                                    for cmd, attrs in chunk))
            self.writes += len(chunk)
            while True:
                try:
                    answers = self._replies(socket.MSG_DONTWAIT)
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
        table = {}
        for reply in self._dump(CMD_GET_SERVICE):
            svc = service_from(reply["service"])
            if keys is None or svc.key in keys:
                table[svc.key] = svc
        runs = DestRuns()
        for key, svc in table.items():
            self.dests(key, runs, svc.dests)
        return table

    def dests(self, key, runs=None, out=None):
        """{(address, port): Dest} of one service's real servers (added to out when given)."""
        out = {} if out is None else out
        runs = runs or DestRuns()
        for reply in self._dump(CMD_GET_DEST, _service_ident(key),
                                lambda data, off, end, seq: runs.take(data, off, end, self.family, seq, out)):
            dest = dest_from(key.af, reply["dest"])
            out[dest.address, dest.port] = dest
        return out

    def execute(self, ops):
        """Apply operations in order; return [(op, message)] for those that failed."""
        failed = self._requests([encode_op(op) for op in ops])
        return [(ops[i], text or _explain(ops[i], err)) for i, (err, text) in sorted(failed.items())]

    # --- the connection timeouts (ipvsadm --set) --------------------------------------
    def timeouts(self):
        """{"tcp", "tcpfin", "udp": seconds}: how long the kernel keeps an established
        TCP, a closing TCP (FIN_WAIT) and a UDP connection entry without traffic."""
        seq, msg = self._message(self.family, CMD_GET_CONFIG, b"", NLM_F_REQUEST | NLM_F_ACK)
        self.sock.send(msg)
        out = {}
        while True:
            for kind, rseq, payload in self._replies():
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:     # the ack (or the error) ends the answer
                    err, text = self._error(payload)
                    if err:
                        raise Fatal(f"reading the IPVS timeouts: {text or os.strerror(err)}")
                    return out
                a = MESSAGE.unpack(payload, _GENL.size)
                out = {name: a.get(name, 0) for name in ("tcp", "tcpfin", "udp")}

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        """ipvsadm --set: a timeout of 0 stays as it is."""
        failed = self._requests([(CMD_SET_CONFIG, MESSAGE.pack(tcp=tcp, tcpfin=tcpfin, udp=udp))])
        if failed:
            err, text = failed[0]
            raise Fatal(f"setting the IPVS timeouts: {text or os.strerror(err)}")

    # --- connection synchronisation (for takeover) ---------------------------------
    def sync_daemons(self):
        """{"master"|"backup": (interface, syncid)} of the running sync daemons."""
        out = {}
        for reply in self._dump(CMD_GET_DAEMON):
            a = reply["daemon"]
            state = {DAEMON_MASTER: "master", DAEMON_BACKUP: "backup"}.get(a["state"])
            out[state] = (a.get("interface", ""), a.get("syncid", 0))
        return out

    def _daemon(self, cmd, state, interface="", syncid=0):
        daemon = {"state": state}
        if cmd == CMD_NEW_DAEMON:
            daemon.update(interface=interface, syncid=syncid)
        failed = self._requests([(cmd, MESSAGE.pack(daemon=daemon))])
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
