"""[ipvs]: the director's kernel settings that decide what clients see (kernelsettings.py).

Each key has a default chosen for the clients, and the value ``keep`` leaves
the kernel's setting alone (set by hand or by another tool).
"""
from ..model import record
from . import values as v

KEEP = "keep"


class Ipvs(record(
        "Ipvs",
        # a packet of a connection whose real server is out (weight 0 or deleted) drops
        # that entry, so the client's next connection is scheduled afresh, and deleting a
        # real server expires all its entries at once (Linux 5.9)
        expire_nodest_conn=1,
        # a persistence template of a weight-0 real server expires: the client's next
        # connection goes to a live server, not to the quiesced one it stuck to
        expire_quiescent_template=1,
        tcp_timeout=900,            # seconds an idle established TCP connection is kept
        # seconds a closing one (FIN_WAIT) is kept; wlc and lc count these entries, so this
        # is how long the schedulers remember a real server's past connections: short, so a
        # healed server is not flooded and a spare's synced entries do not skew its schedule
        tcpfin_timeout=10,
        udp_timeout=300,            # seconds an idle UDP "connection" is kept
        # a TCP packet that is not a SYN can start a connection entry: a flow the router
        # moved from another director is scheduled, not answered with a reset by the
        # director's own stack ([announce] mode = bgp; keep, the kernel's own, otherwise)
        sloppy_tcp=None,
        # an ICMP error (PMTU "need to fragment") of a flow with no entry here is
        # scheduled too, instead of dropped ([announce] mode = bgp; keep otherwise)
        schedule_icmp=None)):
    """[ipvs]: each value, or None to leave the kernel's setting alone (keep)."""
    __slots__ = ()


SWITCHES = ("expire_nodest_conn", "expire_quiescent_template", "sloppy_tcp", "schedule_icmp")
BGP_SWITCHES = ("sloppy_tcp", "schedule_icmp")      # on, and refused off, in [announce] mode = bgp
TIMEOUTS = ("tcp_timeout", "tcpfin_timeout", "udp_timeout")
MAX_TIMEOUT = 31 * 86400        # what ipvsadm --set takes without overflowing the kernel's jiffies


def ipvs(sec, bgp=False):
    """The Ipvs of an [ipvs] section (None: absent, every default); bgp: [announce] mode = bgp.

    In bgp mode sloppy_tcp and schedule_icmp default to yes and refuse no and
    keep rather than give in silently: off, every flow the router moves to
    another director is reset (docs/active-active.md measured 150 of 150), and
    keep would leave that to whoever set the kernel.
    """
    d = Ipvs(**({key: 1 for key in BGP_SWITCHES} if bgp else {}))
    if sec is None:
        return d
    v.no_name(sec)
    out = {}
    for key in SWITCHES:
        default = {None: KEEP, 1: "yes", 0: "no"}[getattr(d, key)]
        word = v.choice(sec, key, ("yes", "no", KEEP), default)
        if bgp and key in BGP_SWITCHES and word != "yes":
            raise sec.error(f"{word} with [announce] mode = bgp: flows that move between directors "
                            "need it on (yes, the default there)", key)
        out[key] = None if word == KEEP else int(word == "yes")
    for key in TIMEOUTS:
        raw = sec.take(key)
        if raw == KEEP:
            out[key] = None
        elif raw and not v.INTEGER.fullmatch(raw):
            raise sec.error(f"{raw[:24]!r} is not a number of seconds, nor keep", key)
        else:
            out[key] = v.integer(sec, key, 1, MAX_TIMEOUT, getattr(d, key), text=raw or "")
    v.no_leftovers(sec)
    return Ipvs(**out)
