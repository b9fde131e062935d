"""The lvskit config: one flat INI file, validated whole before anything is touched.

One way through, top to bottom (load):

  read      ini.read_text: the file's text (a regular file only)
  parse     ini.parse: sections of ``key = value`` lines, each value with its line
  validate  one module per section family turns each section into a record,
  build     and build() puts them together into one Config:

  [global]          director name, state and run directories        (here)
  [server NAME]     a real server by name: its address             (services.py)
  [service NAME]    a virtual service and its real servers          (services.py)
                    its check* keys: how check-real tests them      (checks.py)
  [reweight]        how reweight asks real servers for load         (reweight.py)
  [agent]           lvs-agent's capacity formula, on a real server  (reweight.py)
  [heartbeat]       director failover: timings, key, VIPs, hooks    (heartbeat.py)
  [node NAME]       a director (or spare): priority, its addresses  (heartbeat.py)
  [ipvs]            the director's kernel settings (sysctls, timeouts) (kernel.py)
  [announce]        active-passive, or every director announcing by BGP (announce.py)

Every problem raises ConfigError naming file, line, section and key (see
values.py for the typed getters); the result is a tree of frozen records.
configcache.py wraps load from outside: a cron run may take the Config kept
from an earlier run of the same text, and a resident one (--every) validates
again only the [service]s whose keys and values changed.
"""
from ..errors import ConfigError
from ..model import Dest, Service, ServiceKey
from ..model import record
from . import ini, values as v
from .announce import Announce, announce, bgp_rules
from .checks import CHECKS, Check
from .heartbeat import Heartbeat, Node, heartbeat, node
from .kernel import Ipvs, ipvs
from .reweight import CGROUP_ROOT, Agent, Reweight, agent, parse_listen, reweight
from .services import (ON_FAILURE, REMOVAL, REWEIGHT, RealServer, Server, VirtualService, server,
                       service)

__all__ = [
    "load", "parse", "build", "Config", "ConfigError",
    "Server", "RealServer", "VirtualService", "Check", "Reweight", "Agent", "Node", "Heartbeat", "Ipvs", "Announce",
    "Dest", "Service", "ServiceKey",
    "CHECKS", "REMOVAL", "ON_FAILURE", "REWEIGHT", "CGROUP_ROOT", "parse_listen",
]


class Config(record(
        "Config",
        "path",
        director="",
        state_dir="/var/lib/lvskit",
        run_dir="/run/lvskit",
        maint_dir="",           # check-real maintenance flags; "" is STATE_DIR/maint (state.maint_dir)
        check_hook="",          # command check-real runs on every health change
        max_remove=0.5,         # share of its services one ipvs-sync run may delete
        foreign="warn",         # ipvs-sync --check on services nobody accounts for: warn|ignore
        servers={},             # name -> Server (never mutated)
        services=(),            # of VirtualService
        reweight=Reweight(),
        agent=Agent(),
        ipvs=Ipvs(),            # the director's kernel settings
        announce=Announce(),    # how the VIPs reach the router: none (active-passive) or bgp
        heartbeat=None,         # Heartbeat or None
        nodes=())):             # of Node, in file order
    __slots__ = ()

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


def load(path):
    """The validated Config of the file at path; ConfigError naming where it is wrong."""
    return parse(ini.read_text(path), path)


def parse(text, path="<config>"):
    """The validated Config of an INI text (path: its name in error messages)."""
    return build(ini.parse(text, path), path)


KINDS = ("global", "server", "service", "reweight", "agent", "heartbeat", "node", "ipvs", "announce")


def build(sections, path, service=service):
    """The Config of parsed sections, each validated by its family's module.

    service(section, servers) -> VirtualService validates one [service]
    section (a resident program may pass one that remembers, see configcache).
    """
    by_kind = {kind: [] for kind in KINDS}
    for sec in sections:
        if sec.kind not in by_kind:
            raise sec.error(f"unknown section kind {sec.kind!r} (known: {', '.join(KINDS)})")
        by_kind[sec.kind].append(sec)
    fields = {}
    for sec in by_kind["global"]:
        fields.update(_global(sec))
    fields["reweight"] = reweight(None, by_kind["server"])
    for sec in by_kind["reweight"]:
        v.no_name(sec)
        fields["reweight"] = reweight(sec, by_kind["server"])
        v.no_leftovers(sec)
    for sec in by_kind["agent"]:
        v.no_name(sec)
        fields["agent"] = agent(sec)
        v.no_leftovers(sec)
    for sec in by_kind["announce"]:
        fields["announce"] = announce(sec)
    bgp = "announce" in fields and fields["announce"].bgp
    fields["ipvs"] = ipvs(None, bgp)
    for sec in by_kind["ipvs"]:
        fields["ipvs"] = ipvs(sec, bgp)
    servers = {}
    for sec in by_kind["server"]:
        servers[sec.name] = server(sec)
        v.no_leftovers(sec)
    services, seen = [], {}
    for sec in by_kind["service"]:
        vs = service(sec, servers)
        if vs.key in seen:
            raise sec.error(f"same virtual service ({vs.key}) as [service {seen[vs.key]}]")
        seen[vs.key] = vs.name
        services.append(vs)
    if bgp:
        bgp_rules(by_kind, services)
    nodes = tuple(node(sec) for sec in by_kind["node"])
    for sec in by_kind["heartbeat"]:
        fields["heartbeat"] = heartbeat(sec, services, nodes, by_kind["node"])
    if nodes and "heartbeat" not in fields:
        raise by_kind["node"][0].error("[node] sections need a [heartbeat] section")
    return Config(path=str(path), servers=servers, services=tuple(services), nodes=nodes, **fields)


def _global(sec):
    v.no_name(sec)
    out = {"director": sec.take("director", "")}
    hook = sec.take("check_hook")
    if hook:
        out["check_hook"] = hook
    out["max_remove"] = v.percent(sec, "max_remove", 0.5)
    out["foreign"] = v.choice(sec, "foreign", ("warn", "ignore"), "warn")
    for key in ("state_dir", "run_dir", "maint_dir"):
        value = sec.take(key)
        if value is not None:
            if not value.startswith("/"):
                raise sec.error(f"{value!r} is not an absolute path", key)
            out[key] = value
    v.no_leftovers(sec)
    return out
