"""[announce]: how this director's VIPs reach the router, and the rules that mode puts on the rest.

mode = none (the default) is today's active-passive: one director holds the
VIPs ([heartbeat] or by hand).  mode = bgp is active-active (issue 18,
docs/active-active.md): every director announces the VIPs to the router
through a BIRD 2 it shares with the operator, the router spreads flows over
the directors (ECMP), and every director schedules a flow alike (IPVS mh),
so a flow the router moves still reaches its real server.  lvskit never
speaks BGP: ipvs-sync writes one include file of BIRD static protocols
(announcebird.py) and reloads BIRD; the operator's bird.conf owns the
sessions.

bgp_rules() holds the cross-checks of that mode: a config that would reset
flows moving between directors is refused before anything is touched.
"""
import re

from ..model import SCHED_FLAG_ALIASES, record
from . import values as v

MODES = ("none", "bgp")
FALLBACK = SCHED_FLAG_ALIASES["mh-fallback"]       # IP_VS_SVC_F_SCHED1
# A BIRD symbol: a letter or '_' first, then letters, digits, '_' (BIRD's SYM_MAX_LEN is 64;
# the IPv6 protocol's name is this one plus "_v6").
SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,60}$")


class Announce(record(
        "Announce",
        mode="none",
        protocol="lvskit_vip",                  # the BIRD static protocol of the IPv4 VIPs (+ "_v6")
        include="/etc/bird/lvskit-vips.conf",   # the file ipvs-sync writes, bird.conf includes
        birdc="birdc")):                        # command line of BIRD's client (e.g. with -s SOCKET)
    __slots__ = ()

    @property
    def bgp(self):
        return self.mode == "bgp"


def announce(sec):
    """The Announce of an [announce] section (None: absent, mode none)."""
    if sec is None:
        return Announce()
    v.no_name(sec)
    d = Announce()
    out = {"mode": v.choice(sec, "mode", MODES, d.mode)}
    protocol = sec.take("protocol") or d.protocol
    if not SYMBOL.match(protocol):
        raise sec.error(f"{protocol!r} is not a BIRD protocol name (a letter or '_', then letters, "
                        "digits, '_'; at most 61)", "protocol")
    out["protocol"] = protocol
    include = v.path(sec, "include", d.include)
    if not include or include.endswith("/"):
        raise sec.error("want the absolute path of a file", "include")
    out["include"] = include
    out["birdc"] = v.command(sec, "birdc") or d.birdc
    v.no_leftovers(sec)
    return Announce(**out)


def bgp_rules(by_kind, services):
    """Refuse what mode = bgp cannot carry; by_kind: the parsed sections by kind, services
    the VirtualServices of by_kind["service"] (same order)."""
    for sec in by_kind["heartbeat"]:
        raise sec.error("active-passive failover does not mix with [announce] mode = bgp, where "
                        "every director is active: remove [heartbeat] and its [node]s")
    for sec, vs in zip(by_kind["service"], services):
        if vs.key.fwmark:
            raise sec.error("[announce] mode = bgp announces each service's address: a firewall-mark "
                            "service has none", "fwmark")
        if vs.service.scheduler != "mh":
            raise sec.error(f"{vs.service.scheduler!r} with [announce] mode = bgp: every director must "
                            "send a flow to the same real server, set scheduler = mh", "scheduler")
        if vs.check.kind != "none" and not vs.service.flags & FALLBACK:
            raise sec.error("a checked service in [announce] mode = bgp needs mh-fallback: without it "
                            "mh fails the flows of a real server that is out (weight 0) instead of "
                            "sending them to the next one", "sched_flags")
        if vs.reweight != "none":
            raise sec.error(f"reweight = {vs.reweight} with [announce] mode = bgp: directors that "
                            "weigh apart build different mh tables and reset the flows that move "
                            "between them (docs/active-active.md)", "reweight")
