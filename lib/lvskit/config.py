"""The lvskit config: one flat INI file, validated whole before anything is touched.

Sections (see README.md, "Configuration"):

  [global]          director name, state and run directories
  [server NAME]     a real server by name: its address
  [service NAME]    a virtual service: address+port+protocol or fwmark,
                    scheduler, persistence, forwarding, removal policy, and
                    one ``real.SERVER = weight=N ...`` line per real server
  [heartbeat]       director failover: timings, key, VIPs, sync daemon, hooks
  [node NAME]       a director (or spare): priority, one address per path

Every problem raises ConfigError naming file, line, section and key; the
result is a tree of frozen dataclasses.
"""
import ipaddress
import re
from dataclasses import dataclass, field

from . import ini
from .errors import ConfigError
from .model import (AF_INET, AF_INET6, F_ONEPACKET, F_PERSISTENT, FORWARD, MAX_WEIGHT,
                    PROTOCOLS, SCHED_FLAG_ALIASES, SCHED_FLAGS, SCHEDULERS, Dest, Service,
                    ServiceKey, family_of, normalize_address)

REMOVAL = ("drain", "delete")
ON_FAILURE = ("quiesce", "remove")


@dataclass(frozen=True)
class Server:
    name: str
    address: str


@dataclass(frozen=True)
class RealServer:
    name: str           # the [server NAME] it refers to, or its address
    dest: Dest          # the wanted kernel entry


@dataclass(frozen=True)
class VirtualService:
    name: str
    service: Service    # wanted kernel entry (its dests dict is empty: see reals)
    reals: tuple        # of RealServer, in file order
    removal: str = "drain"
    on_failure: str = "quiesce"     # a failed real server: weight 0, or out of the table

    @property
    def key(self):
        return self.service.key

    def wanted(self):
        """The Service with its wanted dests filled in, as the planner takes it."""
        return Service(self.service.key, self.service.scheduler, self.service.flags,
                       self.service.timeout, self.service.netmask,
                       {r.dest.key: r.dest for r in self.reals})


@dataclass(frozen=True)
class Node:
    name: str
    priority: int
    paths: dict = field(hash=False)     # path name -> address


@dataclass(frozen=True)
class Heartbeat:
    key_file: str
    vip_interface: str
    vips: tuple             # of "address/prefix"
    port: int = 694
    interval: float = 0.02
    deadtime: float = 0.12
    warntime: float = 0.06
    initdead: float = 10.0
    auto_failback: bool = True
    failback_delay: float = 0.0
    multicast: str = ""     # a group, sent on every path besides (or instead of) unicast
    unicast: bool = True
    realtime: bool = True   # SCHED_FIFO + mlockall for hb-send/hb-listen
    arp_count: int = 3
    arp_repeat: float = 2.0
    release_wait: float = 2.0
    sync_interface: str = ""
    syncid: int = 0
    on_acquire: str = ""
    on_release: str = ""
    monitor_start: str = ""
    monitor_stop: str = ""
    paths: tuple = ()       # every path name of the [node]s, sorted: a datagram carries the index


@dataclass(frozen=True)
class Config:
    path: str
    director: str = ""
    state_dir: str = "/var/lib/lvskit"
    run_dir: str = "/run/lvskit"
    servers: dict = field(default_factory=dict, hash=False)     # name -> Server
    services: tuple = ()                                         # of VirtualService
    heartbeat: object = None                                     # Heartbeat or None
    nodes: tuple = ()                                            # of Node, in file order

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def service(self, name):
        for vs in self.services:
            if vs.name == name:
                return vs
        raise KeyError(name)


# --- typed getters -----------------------------------------------------------

def _int(sec, key, lo, hi, default=None, text=None, label=""):
    raw = sec.take(key) if text is None else text
    label = f"{label} " if label else ""
    if raw is None or raw == "":
        if default is None:
            raise sec.error("missing", key)
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise sec.error(f"{label}{raw!r} is not a whole number", key) from None
    if not lo <= value <= hi:
        raise sec.error(f"{label}{value} out of range {lo}..{hi}", key)
    return value


def _choice(sec, key, choices, default=None, text=None, label=""):
    raw = sec.take(key) if text is None else text
    label = f"{label} " if label else ""
    if raw is None or raw == "":
        if default is None:
            raise sec.error("missing", key)
        return default
    if raw.lower() not in choices:
        raise sec.error(f"{label}{raw!r} is not one of {', '.join(choices)}", key)
    return raw.lower()


def _address(sec, key, text=None):
    raw = sec.take(key) if text is None else text
    if not raw:
        raise sec.error("missing", key)
    try:
        return normalize_address(raw)
    except ValueError:
        raise sec.error(f"{raw!r} is not an IPv4 or IPv6 address", key) from None


def _bool(sec, key, default=False):
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    v = raw.lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise sec.error(f"{raw!r} is not yes or no", key)


def _no_leftovers(sec):
    for key in sec.unused():
        raise sec.error("unknown key", key)


# --- sections ----------------------------------------------------------------

def _global(sec, out):
    out["director"] = sec.take("director", "")
    for key in ("state_dir", "run_dir"):
        value = sec.take(key)
        if value is not None:
            if not value.startswith("/"):
                raise sec.error(f"{value!r} is not an absolute path", key)
            out[key] = value


def _server(sec, servers):
    if not re.match(r"^[A-Za-z][\w.-]*$", sec.name or ""):
        raise sec.error("a [server] section needs a name: [server NAME]")
    servers[sec.name] = Server(sec.name, _address(sec, "address"))


def _netmask(sec, af, persistent):
    full = 128 if af == AF_INET6 else 32
    raw = sec.take("netmask")
    if raw is None or raw == "":
        return full
    if not persistent:
        raise sec.error("netmask only means something with persistent", "netmask")
    try:
        if af == AF_INET6 or raw.lstrip("/").isdigit():
            prefix = int(raw.lstrip("/"))
        else:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{raw}").prefixlen
    except ValueError:
        prefix = -1
    if not 1 <= prefix <= full:
        raise sec.error(f"{raw!r} is not a netmask for this family (/1../{full})", "netmask")
    return prefix


def _service_key(sec):
    if sec.has("fwmark"):
        for key in ("address", "port", "protocol"):
            if sec.has(key):
                raise sec.error("a firewall-mark service has no address, port or protocol", key)
        fwmark = _int(sec, "fwmark", 1, 0xFFFFFFFF)
        family = _choice(sec, "family", ("inet", "inet6"), "inet")
        return ServiceKey.fw(AF_INET6 if family == "inet6" else AF_INET, fwmark)
    if sec.has("family"):
        raise sec.error("family is only for fwmark services (the address says it)", "family")
    address = _address(sec, "address")
    port = _int(sec, "port", 1, 65535)
    protocol = PROTOCOLS[_choice(sec, "protocol", tuple(PROTOCOLS), "tcp")]
    return ServiceKey(family_of(address), protocol, address, port)


def _flags(sec):
    raw = sec.take("sched_flags", "")
    flags = 0
    for word in filter(None, re.split(r"[\s,]+", raw)):
        bit = SCHED_FLAGS.get(word) or SCHED_FLAG_ALIASES.get(word)
        if not bit:
            names = ", ".join(list(SCHED_FLAGS) + list(SCHED_FLAG_ALIASES))
            raise sec.error(f"unknown scheduler flag {word!r} (known: {names})", "sched_flags")
        flags |= bit
    return flags


_REAL_OPTS = ("weight", "forward", "port", "uthreshold", "lthreshold")


def _real(sec, key, servers, svc_key, default_forward):
    name = key[len("real."):]
    value = sec.take(key)
    if not name:
        raise sec.error("want real.SERVER where SERVER is a [server] name or an address", key)
    if name in servers:
        address = servers[name].address
    else:
        try:
            address = normalize_address(name)
        except ValueError:
            raise sec.error(f"{name!r} is neither a [server] section nor an IP address", key) from None
    opts = {}
    for word in value.split():
        opt, eq, val = word.partition("=")
        if not eq or opt not in _REAL_OPTS:
            raise sec.error(f"bad option {word!r} (want {'=, '.join(_REAL_OPTS)}=)", key)
        if opt in opts:
            raise sec.error(f"{opt} given twice", key)
        opts[opt] = val
    weight = _int(sec, key, 0, MAX_WEIGHT, 1, text=opts.get("weight", "1"), label="weight")
    forward = FORWARD[_choice(sec, key, tuple(FORWARD), default_forward, text=opts.get("forward", ""), label="forward")]
    default_port = svc_key.port
    port = _int(sec, key, 0, 65535, default_port, text=opts.get("port", ""), label="port")
    if svc_key.fwmark == 0 and port == 0:
        raise sec.error("port 0 is only for fwmark services", key)
    if forward != FORWARD["nat"] and port != default_port:
        raise sec.error(f"port {port} differs from the service's {default_port}: "
                        "only forward=nat can map ports", key)
    af = family_of(address)
    if af != svc_key.af and forward != FORWARD["tun"]:
        raise sec.error("real server and service are of different IP families "
                        "(only forward=tun can mix them)", key)
    uth = _int(sec, key, 0, 0x7FFFFFFF, 0, text=opts.get("uthreshold", ""), label="uthreshold")
    lth = _int(sec, key, 0, 0x7FFFFFFF, 0, text=opts.get("lthreshold", ""), label="lthreshold")
    if uth and lth > uth:
        raise sec.error(f"lthreshold {lth} is above uthreshold {uth}", key)
    return RealServer(name, Dest(address, port, forward, weight, uth, lth))


def _service(sec, servers):
    if not re.match(r"^[A-Za-z][\w.-]*$", sec.name or ""):
        raise sec.error("a [service] section needs a name: [service NAME]")
    key = _service_key(sec)
    scheduler = sec.take("scheduler", "wlc") or "wlc"
    if scheduler not in SCHEDULERS:
        raise sec.error(f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})", "scheduler")
    timeout = _int(sec, "persistent", 0, 31536000, 0)
    flags = _flags(sec) | (F_PERSISTENT if timeout else 0)
    if _bool(sec, "one_packet"):
        if key.protocol != PROTOCOLS["udp"] and not key.fwmark:
            raise sec.error("one-packet scheduling is for UDP services", "one_packet")
        flags |= F_ONEPACKET
    netmask = _netmask(sec, key.af, bool(timeout))
    forward = _choice(sec, "forward", tuple(FORWARD), "dr")
    removal = _choice(sec, "removal", REMOVAL, "drain")
    on_failure = _choice(sec, "on_failure", ON_FAILURE, "quiesce")
    reals, seen = [], {}
    for k in sec.keys("real."):
        real = _real(sec, k, servers, key, forward)
        if real.dest.key in seen:
            raise sec.error(f"same real server as {seen[real.dest.key]}", k)
        seen[real.dest.key] = k
        reals.append(real)
    _no_leftovers(sec)
    service = Service(key, scheduler, flags, timeout, netmask)
    return VirtualService(sec.name, service, tuple(reals), removal, on_failure)


_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?$")


def _duration(sec, key, lo, hi, default):
    """Seconds from '0.02', '20ms' or '2s'."""
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    m = _DURATION.match(raw.strip())
    if not m:
        raise sec.error(f"{raw!r} is not a duration (e.g. 0.5, 20ms, 2s)", key)
    value = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if not lo <= value <= hi:
        raise sec.error(f"{raw} out of range {lo}..{hi} s", key)
    return value


_NAME = re.compile(r"^[A-Za-z][\w.-]*$")


def _node(sec):
    if not _NAME.match(sec.name or "") or len(sec.name) > 64:
        raise sec.error("a [node] section needs a name: [node NAME] (at most 64 characters)")
    priority = _int(sec, "priority", 0, 65535, 100)
    paths = {}
    for key in sec.keys("path."):
        name = key[len("path."):]
        if not _NAME.match(name):
            raise sec.error("want path.NAME = ADDRESS", key)
        paths[name] = _address(sec, key)
    if not paths:
        raise sec.error("a node needs at least one path.NAME = ADDRESS (its heartbeat address)")
    _no_leftovers(sec)
    return Node(sec.name, priority, paths)


def _vips(sec, services):
    raw = sec.take("vips", "services") or "services"
    out = []
    if raw.strip() == "services":
        for vs in services:
            if vs.key.address and vs.key.address not in [v.split("/")[0] for v in out]:
                out.append(f"{vs.key.address}/{128 if ':' in vs.key.address else 32}")
        if not out:
            raise sec.error("vips = services, but no [service] has an address", "vips")
        return tuple(out)
    for word in raw.replace(",", " ").split():
        try:
            iface = ipaddress.ip_interface(word)
        except ValueError:
            raise sec.error(f"{word!r} is not an address[/prefix]", "vips") from None
        out.append(f"{iface.ip}/{iface.network.prefixlen}")
    return tuple(out)


def _command(sec, key):
    import shlex
    raw = sec.take(key, "") or ""
    try:
        shlex.split(raw)
    except ValueError as e:
        raise sec.error(f"cannot split the command: {e}", key) from None
    return raw


def _heartbeat(sec, services, nodes):
    if sec.name:
        raise sec.error("[heartbeat] takes no name")
    if len(nodes) < 2:
        raise sec.error("[heartbeat] needs at least two [node NAME] sections (director and spare)")
    key_file = sec.take("key_file")
    if not key_file or not key_file.startswith("/"):
        raise sec.error("missing, or not an absolute path", "key_file")
    vip_interface = sec.take("vip_interface")
    if not vip_interface or len(vip_interface) > 15:
        raise sec.error("missing, or not an interface name", "vip_interface")
    kw = {}
    kw["port"] = _int(sec, "port", 1, 65535, 694)
    kw["interval"] = _duration(sec, "interval", 0.005, 60, 0.02)
    kw["deadtime"] = _duration(sec, "deadtime", 0.01, 3600, max(0.12, 3 * kw["interval"]))
    if kw["deadtime"] < 2 * kw["interval"]:
        raise sec.error(f"deadtime {kw['deadtime']} s is less than two intervals", "deadtime")
    kw["warntime"] = _duration(sec, "warntime", 0.005, 3600, kw["deadtime"] / 2)
    if kw["warntime"] >= kw["deadtime"]:
        raise sec.error("warntime must be shorter than deadtime", "warntime")
    kw["initdead"] = _duration(sec, "initdead", 0, 3600, max(10.0, 2 * kw["deadtime"]))
    kw["auto_failback"] = _bool(sec, "auto_failback", True)
    kw["failback_delay"] = _duration(sec, "failback_delay", 0, 86400, 0.0)
    multicast = sec.take("multicast", "")
    if multicast:
        multicast = _address(sec, "multicast", multicast)
        if not ipaddress.ip_address(multicast).is_multicast:
            raise sec.error(f"{multicast} is not a multicast group", "multicast")
    kw["multicast"] = multicast
    kw["unicast"] = _bool(sec, "unicast", True)
    if not kw["unicast"] and not multicast:
        raise sec.error("unicast = no needs a multicast group", "unicast")
    kw["realtime"] = _bool(sec, "realtime", True)
    kw["arp_count"] = _int(sec, "arp_count", 1, 100, 3)
    kw["arp_repeat"] = _duration(sec, "arp_repeat", 0, 60, 2.0)
    kw["release_wait"] = _duration(sec, "release_wait", 0, 60, 2.0)
    kw["sync_interface"] = sec.take("sync_interface", "") or ""
    kw["syncid"] = _int(sec, "syncid", 0, 255, 0)
    for key in ("on_acquire", "on_release", "monitor_start", "monitor_stop"):
        kw[key] = _command(sec, key)
    vips = _vips(sec, services)
    paths = sorted({p for n in nodes for p in n.paths})
    if len(paths) > 255:
        raise sec.error("at most 255 heartbeat paths")
    _no_leftovers(sec)
    return Heartbeat(key_file, vip_interface, vips, paths=tuple(paths), **kw)


def parse(text, path="<config>"):
    return _build(ini.parse(text, path), path)


def load(path):
    return _build(ini.read(path), path)


def _build(sections, path):
    glob, servers, services, seen = {}, {}, [], {}
    by_kind = {"global": [], "server": [], "service": [], "node": [], "heartbeat": []}
    for sec in sections:
        if sec.kind not in by_kind:
            raise sec.error(f"unknown section kind {sec.kind!r} (known: {', '.join(by_kind)})")
        by_kind[sec.kind].append(sec)
    for sec in by_kind["global"]:
        if sec.name:
            raise sec.error("[global] takes no name")
        _global(sec, glob)
        _no_leftovers(sec)
    for sec in by_kind["server"]:
        _server(sec, servers)
        _no_leftovers(sec)
    for sec in by_kind["service"]:
        vs = _service(sec, servers)
        if vs.key in seen:
            raise sec.error(f"same virtual service ({vs.key}) as [service {seen[vs.key]}]")
        seen[vs.key] = vs.name
        services.append(vs)
    nodes = tuple(_node(sec) for sec in by_kind["node"])
    heartbeat = None
    for sec in by_kind["heartbeat"]:
        heartbeat = _heartbeat(sec, services, nodes)
    if nodes and heartbeat is None:
        raise by_kind["node"][0].error("[node] sections need a [heartbeat] section")
    return Config(path=str(path), servers=servers, services=tuple(services),
                  heartbeat=heartbeat, nodes=nodes, **glob)
