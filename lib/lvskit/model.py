"""What an IPVS table is made of, for the kernel, the planner and the config alike.

Identity follows the kernel (and kube-proxy's IPVS proxier): a virtual service
is (family, protocol, address, port) or (family, firewall mark); a real server
("destination") within it is (address, port).  Every other field can be
changed in place.
"""
import functools
import socket
from collections import namedtuple

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}

# Forwarding methods: the kernel's IP_VS_CONN_F_* values.
FORWARD = {"nat": 0, "tun": 2, "dr": 3}
FORWARD_NAMES = {v: k for k, v in FORWARD.items()}
FORWARD_NAMES[1] = "local"
_IPVSADM_FORWARD = {0: "-m", 2: "-i", 3: "-g", 1: "-g"}

# Service flags (IP_VS_SVC_F_*) a user can set; HASHED (2) is kernel-internal.
F_PERSISTENT, F_HASHED, F_ONEPACKET = 0x1, 0x2, 0x4
SCHED_FLAGS = {"flag-1": 0x8, "flag-2": 0x10, "flag-3": 0x20}
SCHED_FLAG_ALIASES = {"sh-fallback": 0x8, "sh-port": 0x10, "mh-fallback": 0x8, "mh-port": 0x10}
USER_FLAGS = F_PERSISTENT | F_ONEPACKET | 0x8 | 0x10 | 0x20

# The schedulers of mainline Linux (net/netfilter/ipvs/ip_vs_*.c).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
MAX_WEIGHT = 65535


def record(name, *required, compared=None, **defaults):
    """A frozen record: a named tuple with defaults, keyword construction and replace().

    Named tuples, not dataclasses, because a table read back or built from
    the config makes one per real server, ten thousand a run, and a tuple
    is built in one C call.  Fields without a default come first, then those
    with one (in order).  ``replace(**changes)`` is a copy with changes;
    ``defaults`` is {field: default}.  ``compared=N``: only the first N
    fields count for == and hash (a Dest's counters, a Service's real
    servers).

        class Server(record("Server", "name", "address")):
            __slots__ = ()
    """
    base = namedtuple(name, list(required) + list(defaults), defaults=tuple(defaults.values()))
    base.replace = base._replace
    base.defaults = base._field_defaults
    if compared is not None:
        def __eq__(self, other):
            if isinstance(other, base):
                return self[:compared] == other[:compared]
            return NotImplemented

        def __ne__(self, other):
            eq = __eq__(self, other)
            return eq if eq is NotImplemented else not eq

        base.__eq__, base.__ne__ = __eq__, __ne__
        base.__hash__ = lambda self: hash(self[:compared])
    return base



@functools.lru_cache(maxsize=65536)
def normalize_address(text):
    """Canonical text of an IP address; ValueError when it is not one.

    inet_pton/inet_ntop, not the ipaddress module: the config can name ten
    thousand servers and is read on every cron run, and ipaddress builds an
    object per address to give the same text.
    """
    text = text.strip("[]")
    for af in (AF_INET, AF_INET6) if ":" not in text else (AF_INET6,):
        try:
            return socket.inet_ntop(af, socket.inet_pton(af, text))
        except OSError:
            pass
    raise ValueError(f"{text!r} is not an IP address")


def family_of(address):
    return AF_INET6 if ":" in address else AF_INET


def hostport(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class ServiceKey(record("ServiceKey", "af", "protocol", "address", "port", fwmark=0)):
    """protocol is 0 and address "" for a firewall-mark service; ordered as a tuple."""
    __slots__ = ()

    @classmethod
    def fw(cls, af, fwmark):
        return cls(af, 0, "", 0, fwmark)

    def ipvsadm(self):
        """The service's ipvsadm option, e.g. '-t 10.0.0.1:80' or '-f 7 -6'."""
        if self.fwmark:
            return f"-f {self.fwmark}" + (" -6" if self.af == AF_INET6 else "")
        opt = {6: "-t", 17: "-u", 132: "--sctp-service"}[self.protocol]
        return f"{opt} {hostport(self.address, self.port)}"

    def __str__(self):
        if self.fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.af == AF_INET6 else "")
        return f"{PROTOCOL_NAMES.get(self.protocol, self.protocol)} {hostport(self.address, self.port)}"


SETTINGS = slice(2, 6)      # a Dest's fields that are changed in place: forward .. l_threshold


class Dest(record("Dest", "address", "port", forward=FORWARD["dr"], weight=1, u_threshold=0,
                  l_threshold=0, active=0, inactive=0, persistent=0, compared=6)):
    """A real server inside one service.  Counters are read-only and never compared."""
    __slots__ = ()

    @property
    def key(self):
        return (self[0], self[1])

    def settings(self):
        return self[SETTINGS]

    def __str__(self):
        return hostport(self.address, self.port)


class Service(record("Service", "key", scheduler="wlc", flags=0, timeout=0, netmask=32, dests=None,
                     compared=5)):
    """A virtual service and, keyed by (address, port), its real servers.

    timeout: persistence in seconds; netmask: persistence granularity as a
    prefix length (128 for IPv6).  dests is not compared (a service is the
    same service whatever its real servers).
    """
    __slots__ = ()

    def __new__(cls, key, scheduler="wlc", flags=0, timeout=0, netmask=32, dests=None):
        return tuple.__new__(cls, (key, scheduler, flags, timeout, netmask,
                                   {} if dests is None else dests))

    def settings(self):
        return self[1:5]

    def __str__(self):
        return str(self.key)


def netmask_text(af, prefix):
    if af == AF_INET6:
        return str(prefix)
    return socket.inet_ntoa(((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big"))


def service_ipvsadm(svc):
    """The options that set a service's fields, as ipvsadm -A/-E takes them."""
    parts = [svc.key.ipvsadm(), "-s", svc.scheduler]
    if svc.flags & F_PERSISTENT:
        parts += ["-p", str(svc.timeout)]
        full = 128 if svc.key.af == AF_INET6 else 32
        if svc.netmask != full:
            parts += ["-M", netmask_text(svc.key.af, svc.netmask)]
    if svc.flags & F_ONEPACKET:
        parts.append("-o")
    sched = [name for name, bit in SCHED_FLAGS.items() if svc.flags & bit]
    if sched:
        parts += ["-b", ",".join(sched)]
    return " ".join(parts)


# A service's option text, once per service: a cold load logs 10,000 real servers
_service_option = functools.lru_cache(maxsize=4096)(ServiceKey.ipvsadm)


def dest_ipvsadm(svc_key, dest):
    address, port, forward, weight, uth, lth = dest[:6]
    text = (f"{_service_option(svc_key)} -r {f'[{address}]' if ':' in address else address}:{port} "
            f"{_IPVSADM_FORWARD[forward]} -w {weight}")
    if uth:
        text += f" -x {uth}"
    if lth:
        text += f" -y {lth}"
    return text
