"""[heartbeat] and [node NAME] sections: director failover between two or more nodes."""
import re

from ..model import record
from . import values as v

# ASCII only: node names travel in the heartbeat datagram as ASCII (and \w
# would let 'mídas' through, to crash hb-send at its first beat).
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
# What the kernel takes as a device name (dev_valid_name): 1-15 bytes, no '/', ':' or blank.
IFNAME = re.compile(r"^(?!\.\.?$)[^\s/:]{1,15}$")


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
        handover_grace=5.0,     # s a failback's or handover's new holder forwards unknown TCP to the old
        sync_interface="",
        syncid=0,
        on_acquire="",
        on_release="",
        monitor_start="",
        monitor_stop="",
        paths=())):             # every path name of the [node]s, sorted: a datagram carries the index
    __slots__ = ()


def node(sec):
    if not NAME.match(sec.name or "") or len(sec.name) > 64:
        raise sec.error("a [node] section needs a name: [node NAME], ASCII letters, digits, '_', '.', '-' "
                        "(at most 64 characters, a letter first)")
    priority = v.integer(sec, "priority", 0, 65535, 100)
    paths = {}
    for key in sec.keys("path."):
        name = key[len("path."):]
        if not NAME.match(name) or len(name) > 64:
            raise sec.error("want path.NAME = ADDRESS (NAME: ASCII letters, digits, '_', '.', '-'; "
                            "at most 64)", key)
        paths[name] = v.address(sec, key)
    if not paths:
        raise sec.error("a node needs at least one path.NAME = ADDRESS (its heartbeat address)")
    v.no_leftovers(sec)
    return Node(sec.name, priority, paths)


def heartbeat(sec, services, nodes, node_secs):
    """The Heartbeat of the [heartbeat] section, given the services (for vips) and the nodes."""
    v.no_name(sec)
    if len(nodes) < 2:
        raise sec.error("[heartbeat] needs at least two [node NAME] sections (director and spare)")
    key_file = sec.take("key_file")
    if not key_file or not key_file.startswith("/"):
        raise sec.error("missing, or not an absolute path", "key_file")
    vip_interface = sec.take("vip_interface")
    if not vip_interface or not IFNAME.match(vip_interface):
        raise sec.error("missing, or not an interface name", "vip_interface")
    kw = {}
    kw["port"] = v.integer(sec, "port", 1, 65535, 694)
    # 10 ms is the floor: a Python loop's wake-up jitter and the kernel's
    # timer slack are a fraction of it, not of anything shorter.
    kw["interval"] = v.duration(sec, "interval", 0.01, 60, 0.02)
    kw["deadtime"] = v.duration(sec, "deadtime", 0.01, 3600, max(0.12, 3 * kw["interval"]))
    if kw["deadtime"] < 2 * kw["interval"]:
        raise sec.error(f"deadtime {kw['deadtime']} s is less than two intervals", "deadtime")
    kw["warntime"] = v.duration(sec, "warntime", 0.005, 3600, kw["deadtime"] / 2)
    if kw["warntime"] >= kw["deadtime"]:
        raise sec.error("warntime must be shorter than deadtime", "warntime")
    kw["initdead"] = v.duration(sec, "initdead", 0, 3600, max(10.0, 2 * kw["deadtime"]))
    kw["auto_failback"] = v.boolean(sec, "auto_failback", True)
    kw["failback_delay"] = v.duration(sec, "failback_delay", 0, 86400, 0.0)
    multicast = sec.take("multicast", "")
    if multicast:
        multicast = v.address(sec, "multicast", multicast)
        import ipaddress
        if not ipaddress.ip_address(multicast).is_multicast:
            raise sec.error(f"{multicast} is not a multicast group", "multicast")
    kw["multicast"] = multicast
    kw["unicast"] = v.boolean(sec, "unicast", True)
    if not kw["unicast"] and not multicast:
        raise sec.error("unicast = no needs a multicast group", "unicast")
    kw["realtime"] = v.boolean(sec, "realtime", True)
    kw["arp_count"] = v.integer(sec, "arp_count", 1, 100, 3)
    kw["arp_repeat"] = v.duration(sec, "arp_repeat", 0, 60, 2.0)
    kw["release_wait"] = v.duration(sec, "release_wait", 0, 60, 2.0)
    # Longer than the sync daemon's flush (2 s) plus a retransmission: 0 turns it off.
    kw["handover_grace"] = v.duration(sec, "handover_grace", 0, 60, 5.0)
    kw["sync_interface"] = sec.take("sync_interface", "") or ""
    if kw["sync_interface"] and not IFNAME.match(kw["sync_interface"]):
        raise sec.error(f"{kw['sync_interface']!r} is not an interface name", "sync_interface")
    kw["syncid"] = v.integer(sec, "syncid", 0, 255, 0)
    for key in ("on_acquire", "on_release", "monitor_start", "monitor_stop"):
        kw[key] = v.command(sec, key)
    vips = _vips(sec, services)
    paths = sorted({p for n in nodes for p in n.paths})
    if len(paths) > 255:
        raise sec.error("at most 255 heartbeat paths")
    v.no_leftovers(sec)
    _nodes_hear_each_other(sec, node_secs, nodes, kw["unicast"], multicast)
    return Heartbeat(key_file, vip_interface, vips, paths=tuple(paths), **kw)


def _vips(sec, services):
    raw = sec.take("vips", "services") or "services"
    out = []
    if raw.strip() == "services":
        for vs in services:
            if vs.key.address and vs.key.address not in [x.split("/")[0] for x in out]:
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


def _nodes_hear_each_other(sec, node_secs, nodes, unicast, multicast):
    """Every pair of nodes shares a path it can use, and no address is on two nodes.

    Unicast on a path needs both nodes to have that path, with addresses of
    one family; multicast needs both to have an address of the group's family.
    Without this a config could validate and have nodes that never hear each
    other (each takes over: both hold the VIPs).
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
