"""[server] and [service] sections: the real servers by name, and the virtual services.

A [service] says its identity (address+port+protocol, or a firewall mark),
its scheduler, persistence and forwarding, its removal policy, and one
``real.SERVER = weight=N ...`` line per real server, SERVER a [server] name
or an address; its ``check*`` keys are read by checks.py.
"""
import re

from ..model import (AF_INET, AF_INET6, F_ONEPACKET, F_PERSISTENT, FORWARD, MAX_WEIGHT,
                     PROTOCOLS, SCHED_FLAG_ALIASES, SCHED_FLAGS, SCHEDULERS, Dest, Service,
                     ServiceKey, family_of, normalize_address)
from ..model import record
from . import values as v
from .checks import Check, check

REMOVAL = ("drain", "delete")
ON_FAILURE = ("quiesce", "remove")
ON_RETURN = ("fresh", "keep")
REWEIGHT = ("agent", "http", "external", "none")


class Server(record("Server", "name", "address")):
    __slots__ = ()


class RealServer(record("RealServer", "name", "dest")):
    """name: the [server NAME] it refers to, or its address; dest: the wanted kernel entry."""
    __slots__ = ()


class VirtualService(record(
        "VirtualService",
        "name",
        "service",                  # wanted kernel entry (its dests dict is empty: see reals)
        "reals",                    # of RealServer, in file order
        removal="drain",
        on_failure="quiesce",       # a failed real server: weight 0, or out of the table
        check=Check(),
        sorry=None,                 # a Dest, in the table only while every real server is down
        reweight="none",            # how reweight learns load: agent, http, external, none
        on_return="fresh")):        # a healed real server: fresh start (checkreal), or keep its entries
    __slots__ = ()

    @property
    def key(self):
        return self.service.key

    def wanted(self):
        """The Service with its wanted dests filled in, as the planner takes it."""
        return self.service.replace(dests={r.dest.key: r.dest for r in self.reals})


_SECTION_NAME = re.compile(r"^[A-Za-z][\w.-]*$")     # of a [server] or [service]


def server(sec):
    if not _SECTION_NAME.match(sec.name or ""):
        raise sec.error("a [server] section needs a name: [server NAME]")
    return Server(sec.name, v.address(sec, "address"))


def service(sec, servers):
    """The VirtualService of a [service] section; servers: {name: Server}."""
    if not _SECTION_NAME.match(sec.name or ""):
        raise sec.error("a [service] section needs a name: [service NAME]")
    key = _service_key(sec)
    scheduler = sec.take("scheduler", "wlc") or "wlc"
    if scheduler not in SCHEDULERS:
        raise sec.error(f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})", "scheduler")
    timeout = v.integer(sec, "persistent", 0, 31536000, 0)
    flags = _flags(sec) | (F_PERSISTENT if timeout else 0)
    if v.boolean(sec, "one_packet"):
        if key.protocol != PROTOCOLS["udp"] and not key.fwmark:
            raise sec.error("one-packet scheduling is for UDP services", "one_packet")
        flags |= F_ONEPACKET
    netmask = _netmask(sec, key.af, bool(timeout))
    forward = v.choice(sec, "forward", tuple(FORWARD), "dr")
    removal = v.choice(sec, "removal", REMOVAL, "drain")
    on_failure = v.choice(sec, "on_failure", ON_FAILURE, "quiesce")
    on_return = v.choice(sec, "on_return", ON_RETURN, "fresh")
    reweight = v.choice(sec, "reweight", REWEIGHT, "none")
    reals = _reals(sec, servers, key, forward)
    how = check(sec, key)
    sorry = _sorry(sec, servers, key, forward)
    for real in reals if sorry else ():
        if real.dest.key == sorry.key:
            raise sec.error(f"the sorry server is also real.{real.name}", "sorry")
    v.no_leftovers(sec)
    return VirtualService(sec.name, Service(key, scheduler, flags, timeout, netmask), reals,
                          removal, on_failure, how, sorry, reweight, on_return)


def _service_key(sec):
    if sec.has("fwmark"):
        for key in ("address", "port", "protocol"):
            if sec.has(key):
                raise sec.error("a firewall-mark service has no address, port or protocol", key)
        fwmark = v.integer(sec, "fwmark", 1, 0xFFFFFFFF)
        family = v.choice(sec, "family", ("inet", "inet6"), "inet")
        return ServiceKey.fw(AF_INET6 if family == "inet6" else AF_INET, fwmark)
    if sec.has("family"):
        raise sec.error("family is only for fwmark services (the address says it)", "family")
    address = v.address(sec, "address")
    port = v.integer(sec, "port", 1, 65535)
    protocol = PROTOCOLS[v.choice(sec, "protocol", tuple(PROTOCOLS), "tcp")]
    return ServiceKey(family_of(address), protocol, address, port)


def _flags(sec):
    raw = sec.take("sched_flags", "")
    flags = 0
    for word in filter(None, re.split(r"[\s,]+", raw or "")):
        bit = SCHED_FLAGS.get(word) or SCHED_FLAG_ALIASES.get(word)
        if not bit:
            names = ", ".join(list(SCHED_FLAGS) + list(SCHED_FLAG_ALIASES))
            raise sec.error(f"unknown scheduler flag {word!r} (known: {names})", "sched_flags")
        flags |= bit
    return flags


def _netmask(sec, af, persistent):
    full = 128 if af == AF_INET6 else 32
    raw = sec.take("netmask")
    if raw is None or raw == "":
        return full
    if not persistent:
        raise sec.error("netmask only means something with persistent", "netmask")
    prefix = -1
    if v.INTEGER.fullmatch(raw.lstrip("/")):
        prefix = int(raw.lstrip("/"))
    elif af == AF_INET:
        import ipaddress    # late: a rare key, and a cron run pays for every import
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{raw}").prefixlen
        except ValueError:
            pass
    if not 1 <= prefix <= full:
        raise sec.error(f"{raw!r} is not a netmask for this family (/1../{full})", "netmask")
    return prefix


def _server_address(sec, key, name, servers):
    """The address of a [server] name, or of a literal address."""
    if name in servers:
        return servers[name].address
    try:
        return normalize_address(name)
    except ValueError:
        raise sec.error(f"{name!r} is neither a [server] section nor an IP address", key) from None


def _reals(sec, servers, svc_key, forward):
    reals, seen = [], {}
    for key, value in sec.take_all("real."):
        real = _real(sec, key, value, servers, svc_key, FORWARD[forward])
        where = real.dest[:2]       # (address, port): one real server
        if where in seen:
            raise sec.error(f"same real server as {seen[where]}", key)
        seen[where] = key
        reals.append(real)
    return tuple(reals)


_REAL_OPTIONS = ("weight", "forward", "port", "uthreshold", "lthreshold")


def _real(sec, key, value, servers, svc_key, default_forward):
    """One ``real.SERVER = weight=N forward=F port=P uthreshold=U lthreshold=L`` line."""
    name = key[len("real."):]
    if not name:
        raise sec.error("want real.SERVER where SERVER is a [server] name or an address", key)
    address = _server_address(sec, key, name, servers)
    opts = {}
    for word in value.split():
        opt, eq, text = word.partition("=")
        if not eq or opt not in _REAL_OPTIONS:
            raise sec.error(f"bad option {word!r} (want {'=, '.join(_REAL_OPTIONS)}=)", key)
        if opt in opts:
            raise sec.error(f"{opt} given twice", key)
        opts[opt] = text
    weight, port, uth, lth = 1, svc_key.port, 0, 0
    forward = default_forward
    if opts:
        if "weight" in opts:
            weight = v.integer(sec, key, 0, MAX_WEIGHT, text=opts["weight"], label="weight")
        if "forward" in opts:
            forward = FORWARD[v.choice(sec, key, tuple(FORWARD), text=opts["forward"], label="forward")]
        if "port" in opts:
            port = v.integer(sec, key, 0, 65535, text=opts["port"], label="port")
        if "uthreshold" in opts:
            uth = v.integer(sec, key, 0, 0x7FFFFFFF, text=opts["uthreshold"], label="uthreshold")
        if "lthreshold" in opts:
            lth = v.integer(sec, key, 0, 0x7FFFFFFF, text=opts["lthreshold"], label="lthreshold")
    if port != svc_key.port:
        if svc_key.fwmark == 0 and port == 0:
            raise sec.error("port 0 is only for fwmark services", key)
        if forward != FORWARD["nat"]:
            raise sec.error(f"port {port} differs from the service's {svc_key.port}: "
                            "only forward=nat can map ports", key)
    if family_of(address) != svc_key.af and forward != FORWARD["tun"]:
        raise sec.error("real server and service are of different IP families "
                        "(only forward=tun can mix them)", key)
    if uth and lth > uth:
        raise sec.error(f"lthreshold {lth} is above uthreshold {uth}", key)
    return RealServer(name, Dest(address, port, forward, weight, uth, lth))


def _sorry(sec, servers, svc_key, forward):
    """sorry = SERVER|ADDRESS[:PORT]: takes the traffic while every real server is down."""
    raw = sec.take("sorry", "") or ""
    if not raw:
        return None
    name, port = raw, svc_key.port
    m = re.match(r"^\[([^\]]+)\]:([0-9]+)$", raw) or (
        re.match(r"^([^:]+):([0-9]+)$", raw) if raw.count(":") == 1 else None)
    if m:
        name, port = m.group(1), v.integer(sec, "sorry", 1, 65535, text=m.group(2), label="port")
    address = _server_address(sec, "sorry", name, servers)
    if not port:
        raise sec.error("a firewall-mark service needs the sorry server's port: ADDRESS:PORT", "sorry")
    fwd = FORWARD[forward]
    if fwd != FORWARD["nat"] and svc_key.port and port != svc_key.port:
        raise sec.error(f"port {port} differs from the service's {svc_key.port}: "
                        "only forward=nat can map ports", "sorry")
    if family_of(address) != svc_key.af and fwd != FORWARD["tun"]:
        raise sec.error("sorry server and service are of different IP families", "sorry")
    return Dest(address, port, fwd, 1)
