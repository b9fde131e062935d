"""The lvskit config: one flat INI file, validated whole before anything is touched.

Sections (see README.md, "Configuration"):

  [global]          director name, state and run directories
  [server NAME]     a real server by name: its address
  [service NAME]    a virtual service: address+port+protocol or fwmark,
                    scheduler, persistence, forwarding, removal policy, and
                    one ``real.SERVER = weight=N ...`` line per real server;
                    ``check*`` keys say how check-real tests its real
                    servers, ``sorry`` names a server for when all are down
  [reweight]        how reweight asks real servers for load, and its controller
  [agent]           lvs-agent's capacity formula (on a real server)
  [heartbeat]       director failover: timings, key, VIPs, sync daemon, hooks
  [node NAME]       a director (or spare): priority, one address per path

Every problem raises ConfigError naming file, line, section and key; the
result is a tree of frozen records (lvskit.record).
"""
import os
import re
from itertools import repeat
from operator import itemgetter
from socket import inet_ntop, inet_pton

from . import ini
from .errors import ConfigError
from .model import (AF_INET, AF_INET6, F_ONEPACKET, F_PERSISTENT, FORWARD, MAX_WEIGHT,
                    PROTOCOLS, SCHED_FLAG_ALIASES, SCHED_FLAGS, SCHEDULERS, Dest, Service,
                    ServiceKey, family_of, normalize_address)
from .nogc import nogc
from .model import record

REMOVAL = ("drain", "delete")
ON_FAILURE = ("quiesce", "remove")


class Server(record("Server", "name", "address")):
    __slots__ = ()


class RealServer(record("RealServer", "name", "dest")):
    """name: the [server NAME] it refers to, or its address; dest: the wanted kernel entry."""
    __slots__ = ()


CHECKS = ("none", "tcp", "http", "https", "udp", "xdmcp", "ssh", "ping", "external")
# Keys that only mean something for some check kinds.
_CHECK_ONLY = {
    "check_path": ("http", "https"), "check_host": ("http", "https"),
    "check_status": ("http", "https"), "check_body": ("http", "https"),
    "check_verify": ("https",), "check_ca": ("https",),
    "check_send": ("udp",), "check_expect": ("udp", "ssh"),
    "check_command": ("external",), "check_warning_weight": ("external",),
}


class Check(record(
        "Check",
        kind="none",
        interval=5.0,
        timeout=3.0,
        rise=2,
        fall=3,
        port=0,                 # 0: the real server's own port
        path="/",
        host="",                # HTTP Host header (and TLS name when verifying)
        status=((200, 399),),
        body="",                # regular expression the body must match
        verify=True,
        ca="",                  # CA bundle for verify (default: the system's)
        send=b"",
        expect="",              # regular expression the reply or banner must match
        command=(),             # external: argv with {address} {port}
        warning_weight=50,      # external exit 1: percent of the configured weight
        flap_changes=4,         # this many state changes within flap_window...
        flap_window=600.0,
        hold_down=300.0)):      # ...keep the server out this long
    """How check-real tests the real servers of one service."""
    __slots__ = ()


_CHECK = Check()     # the defaults


_DEST_OF, _DEST_KEY = itemgetter(1), itemgetter(0, 1)     # RealServer -> Dest -> (address, port)


class VirtualService(record(
        "VirtualService",
        "name",
        "service",                  # wanted kernel entry (its dests dict is empty: see reals)
        "reals",                    # of RealServer, in file order
        removal="drain",
        on_failure="quiesce",       # a failed real server: weight 0, or out of the table
        check=Check(),
        sorry=None,                 # a Dest, in the table only while every real server is down
        reweight="none")):          # how reweight learns load: agent, http, external, none
    __slots__ = ()

    @property
    def key(self):
        return self.service.key

    def wanted(self):
        """The Service with its wanted dests filled in, as the planner takes it."""
        s = self.service    # RealServer is (name, dest); a Dest's key is (address, port)
        dests = list(map(_DEST_OF, self.reals))     # C-level loops: 10,000 real servers a run
        return Service(s.key, s.scheduler, s.flags, s.timeout, s.netmask,
                       dict(zip(map(_DEST_KEY, dests), dests)))

    # The config cache keeps each service as plain tuples (marshal takes
    # nothing else): unpickling 24,000 records of 1,000 x 10 one by one was
    # most of a cached run's config (13 ms on the host), plain tuples and
    # these C-level rebuilds take 8.
    def flat(self):
        """Plain tuples and strings only (see from_flat)."""
        s = self.service
        key = (int(s.key[0]),) + s.key[1:]     # the address family: an enum, marshal takes ints
        return (self.name, key, s[1:5], tuple([r[0] for r in self.reals]),
                tuple([tuple(r[1]) for r in self.reals]), self[3:5],
                None if self.check == _CHECK else tuple(self.check),
                self.sorry and tuple(self.sorry), self.reweight)

    @classmethod
    def from_flat(cls, f):
        name, key, settings, names, dests, removal_failure, check, sorry, reweight = f
        new = tuple.__new__
        reals = tuple(map(new, repeat(RealServer), zip(names, map(new, repeat(Dest), dests))))
        service = new(Service, (new(ServiceKey, key),) + settings + ({},))
        return new(cls, (name, service, reals) + removal_failure + (
            _CHECK if check is None else new(Check, check), sorry and new(Dest, sorry), reweight))


class Reweight(record(
        "Reweight",
        agent_port=7766,
        http_url="http://{address}:{agent_port}/load",
        command="ssh -o BatchMode=yes {address} lvs-agent",
        timeout=1.0,                # seconds for a whole round's answers
        alpha=0.25,
        deadband=0.05,
        max_step=0.1,
        floor=0.05,
        ceiling=1.0,
        scale=100,
        slow_start=60.0,
        agent_ports={})):           # server name -> port (never mutated)
    """[reweight]: how to ask for load and how answers become weights."""
    __slots__ = ()


class Agent(record(
        "Agent",
        load_avg=1,                 # which loadavg: 1, 5 or 15 minutes
        cpu_full=1.0,               # load (or busy) per CPU that counts as full (0: ignore CPU)
        cgroup="",                  # a cgroup v2 directory: its CPU time instead of loadavg
        cpu_sample=0.25,            # seconds between two cgroup readings when none is kept
        memory="auto",              # auto (PSI, else meminfo), psi, meminfo, off
        psi_full=10.0,              # memory "some" stall, % of time, that counts as full
        mem_ok=0.5,                 # fraction of memory in use that is still no pressure
        max_sessions=0,             # logins that count as full (0: ignore sessions)
        utmp="/var/run/utmp",
        state_file="/etc/lvskit/agent-state",   # admin's up/drain/maint/down
        listen="7766")):            # [ADDR:]PORT for --listen
    """[agent]: lvs-agent's capacity formula, on a real server (capacity.py)."""
    __slots__ = ()


class Node(record("Node", "name", "priority", "paths")):
    """paths: {path name: address}."""
    __slots__ = ()


class Heartbeat(record(
        "Heartbeat",
        "key_file",
        "vip_interface",
        "vips",                 # of "address/prefix"
        port=694,
        interval=0.02,
        deadtime=0.12,
        warntime=0.06,
        initdead=10.0,
        auto_failback=True,
        failback_delay=0.0,
        multicast="",           # a group, sent on every path besides (or instead of) unicast
        unicast=True,
        realtime=True,          # SCHED_FIFO + mlockall for hb-send/hb-listen
        arp_count=3,
        arp_repeat=2.0,
        release_wait=2.0,
        sync_interface="",
        syncid=0,
        on_acquire="",
        on_release="",
        monitor_start="",
        monitor_stop="",
        paths=())):             # every path name of the [node]s, sorted: a datagram carries the index
    __slots__ = ()


class Config(record(
        "Config",
        "path",
        director="",
        state_dir="/var/lib/lvskit",
        run_dir="/run/lvskit",
        maint_dir="",           # check-real maintenance flags; "" is STATE_DIR/maint
        check_hook="",          # command check-real runs on every health change
        max_remove=0.5,         # share of its services one ipvs-sync run may delete
        foreign="warn",         # ipvs-sync --check on services nobody accounts for: warn|ignore
        servers={},             # name -> Server (never mutated)
        services=(),            # of VirtualService
        reweight=Reweight(),
        agent=Agent(),
        heartbeat=None,         # Heartbeat or None
        nodes=())):             # of Node, in file order
    __slots__ = ()

    @property
    def maint_path(self):
        return self.maint_dir or f"{self.state_dir.rstrip('/')}/maint"

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

# ASCII digits only: int() and float() also take "1_0" and other scripts' digits
# (a full-width "１"), which no admin means as a number.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _int(sec, key, lo, hi, default=None, text=None, label=""):
    raw = sec.take(key) if text is None else text
    label = f"{label} " if label else ""
    if raw is None or raw == "":
        if default is None:
            raise sec.error("missing", key)
        return default
    if not _INTEGER.fullmatch(raw):
        raise sec.error(f"{label}{raw!r} is not a whole number", key)
    if len(raw) > 20 or not lo <= int(raw, 10) <= hi:     # int() refuses over 4,300 digits
        raise sec.error(f"{label}{raw[:24]}{'...' if len(raw) > 24 else ''} out of range {lo}..{hi}", key)
    value = int(raw, 10)
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


def _float(sec, key, lo, hi, default):
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    if not _NUMBER.fullmatch(raw):
        raise sec.error(f"{raw!r} is not a number", key)
    value = float(raw)
    if not lo <= value <= hi:
        raise sec.error(f"{value:g} out of range {lo:g}..{hi:g}", key)
    return value


def _percent(sec, key, default):
    """A share from 'N%' (0..100)."""
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    if not raw.endswith("%") or not _NUMBER.fullmatch(raw[:-1].strip()) \
            or not 0 <= float(raw[:-1]) <= 100:
        raise sec.error(f"{raw!r} is not a percentage 0%..100%", key)
    return float(raw[:-1]) / 100


def _path(sec, key, default):
    value = sec.take(key)
    if value is None:
        return default
    if value and not value.startswith("/"):
        raise sec.error(f"{value!r} is not an absolute path", key)
    return value


def _no_leftovers(sec):
    for key in sec.unused():
        raise sec.error("unknown key", key)


# --- sections ----------------------------------------------------------------

def _global(sec, out):
    out["director"] = sec.take("director", "")
    hook = sec.take("check_hook")
    if hook:
        out["check_hook"] = hook
    out["max_remove"] = _percent(sec, "max_remove", 0.5)
    out["foreign"] = _choice(sec, "foreign", ("warn", "ignore"), "warn")
    for key in ("state_dir", "run_dir", "maint_dir"):
        value = sec.take(key)
        if value is not None:
            if not value.startswith("/"):
                raise sec.error(f"{value!r} is not an absolute path", key)
            out[key] = value


_SECTION_NAME = re.compile(r"^[A-Za-z][\w.-]*$")     # of a [server] or [service]


def _server(sec, servers):
    if not _SECTION_NAME.match(sec.name or ""):
        raise sec.error("a [server] section needs a name: [server NAME]")
    servers[sec.name] = Server(sec.name, _address(sec, "address"))


def _netmask(sec, af, persistent):
    full = 128 if af == AF_INET6 else 32
    raw = sec.take("netmask")
    if raw is None or raw == "":
        return full
    if not persistent:
        raise sec.error("netmask only means something with persistent", "netmask")
    prefix = -1
    if _INTEGER.fullmatch(raw.lstrip("/")):
        prefix = int(raw.lstrip("/"))
    elif af == AF_INET:
        import ipaddress    # late, as below: rare keys, and a cron script pays every import
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{raw}").prefixlen
        except ValueError:
            pass
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
    if not raw:
        return flags
    for word in filter(None, re.split(r"[\s,]+", raw)):
        bit = SCHED_FLAGS.get(word) or SCHED_FLAG_ALIASES.get(word)
        if not bit:
            names = ", ".join(list(SCHED_FLAGS) + list(SCHED_FLAG_ALIASES))
            raise sec.error(f"unknown scheduler flag {word!r} (known: {names})", "sched_flags")
        flags |= bit
    return flags


_new = tuple.__new__
_REAL_OPTS = ("weight", "forward", "port", "uthreshold", "lthreshold")
_FORWARDS = tuple(FORWARD)


def _server_address(sec, key, name, servers):
    """The address of a [server] name, or of a literal address."""
    if name in servers:
        return servers[name].address
    try:
        return normalize_address(name)
    except ValueError:
        raise sec.error(f"{name!r} is neither a [server] section nor an IP address", key) from None


def _real(sec, key, servers, svc_key, default_forward):
    name = key[len("real."):]
    value = sec.take(key)
    if not name:
        raise sec.error("want real.SERVER where SERVER is a [server] name or an address", key)
    address = _server_address(sec, key, name, servers)
    opts = {}
    for word in value.split():
        opt, eq, val = word.partition("=")
        if not eq or opt not in _REAL_OPTS:
            raise sec.error(f"bad option {word!r} (want {'=, '.join(_REAL_OPTS)}=)", key)
        if opt in opts:
            raise sec.error(f"{opt} given twice", key)
        opts[opt] = val
    # only the options given are parsed: a big table is read on every cron run
    weight = _int(sec, key, 0, MAX_WEIGHT, text=opts["weight"], label="weight") if "weight" in opts else 1
    forward = FORWARD[_choice(sec, key, _FORWARDS, text=opts["forward"], label="forward")
                      if "forward" in opts else default_forward]
    default_port = svc_key.port
    port = _int(sec, key, 0, 65535, text=opts["port"], label="port") if "port" in opts else default_port
    if svc_key.fwmark == 0 and port == 0:
        raise sec.error("port 0 is only for fwmark services", key)
    if forward != FORWARD["nat"] and port != default_port:
        raise sec.error(f"port {port} differs from the service's {default_port}: "
                        "only forward=nat can map ports", key)
    if (":" in address) != (svc_key.af == AF_INET6) and forward != FORWARD["tun"]:
        raise sec.error("real server and service are of different IP families "
                        "(only forward=tun can mix them)", key)
    uth = _int(sec, key, 0, 0x7FFFFFFF, text=opts["uthreshold"], label="uthreshold") if "uthreshold" in opts else 0
    lth = _int(sec, key, 0, 0x7FFFFFFF, text=opts["lthreshold"], label="lthreshold") if "lthreshold" in opts else 0
    if uth and lth > uth:
        raise sec.error(f"lthreshold {lth} is above uthreshold {uth}", key)
    # records built by tuple.__new__: one C call each, 10,000 real servers a parse
    return _new(RealServer, (name, _new(Dest, (address, port, forward, weight, uth, lth, 0, 0, 0))))


def _status_ranges(sec, key):
    raw = sec.take(key)
    if not raw:
        return _CHECK.status
    ranges = []
    for part in filter(None, re.split(r"[\s,]+", raw)):
        lo, dash, hi = part.partition("-")
        if _INTEGER.fullmatch(lo) and (not dash or _INTEGER.fullmatch(hi)):
            lo, hi = int(lo), int(hi) if dash else int(lo)
        else:
            lo = hi = -1
        if not 100 <= lo <= hi <= 599:
            raise sec.error(f"{part!r} is not a status or range within 100-599 (e.g. 200-299,302)", key)
        ranges.append((lo, hi))
    return tuple(ranges)


def _regex(sec, key):
    raw = sec.take(key, "") or ""
    try:
        re.compile(raw)
    except (re.error, OverflowError, RecursionError) as e:
        raise sec.error(f"bad regular expression: {e}", key) from None
    return raw


def _payload(sec, key):
    """A UDP payload: text with C-style escapes (\\x00, \\n, \\\\)."""
    raw = sec.take(key, "") or ""
    try:
        return raw.encode("latin-1").decode("unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as e:
        raise sec.error(f"bad escape in payload: {e}", key) from None


def _command(sec, key):
    import shlex
    raw = sec.take(key, "") or ""
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as e:
        raise sec.error(f"cannot split command: {e}", key) from None
    if not argv:
        raise sec.error("an external check needs a command", key)
    if not argv[0].startswith("/"):
        raise sec.error(f"{argv[0]!r}: give the program's absolute path", key)
    for word in argv:
        for name in re.findall(r"\{([^}]*)\}", word):
            if name not in ("address", "port"):
                raise sec.error(f"unknown placeholder {{{name}}} (known: {{address}}, {{port}})", key)
    return argv


def _check(sec, key):
    kind = _choice(sec, "check", CHECKS, "none")
    for k, kinds in _CHECK_ONLY.items():
        if sec.has(k) and kind not in kinds:
            raise sec.error(f"only for check = {' or '.join(kinds)} (this service has check = {kind})", k)
    if kind == "none":
        for k in sec.keys("check_"):
            raise sec.error("this service has no check (add check = ...)", k)
        return Check()
    port = _int(sec, "check_port", 1, 65535, 0) if sec.has("check_port") else 0
    if key.fwmark and not port and kind not in ("ping", "external"):
        raise sec.error("a firewall-mark service has no port to check: set check_port", "check")
    timeout = _duration(sec, "check_timeout", 0.05, 300, _CHECK.timeout)
    interval = _duration(sec, "check_interval", 0.1, 86400, _CHECK.interval)
    host = sec.take("check_host", "") or ""
    if host and not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        raise sec.error(f"{host!r} is not a host name", "check_host")
    path = sec.take("check_path", "/") or "/"
    if not path.startswith("/"):
        raise sec.error(f"{path!r} does not start with /", "check_path")
    if kind == "udp" and not sec.has("check_send"):
        raise sec.error("a udp check needs check_send (the payload to send)", "check")
    ca = sec.take("check_ca", "") or ""
    if ca and not ca.startswith("/"):
        raise sec.error(f"{ca!r} is not an absolute path", "check_ca")
    return Check(
        kind=kind, interval=interval, timeout=timeout,
        rise=_int(sec, "check_rise", 1, 100, _CHECK.rise),
        fall=_int(sec, "check_fall", 1, 100, _CHECK.fall),
        port=port, path=path, host=host,
        status=_status_ranges(sec, "check_status"),
        body=_regex(sec, "check_body"),
        verify=_bool(sec, "check_verify", True), ca=ca,
        send=_payload(sec, "check_send"),
        expect=_regex(sec, "check_expect"),
        command=_command(sec, "check_command") if kind == "external" else (),
        warning_weight=_int(sec, "check_warning_weight", 0, 100, _CHECK.warning_weight),
        flap_changes=_int(sec, "check_flap_changes", 0, 1000, _CHECK.flap_changes),
        flap_window=_duration(sec, "check_flap_window", 0, 86400 * 7, _CHECK.flap_window),
        hold_down=_duration(sec, "check_hold_down", 0, 86400 * 7, _CHECK.hold_down),
    )


def _sorry(sec, servers, svc_key, forward):
    """sorry = SERVER|ADDRESS[:PORT]: takes the traffic while every real server is down."""
    raw = sec.take("sorry", "") or ""
    if not raw:
        return None
    name, port = raw, svc_key.port
    m = re.match(r"^\[([^\]]+)\]:([0-9]+)$", raw) or (
        re.match(r"^([^:]+):([0-9]+)$", raw) if raw.count(":") == 1 else None)
    if m:
        name, port = m.group(1), _int(sec, "sorry", 1, 65535, text=m.group(2), label="port")
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


def _service(sec, servers):
    if not _SECTION_NAME.match(sec.name or ""):
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
    reweight = _choice(sec, "reweight", REWEIGHT, "none")
    reals = _plain_reals(sec, servers, key, forward)
    if reals is None:
        reals = _reals(sec, servers, key, forward)
    check = _check(sec, key)
    sorry = _sorry(sec, servers, key, forward)
    for real in reals if sorry else ():
        if real.dest.key == sorry.key:
            raise sec.error(f"the sorry server is also real.{real.name}", "sorry")
    _no_leftovers(sec)
    service = Service(key, scheduler, flags, timeout, netmask)
    return VirtualService(sec.name, service, reals, removal, on_failure, check, sorry, reweight)


def _reals(sec, servers, key, forward):
    reals, seen = [], {}
    for k in sec.keys("real."):
        real = _real(sec, k, servers, key, forward)
        if real.dest.key in seen:
            raise sec.error(f"same real server as {seen[real.dest.key]}", k)
        seen[real.dest.key] = k
        reals.append(real)
    return tuple(reals)


_PLAIN_WEIGHTS = re.compile(r"^weight=([0-9]{1,5})$", re.M)
_PLAIN = True       # tests turn _plain_reals off, to compare


def _plain_reals(sec, servers, svc_key, forward):
    """The real servers of a section whose real lines are all plain, built in bulk; else None.

    Plain: ``real.NAME = weight=N``, NAME a [server] or an address, either
    in the service's family, N a weight in range, no real server twice.
    That is the usual line, and the first run after an install parses a big
    table whole: C-level passes over the section's lines build 10,000 real
    servers in 15 ms on the test host, _real in 24.  Anything else (other
    options, a mixed family, any error) goes to _reals, line by line, which
    builds the same records or names what is wrong (tests/unit/test_config_plain.py
    compares both).
    """
    values = sec.values
    keys = [k for k in values if k[:5] == "real."]
    if not keys or not _PLAIN:
        return None
    weights = _PLAIN_WEIGHTS.findall("\n".join([values[k][0] for k in keys]))
    if len(weights) != len(keys):
        return None
    weights = list(map(int, weights))
    if max(weights) > MAX_WEIGHT:
        return None
    names = [k[5:] for k in keys]
    addresses = [servers[n].address if n in servers else n for n in names] if servers else names
    af = svc_key.af     # the same family: no check of it is needed; pton refuses another
    try:
        packed = list(map(inet_pton, repeat(af), addresses))
    except OSError:
        return None
    # An IPv4 text that glibc's inet_pton takes is already canonical (no leading
    # zeros, four parts): kept as written.  IPv6 has several spellings: normalized.
    if af == AF_INET6:
        addresses = list(map(inet_ntop, repeat(af), packed))
    if len(set(addresses)) != len(addresses):
        return None
    sec.took(keys)
    dests = map(_new, repeat(Dest), zip(addresses, repeat(svc_key.port), repeat(FORWARD[forward]),
                                        weights, *[repeat(0)] * 5))
    return tuple(map(_new, repeat(RealServer), zip(names, dests)))


# --- reweight and lvs-agent ------------------------------------------------

REWEIGHT = ("agent", "http", "external", "none")


def _template(sec, key, default):
    value = sec.take(key, default) or default
    try:
        value.format(address="a", name="n", agent_port=1, port=1)
    except (KeyError, IndexError, ValueError) as e:
        raise sec.error(f"bad template {value!r} ({e}; known: {{address}} {{name}} "
                        "{agent_port} {port})", key) from None
    return value


def _reweight(sec, server_secs):
    d = Reweight()
    ports = {}
    for ssec in server_secs:
        if ssec.has("agent_port"):
            ports[ssec.name] = _int(ssec, "agent_port", 1, 65535)
    if sec is None:
        return Reweight(agent_ports=ports)
    floor = _float(sec, "floor", 0, 1, d.floor)
    out = Reweight(
        agent_port=_int(sec, "agent_port", 1, 65535, d.agent_port),
        http_url=_template(sec, "http_url", d.http_url),
        command=_template(sec, "command", d.command),
        timeout=_float(sec, "timeout", 0.01, 600, d.timeout),
        alpha=_float(sec, "alpha", 0.01, 1, d.alpha),
        deadband=_float(sec, "deadband", 0, 1, d.deadband),
        max_step=_float(sec, "max_step", 0.01, 1, d.max_step),
        floor=floor,
        ceiling=_float(sec, "ceiling", max(floor, 0.01), 1, d.ceiling),
        scale=_int(sec, "scale", 1, 1000, d.scale),
        slow_start=_float(sec, "slow_start", 0, 86400, d.slow_start),
        agent_ports=ports)
    if not out.http_url.startswith(("http://", "https://")):
        raise sec.error(f"{out.http_url!r} is not an http:// or https:// URL", "http_url")
    return out


def _agent(sec):
    d = Agent()
    load_avg = _choice(sec, "load_avg", ("1", "5", "15"), str(d.load_avg))
    return Agent(
        load_avg=int(load_avg),
        cpu_full=_float(sec, "cpu_full", 0, 64, d.cpu_full),
        cgroup=_cgroup(sec, "cgroup", d.cgroup),
        cpu_sample=_duration(sec, "cpu_sample", 0.01, 10, d.cpu_sample),
        memory=_choice(sec, "memory", ("auto", "psi", "meminfo", "off"), d.memory),
        psi_full=_float(sec, "psi_full", 0, 100, d.psi_full),
        mem_ok=_float(sec, "mem_ok", 0, 0.99, d.mem_ok),
        max_sessions=_int(sec, "max_sessions", 0, 100000, d.max_sessions),
        utmp=_path(sec, "utmp", d.utmp),
        state_file=_path(sec, "state_file", d.state_file),
        listen=_listen(sec, "listen", d.listen))


CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup(sec, key, default):
    """An absolute directory, or a path under the cgroup v2 mount (user.slice).
    Whether it exists is the agent's business at each answer: the config is
    validated on directors too, which may have no such slice."""
    raw = sec.take(key)
    if not raw:
        return default
    if ".." in raw.split("/"):
        raise sec.error(f"{raw!r} climbs out with '..'", key)
    return os.path.normpath(os.path.join(CGROUP_ROOT, raw))


def _listen(sec, key, default):
    raw = sec.take(key) or default
    try:
        parse_listen(raw)
    except ValueError as e:
        raise sec.error(str(e), key) from None
    return raw


def parse_listen(text):
    """'[ADDR:]PORT' -> (addr, port); ValueError naming the problem."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]")
    try:
        if addr:
            addr = normalize_address(addr)
        if not _INTEGER.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} is not [ADDR:]PORT") from None
    return addr, int(port)


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?$")


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
        raise sec.error(f"{raw} out of range {lo:g}..{hi:g} s", key)
    return value


# ASCII only: node names travel in the heartbeat datagram as ASCII (and \w
# would let 'mídas' through, to crash hb-send at its first beat).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


# What the kernel takes as a device name (dev_valid_name): 1-15 bytes, no '/', ':' or blank.
_IFNAME = re.compile(r"^(?!\.\.?$)[^\s/:]{1,15}$")


def _node(sec):
    if not _NAME.match(sec.name or "") or len(sec.name) > 64:
        raise sec.error("a [node] section needs a name: [node NAME], ASCII letters, digits, '_', '.', '-' "
                        "(at most 64 characters, a letter first)")
    priority = _int(sec, "priority", 0, 65535, 100)
    paths = {}
    for key in sec.keys("path."):
        name = key[len("path."):]
        if not _NAME.match(name) or len(name) > 64:
            raise sec.error("want path.NAME = ADDRESS (NAME: ASCII letters, digits, '_', '.', '-'; "
                            "at most 64)", key)
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
    import ipaddress
    for word in raw.replace(",", " ").split():
        try:
            iface = ipaddress.ip_interface(word)
        except ValueError:
            raise sec.error(f"{word!r} is not an address[/prefix]", "vips") from None
        out.append(f"{iface.ip}/{iface.network.prefixlen}")
    return tuple(out)


def _hook_command(sec, key):
    import shlex
    raw = sec.take(key, "") or ""
    try:
        shlex.split(raw)
    except ValueError as e:
        raise sec.error(f"cannot split the command: {e}", key) from None
    return raw


def _nodes_hear_each_other(sec, node_secs, nodes, unicast, multicast):
    """Every pair of nodes shares a path it can use, and no address is on two nodes.

    Unicast on a path needs both nodes to have that path, with addresses of
    one family; multicast needs both to have an address of the group's family.
    Each of these configs used to validate and then have nodes that never
    hear each other (each takes over: both hold the VIPs).
    """
    owner = {}
    for n, nsec in zip(nodes, node_secs):
        for name, address in sorted(n.paths.items()):
            key = f"path.{name}"
            if address in owner:
                raise nsec.error(f"{address} is also [node {owner[address][0]}] {owner[address][1]}: "
                                 "every path address must be one node's own", key)
            owner[address] = (n.name, key)
    group_v6 = ":" in multicast if multicast else None
    if multicast and not unicast and not any((":" in a) == group_v6 for n in nodes for a in n.paths.values()):
        raise sec.error(f"{multicast} is IPv{6 if group_v6 else 4} but no path address is: "
                        "with unicast = no no node would hear another", "multicast")
    for i, (a, asec) in enumerate(zip(nodes, node_secs)):
        for b in nodes[:i]:
            by_unicast = unicast and any(p in b.paths and (":" in b.paths[p]) == (":" in addr)
                                         for p, addr in a.paths.items())
            by_multicast = multicast and all(any((":" in addr) == group_v6 for addr in n.paths.values())
                                             for n in (a, b))
            if not (by_unicast or by_multicast):
                how = ("a path of the same name, addresses of one family" if unicast else "")
                if multicast:
                    how += (" or " if how else "") + f"an IPv{6 if group_v6 else 4} path for {multicast}"
                raise asec.error(f"no heartbeat path shared with [node {b.name}] (needs {how})",
                                 f"path.{sorted(a.paths)[0]}")


def _heartbeat(sec, services, nodes, node_secs):
    if sec.name:
        raise sec.error("[heartbeat] takes no name")
    if len(nodes) < 2:
        raise sec.error("[heartbeat] needs at least two [node NAME] sections (director and spare)")
    key_file = sec.take("key_file")
    if not key_file or not key_file.startswith("/"):
        raise sec.error("missing, or not an absolute path", "key_file")
    vip_interface = sec.take("vip_interface")
    if not vip_interface or not _IFNAME.match(vip_interface):
        raise sec.error("missing, or not an interface name", "vip_interface")
    kw = {}
    kw["port"] = _int(sec, "port", 1, 65535, 694)
    # 20 ms is the fastest that keeps hb-send and hb-listen near 1 % of a core each
    # (bench/README.md); faster buys nothing the failover needs: 20 ms with a
    # 100 ms deadtime already fails over in about 0.11 s.
    kw["interval"] = _duration(sec, "interval", 0.02, 60, 0.02)
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
        import ipaddress
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
    if kw["sync_interface"] and not _IFNAME.match(kw["sync_interface"]):
        raise sec.error(f"{kw['sync_interface']!r} is not an interface name", "sync_interface")
    kw["syncid"] = _int(sec, "syncid", 0, 255, 0)
    for key in ("on_acquire", "on_release", "monitor_start", "monitor_stop"):
        kw[key] = _hook_command(sec, key)
    vips = _vips(sec, services)
    paths = sorted({p for n in nodes for p in n.paths})
    if len(paths) > 255:
        raise sec.error("at most 255 heartbeat paths")
    _no_leftovers(sec)
    _nodes_hear_each_other(sec, node_secs, nodes, kw["unicast"], multicast)
    return Heartbeat(key_file, vip_interface, vips, paths=tuple(paths), **kw)


def parse(text, path="<config>"):
    return _build(ini.parse(text, path), path)


@nogc
def load(path, memo=None):
    """The validated Config of the file at path.

    The last good parse of the file is kept (configcache): when the text is
    the same it is the answer; after an edit, each [service] whose section
    text has not changed (and whose [server]s have not) is taken from it
    instead of being parsed and validated again.  The rest is validated as
    always, so every error is still found, at its new line number.

    memo: a dict a long-running program keeps between loads (--every): a
    section whose text has not changed is not parsed again (ini.parse), and
    a [service] section whose keys and values are those of a section already
    built, with the same [server]s, is not validated again.  Such a program
    does without the cache: its memo is cheaper than reading and writing it.
    """
    text = ini.read_text(path)
    if memo is not None:
        sections = ini.parse(text, path, memo.setdefault("ini", {}))
        return _build(sections, path, memo.setdefault("services", {}))
    from . import configcache
    cached = configcache.get(path)
    if cached is not None and cached.text == text:
        return cached.cfg
    if cached is None:
        cfg = _build(ini.parse(text, path), path)
    else:
        reuse = _reusable(cached.text, cached.cfg)
        cfg = _build(ini.parse(text, path, reuse=reuse), path, servers_then=cached.cfg.servers)
    configcache.put(path, text, cfg, cached)
    return cfg


def _reusable(text, cfg):
    """{section text: ("service", name, VirtualService)} of cfg's [service]s in the text it was built from."""
    by_name = {vs.name: vs for vs in cfg.services}
    out = {}
    for kind, name, chunk in ini.chunks(text) or ():
        if kind == "service" and name in by_name:
            out[chunk] = (kind, name, by_name[name])
    return out


def _memo_service(sec, servers, memo, fresh):
    """_service, through memo when the same section was built before (line numbers aside)."""
    if memo is None:
        return _service(sec, servers)
    sig = (sec.name, tuple([(k, v) for k, (v, _) in sec.values.items()]))
    vs = memo.get(sig) or _service(sec, servers)
    fresh[sig] = vs
    return vs


def _build(sections, path, memo=None, servers_then=None):
    glob, servers, services, seen = {}, {}, [], {}
    by_kind = {"global": [], "server": [], "service": [], "reweight": [], "agent": [],
               "heartbeat": [], "node": []}
    for sec in sections:
        if sec.kind not in by_kind:
            raise sec.error(f"unknown section kind {sec.kind!r} (known: {', '.join(by_kind)})")
        by_kind[sec.kind].append(sec)
    for sec in by_kind["global"]:
        if sec.name:
            raise sec.error("[global] takes no name")
        _global(sec, glob)
        _no_leftovers(sec)
    for kind, parse_one in (("reweight", lambda s: _reweight(s, by_kind["server"])), ("agent", _agent)):
        for sec in by_kind[kind]:
            if sec.name:
                raise sec.error(f"[{kind}] takes no name")
            glob[kind] = parse_one(sec)
            _no_leftovers(sec)
    if "reweight" not in glob:
        glob["reweight"] = _reweight(None, by_kind["server"])
    for sec in by_kind["server"]:
        _server(sec, servers)
        _no_leftovers(sec)
    fresh, servers_id = {}, tuple(servers.items())
    if memo is not None and memo.get("servers") != servers_id:
        memo.clear()            # a service's entries depend on the [server]s it names
    for sec in by_kind["service"]:
        if sec.built is not None:   # ini.Reused: valid then, and still so if its [server]s are the same
            vs = sec.built if servers == servers_then else _service(sec.parsed(), servers)
        else:
            vs = _memo_service(sec, servers, memo, fresh)
        if vs.key in seen:
            raise sec.error(f"same virtual service ({vs.key}) as [service {seen[vs.key]}]")
        seen[vs.key] = vs.name
        services.append(vs)
    nodes = tuple(_node(sec) for sec in by_kind["node"])
    heartbeat = None
    for sec in by_kind["heartbeat"]:
        heartbeat = _heartbeat(sec, services, nodes, by_kind["node"])
    if nodes and heartbeat is None:
        raise by_kind["node"][0].error("[node] sections need a [heartbeat] section")
    if memo is not None:        # only a config that validated whole is remembered
        memo.clear()
        memo.update(fresh, servers=servers_id)
    return Config(path=str(path), servers=servers, services=tuple(services),
                  heartbeat=heartbeat, nodes=nodes, **glob)
