#!/usr/bin/python3
"""lab/aalab.py: the active-active lab (issue 18), shared by lab/aa-experiment and
tests/lab/test_active_active.py.  Stdlib only; runs inside the lab guest (IPVS).

A router namespace running BIRD 2 with ECMP (fib_multipath_hash_policy=1; with
ecmp="resilient" the orchestrator mirrors BIRD's route into a resilient nexthop
group, which BIRD 2.0.12 does not program), three directors (d1-d3) on one
bridge with the router and four real servers (r1-r4, direct routing: the VIP
on lo, arp_ignore=1, arp_announce=2), and a client behind the router.  What
runs on a director is the subclass's: Lab.start_director(d) after the
namespace, link and ARP settings are made (aa-experiment: ipvsadm and a
static BIRD protocol; the lab test: lvskit's own scripts).

Roles run as processes of this file: `aalab.py serve NAME` (a real server's
line echo on PORT) and `aalab.py client ...` (the measuring client: long-lived
connections with a request each interval, and a stream of new ones; snapshots
on SIGUSR1, the last on SIGTERM).

Addresses (test-only, inside the guest's namespaces): client net 10.201.0.0/24
(client .10, router .1), fabric 10.200.1.0/24 (router .1, directors .2-.4, real
servers .11-.14), VIP 10.200.9.100:80.
"""
import argparse
import collections
import errno
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PY = "/usr/bin/python3"
ME = os.path.realpath(__file__)
VIP, PORT = "10.200.9.100", 80
FABRIC = "10.200.1."
ROUTER_FABRIC, CLIENT, ROUTER_CLIENT = FABRIC + "1", "10.201.0.10", "10.201.0.1"
DIRECTORS = {"d1": FABRIC + "2", "d2": FABRIC + "3", "d3": FABRIC + "4"}
REALS = {"r1": FABRIC + "11", "r2": FABRIC + "12", "r3": FABRIC + "13", "r4": FABRIC + "14"}
RESILIENT_TABLE = 100            # --ecmp resilient: BIRD's route goes here, the kernel's group to main
BY_ADDR = {a: n for n, a in list(DIRECTORS.items()) + list(REALS.items())}
ROUTER_AS, DIRECTOR_AS = 65000, 65001



def log(msg):
    print("[%7.2f] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


# ------------------------------------------------------------------ namespaces
def sh(argv, input=None, check=True):
    r = subprocess.run(argv, input=input, text=True, capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), (r.stderr or r.stdout).strip()))
    return r


class Net:
    """Namespaces named PREFIX-NAME; every one is deleted by close()."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.procs = []

    def ns(self, name):
        return "%s-%s" % (self.prefix, name)

    def add(self, name):
        sh(["ip", "netns", "add", self.ns(name)])
        self.sysctl(name, {"net/ipv6/conf/all/disable_ipv6": 1, "net/ipv6/conf/default/disable_ipv6": 1})
        self.ip(name, "link set lo up")

    def delete(self, name):
        r = sh(["ip", "netns", "pids", self.ns(name)], check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh(["ip", "netns", "del", self.ns(name)], check=False)

    def ip(self, name, *lines):
        sh(["ip", "-n", self.ns(name), "-batch", "-"], input="\n".join(lines) + "\n")

    def run(self, name, argv, check=True, input=None):
        return sh(["ip", "netns", "exec", self.ns(name)] + list(argv), input=input, check=check)

    def popen(self, name, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(name)] + list(argv), **kw)
        p.lab_node = name
        self.procs.append(p)
        return p

    def sysctl(self, name, values):
        script = "".join("echo %s > /proc/sys/%s\n" % (v, k) for k, v in values.items())
        self.run(name, ["sh", "-ec", script])

    def veth(self, a, dev_a, b, dev_b, mac_a=None):
        """A veth pair between namespaces A and B (B "sw" = a port of the fabric bridge)."""
        sh(["ip", "-n", self.ns(a), "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
            "netns", self.ns(b)])
        if mac_a:
            self.ip(a, "link set %s address %s" % (dev_a, mac_a))

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        r = sh(["ip", "netns", "list"], check=False)
        for line in r.stdout.splitlines():
            n = line.split()[0] if line.split() else ""
            if n.startswith(self.prefix + "-"):
                self.delete(n[len(self.prefix) + 1:])


# ------------------------------------------------------------------ real server role
def role_serve(name):
    """Answer NAME\\n for every line received, on every connection, until SIGTERM."""
    me = (name + "\n").encode()
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", PORT))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    c, _ = ls.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "c")
                continue
            c = key.fileobj
            try:
                data = c.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(c)
                c.close()
                continue
            try:
                c.send(me * data.count(b"\n"))
            except OSError:
                sel.unregister(c)
                c.close()


# ------------------------------------------------------------------ client role
def role_client(a):
    """Long-lived connections (a request every a.interval s) and a stream of new ones.

    On SIGUSR1 (and at the end, on SIGTERM) writes a snapshot (JSON) to a.snapshot:
    every long-lived connection's state and every finished new connection.
    Times are CLOCK_MONOTONIC, shared with the orchestrator."""
    sel = selectors.DefaultSelector()
    now = time.monotonic
    longs, news_done = [], []
    flags = {"snap": False, "stop": False}
    signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("snap", True))
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    seq = [0]

    pauses = []         # [start, end] of every snapshot written: time this loop stood still

    def paused(t1, t2):
        return sum(max(0.0, min(t2, e) - max(t1, b)) for b, e in pauses[-3:])

    def snapshot():
        t_snap = now()
        seq[0] += 1
        out = {"seq": seq[0], "t": now(),
               "long": [{k: c[k] for k in ("id", "sport", "server", "state", "err", "err_t", "last_ok",
                                           "max_wait", "max_wait_t", "replies", "servers", "slow")}
                        for c in longs],
               "new": news_done}
        tmp = a.snapshot + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, a.snapshot)
        pauses.append([t_snap, now()])

    def fail(c, err):
        c["state"], c["err"], c["err_t"] = "dead", err, now()
        try:
            sel.unregister(c["sock"])
        except (KeyError, ValueError):
            pass
        c["sock"].close()

    snapshot()          # seq 1: the handlers are in place, the orchestrator may signal
    t = now()
    for i in range(a.long):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((a.vip, a.port))
        c = {"id": i, "sock": s, "sport": s.getsockname()[1], "server": None, "state": "connecting",
             "err": None, "err_t": None, "last_ok": None, "max_wait": 0.0, "max_wait_t": None,
             "replies": 0, "servers": [], "slow": [], "buf": b"", "sent_at": None,
             "next": t + a.interval * (i / max(1, a.long)), "t0": t}
        longs.append(c)
        sel.register(s, selectors.EVENT_WRITE, ("long", c))
    new_period = 1.0 / a.rate if a.rate > 0 else None
    next_new = now() + 1.0
    pending_new = []

    while not flags["stop"]:
        t = now()
        if flags["snap"]:
            flags["snap"] = False
            snapshot()
        # due sends on the long-lived connections
        for c in longs:
            if c["state"] == "idle" and t >= c["next"]:
                try:
                    c["sock"].send(b"ping\n")
                    c["sent_at"], c["state"] = t, "waiting"
                except OSError as e:
                    fail(c, errno.errorcode.get(e.errno, str(e)))
            elif c["state"] == "waiting" and t - c["sent_at"] > a.long_timeout:
                fail(c, "timeout")
            elif c["state"] == "connecting" and t - c["t0"] > a.long_timeout:
                fail(c, "connect-timeout")
        # new connections
        if new_period and t >= next_new:
            next_new += new_period
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((a.vip, a.port))
            n = {"t": t, "sock": s, "sport": s.getsockname()[1], "buf": b"", "state": "connecting"}
            pending_new.append(n)
            sel.register(s, selectors.EVENT_WRITE, ("new", n))
        for n in list(pending_new):
            if t - n["t"] > a.new_timeout:
                pending_new.remove(n)
                sel.unregister(n["sock"])
                n["sock"].close()
                news_done.append({"t": n["t"], "d": None, "srv": None, "err": "timeout", "sport": n["sport"]})
        for key, ev in sel.select(0.02):
            kind, c = key.data
            s = key.fileobj
            if kind == "new":
                if c["state"] == "connecting":
                    e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if e:
                        pending_new.remove(c)
                        sel.unregister(s)
                        s.close()
                        news_done.append({"t": c["t"], "d": now() - c["t"] - paused(c["t"], now()), "srv": None,
                                          "err": errno.errorcode.get(e, str(e)), "sport": c["sport"]})
                        continue
                    s.send(b"ping\n")
                    c["state"] = "waiting"
                    sel.modify(s, selectors.EVENT_READ, key.data)
                    continue
                try:
                    data = s.recv(4096)
                    err = None if data else "eof"
                except OSError as e:
                    data, err = b"", errno.errorcode.get(e.errno, str(e))
                c["buf"] += data
                if err or b"\n" in c["buf"]:
                    pending_new.remove(c)
                    sel.unregister(s)
                    s.close()
                    srv = c["buf"].split(b"\n")[0].decode() if b"\n" in c["buf"] else None
                    news_done.append({"t": c["t"], "d": now() - c["t"] - paused(c["t"], now()), "srv": srv,
                                      "err": None if srv else err, "sport": c["sport"]})
                continue
            # long-lived
            if c["state"] == "connecting":
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    fail(c, "connect-" + errno.errorcode.get(e, str(e)))
                    continue
                c["state"] = "idle"
                sel.modify(s, selectors.EVENT_READ, key.data)
                continue
            try:
                data = s.recv(4096)
                err = None if data else "eof"
            except OSError as e:
                data, err = b"", errno.errorcode.get(e.errno, str(e))
            if err:
                fail(c, err)
                continue
            c["buf"] += data
            while b"\n" in c["buf"] and c["state"] == "waiting":
                line, c["buf"] = c["buf"].split(b"\n", 1)
                name = line.decode()
                t2 = now()
                # what the network cost, not the time this loop spent writing a snapshot
                wait = t2 - c["sent_at"] - paused(c["sent_at"], t2)
                if wait > 0.15:         # a lost packet costs at least one RTO (200 ms)
                    c["slow"].append([round(c["sent_at"], 3), round(wait, 3)])
                if wait > c["max_wait"]:
                    c["max_wait"], c["max_wait_t"] = wait, c["sent_at"]
                if c["server"] is None:
                    c["server"] = name
                if not c["servers"] or c["servers"][-1] != name:
                    c["servers"].append(name)
                c["replies"] += 1
                c["last_ok"] = t2
                c["state"] = "idle"
                c["next"] = c["sent_at"] + a.interval
    snapshot()



# ------------------------------------------------------------------ BIRD configs
def router_conf(d, bfd_ms, hold, keepalive, bfd_peers, table="main"):
    peers = "\n".join(
        "protocol bgp %s from director { neighbor %s as %d; bfd %s; }"
        % (n, addr, DIRECTOR_AS, "on" if n in bfd_peers else "off") for n, addr in DIRECTORS.items())
    return """log "%(d)s/router.log" all;
timeformat log "%%F %%T.%%3f";
router id %(rid)s;
protocol device { scan time 10; }
# the VIP's best routes from all directors, merged into one ECMP route in the kernel
protocol kernel k4 { kernel table %(table)s; ipv4 { import none; export where net = %(vip)s/32; }; merge paths on; }
protocol bfd { interface "eth1" { min rx interval %(bfd)d ms; min tx interval %(bfd)d ms; multiplier 3; }; }
filter only_vip { if net = %(vip)s/32 then accept; reject; }
template bgp director {
  local %(rid)s as %(ras)d;
  ipv4 { import filter only_vip; export none; };
  hold time %(hold)d; keepalive time %(ka)d;
  connect retry time 2; error wait time 1, 10; connect delay time 1;
}
%(peers)s
""" % {"d": d, "rid": ROUTER_FABRIC, "vip": VIP, "bfd": bfd_ms, "ras": ROUTER_AS, "hold": hold,
       "ka": keepalive, "peers": peers, "table": 254 if table == "main" else table}



def director_conf(d, name, a, announce, proto):
    """Director NAME's bird.conf: ANNOUNCE is the text that defines the announced protocol
    PROTO (a static route, or lvskit's include file); BFD when NAME is in a.bfd."""
    bfd = name in a.bfd
    return """log "%(d)s/%(name)s.log" all;
timeformat log "%%F %%T.%%3f";
router id %(addr)s;
protocol device { scan time 10; }
%(announce)s
%(bfdproto)s
protocol bgp up {
  local %(addr)s as %(das)d; neighbor %(rid)s as %(ras)d;
  ipv4 { import none; export where proto = "%(proto)s"; };
  hold time %(hold)d; keepalive time %(ka)d; bfd %(bfd)s;
  connect retry time 2; error wait time 1, 10; connect delay time 1;
}
""" % {"d": d, "name": name, "addr": DIRECTORS[name], "announce": announce, "proto": proto,
       "das": DIRECTOR_AS, "rid": ROUTER_FABRIC, "ras": ROUTER_AS, "hold": a.hold, "ka": a.keepalive,
       "bfd": "on" if bfd else "off",
       "bfdproto": ('protocol bfd { interface "eth0" { min rx interval %d ms; min tx interval %d ms; '
                    'multiplier 3; }; }' % (a.bfd_ms, a.bfd_ms)) if bfd else ""}


# ------------------------------------------------------------------ the lab
class Lab:
    """The lab; a subclass says what runs on a director (start_director)."""

    def __init__(self, a):
        self.a = a
        self.net = Net("aa%d" % os.getpid())
        self.dir = tempfile.mkdtemp(prefix="aa-")
        self.bird = {}
        self.events = []            # (t, frozenset of next hops) of the VIP route at the router
        self.ev_lock = threading.Condition()
        self.client = None
        self._group_made = False

    # ---- build
    def build(self):
        n = self.net
        for name in ["sw", "router", "client"] + list(REALS):
            n.add(name)
        n.ip("sw", "link add br0 type bridge", "link set br0 up")
        n.veth("client", "eth0", "router", "eth0")
        # A veth hands the router the client socket's own flow hash (skb->l4_hash), and the
        # router's multipath hash then takes it as is; Linux re-draws that hash on every
        # retransmission timeout, so a blackholed flow would wander off to another path by
        # itself.  A remote client's hash never crosses the wire: keep it fixed per flow.
        n.sysctl("client", {"net/core/txrehash": 0})
        n.ip("client", "link set eth0 up", "addr add %s/24 dev eth0" % CLIENT,
             "route add default via %s" % ROUTER_CLIENT)
        n.veth("router", "eth1", "sw", "prouter")
        n.ip("sw", "link set prouter master br0 up")
        n.sysctl("router", {"net/ipv4/ip_forward": 1, "net/ipv4/fib_multipath_hash_policy": 1,
                            "net/ipv4/conf/all/rp_filter": 0, "net/ipv4/conf/default/rp_filter": 0})
        n.ip("router", "link set eth0 up", "addr add %s/24 dev eth0" % ROUTER_CLIENT,
             "link set eth1 up", "addr add %s/24 dev eth1" % ROUTER_FABRIC)
        for i, (r, addr) in enumerate(REALS.items()):
            n.veth(r, "eth0", "sw", "p" + r, mac_a="02:00:0a:c8:01:%02x" % (11 + i))
            n.ip("sw", "link set p%s master br0 up" % r)
            n.sysctl(r, {"net/ipv4/conf/all/arp_ignore": 1, "net/ipv4/conf/all/arp_announce": 2})
            n.ip(r, "link set eth0 up", "addr add %s/24 dev eth0" % addr, "addr add %s/32 dev lo" % VIP,
                 "route add default via %s" % ROUTER_FABRIC)
            n.sysctl(r, {"net/ipv4/conf/eth0/arp_ignore": 1, "net/ipv4/conf/eth0/arp_announce": 2})
        for r in REALS:
            p = n.popen(r, [PY, ME, "serve", r], stdout=subprocess.PIPE, text=True)
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError("real server %s did not start" % r)
        with open(os.path.join(self.dir, "router.conf"), "w") as f:
            f.write(router_conf(self.dir, self.a.bfd_ms, self.a.hold, self.a.keepalive, self.a.bfd,
                                table=RESILIENT_TABLE if self.a.ecmp == "resilient" else "main"))
        if self.a.ecmp == "resilient":
            n.ip("router", *["nexthop add id %d via %s dev eth1" % (int(d[1:]), addr)
                             for d, addr in DIRECTORS.items()])
        self.start_bird("router")
        self.monitor = n.popen("router", ["ip", "-o", "monitor", "route"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._watch, daemon=True).start()
        for d in DIRECTORS:
            self.director_up(d)

    def director_up(self, d):
        """A director from nothing, as after a boot: namespace, link, then start_director."""
        n = self.net
        n.add(d)
        i = int(d[1:])
        n.veth(d, "eth0", "sw", "p" + d, mac_a="02:00:0a:c8:01:%02x" % (1 + i))
        n.ip("sw", "link set p%s master br0 up" % d)
        n.sysctl(d, {"net/ipv4/conf/all/arp_ignore": 1, "net/ipv4/conf/all/arp_announce": 2})
        n.ip(d, "link set eth0 up", "addr add %s/24 dev eth0" % DIRECTORS[d], "addr add %s/32 dev lo" % VIP,
             "route add default via %s" % ROUTER_FABRIC)
        n.sysctl(d, {"net/ipv4/conf/eth0/arp_ignore": 1, "net/ipv4/conf/eth0/arp_announce": 2})
        self.count_syns(d)
        self.start_director(d)

    def start_director(self, d):
        raise NotImplementedError

    def count_syns(self, d):
        """Count the client's SYNs to the VIP that reach director D (tc, ingress of eth0):
        where the router sent each new connection, whatever the director did with it."""
        sh(["tc", "-n", self.net.ns(d), "-batch", "-"], input="qdisc add dev eth0 ingress\n"
           # IPv4 without options (the client's SYNs): TCP flags at byte 33, SYN without ACK
           "filter add dev eth0 parent ffff: protocol ip prio 1 u32 match ip dst %s/32 "
           "match ip protocol 6 0xff match u8 0x02 0x12 at 33 action pass\n" % VIP)

    def syns(self, d):
        """The SYNs counted on director D since its namespace was made."""
        out = self.net.run(d, ["tc", "-s", "filter", "show", "dev", "eth0", "ingress"]).stdout
        m = re.search(r"Sent \d+ bytes (\d+) pkt", out)
        if not m:
            raise RuntimeError("no SYN counter on %s:\n%s" % (d, out))
        return int(m.group(1))

    def start_bird(self, name):
        conf = os.path.join(self.dir, name + ".conf")
        sock = os.path.join(self.dir, name + ".ctl")
        with open(os.path.join(self.dir, name + ".stderr"), "a") as err:
            self.bird[name] = self.net.popen(name, ["bird", "-f", "-c", conf, "-s", sock],
                                             stdout=subprocess.DEVNULL, stderr=err)

    def birdc(self, name, *cmd):
        return sh(["birdc", "-s", os.path.join(self.dir, name + ".ctl")] + list(cmd), check=False).stdout

    def kill_director(self, d):
        """A director dies as a machine: its link goes dark first (nothing more leaves it,
        not even a TCP reset of the BGP session), then every process in it is SIGKILLed."""
        self.net.ip(d, "link set eth0 down")
        t = time.monotonic()
        r = sh(["ip", "netns", "pids", self.net.ns(d)], check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for p in self.net.procs:
            if p.lab_node == d:
                p.wait()
        return t

    def reboot_director(self, d):
        # the bridge's end first: a deleted namespace is torn down later, in the background
        self.net.ip("sw", "link del p%s" % d)
        self.net.delete(d)
        self.director_up(d)

    # ---- the router's route, event by event
    def _watch(self):
        resilient = self.a.ecmp == "resilient"
        for line in self.monitor.stdout:
            t = time.monotonic()
            if VIP not in line or resilient != ("table %d" % RESILIENT_TABLE in line):
                continue
            hops = frozenset(BY_ADDR.get(h, h) for h in re.findall(r"via (?:inet )?(\S+)", line))
            if line.startswith("Deleted"):
                hops = frozenset()
            if resilient:
                self._resilient(hops)
                t = time.monotonic()
            with self.ev_lock:
                self.events.append((t, hops))
                self.ev_lock.notify_all()

    def _resilient(self, hops):
        """Mirror BIRD's multipath route (table RESILIENT_TABLE) into a resilient nexthop
        group used by the main table: a removed path's buckets go to the others, a new
        path takes buckets from the others, and no other bucket moves."""
        ids = sorted(int(d[1:]) for d in hops)
        if not ids:
            self.net.run("router", ["ip", "route", "del", VIP + "/32"], check=False)
            return
        group = "/".join(str(i) for i in ids)
        verb = "replace" if self._group_made else "add"
        self.net.ip("router", "nexthop %s id 100 group %s type resilient buckets 256 idle_timer 0"
                    % (verb, group), "route replace %s/32 nhid 100" % VIP)
        self._group_made = True

    def hops_now(self):
        r = self.net.run("router", ["ip", "-j", "route", "show", VIP + "/32"])
        routes = json.loads(r.stdout or "[]")
        hops = set()
        for rt in routes:
            if "gateway" in rt:
                hops.add(BY_ADDR.get(rt["gateway"], rt["gateway"]))
            for nh in rt.get("nexthops", []):
                hops.add(BY_ADDR.get(nh["gateway"], nh["gateway"]))
        return frozenset(hops)

    def wait_hops(self, want, since, timeout):
        """The time of the first route event after SINCE whose next hops are WANT."""
        end = time.monotonic() + timeout
        with self.ev_lock:
            while True:
                for t, hops in self.events:
                    if t >= since and hops == want:
                        return t
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.ev_lock.wait(min(left, 0.5))

    # ---- flows and the directors they take
    def ipvs_conns(self, d):
        """{client port: (seconds left, real, state)} of director D's IPVS entries for the client."""
        r = self.net.run(d, ["cat", "/proc/net/ip_vs_conn"], check=False)
        got = {}
        for line in r.stdout.splitlines()[1:]:
            f = line.split()
            if len(f) < 9 or f[0] != "TCP" or hexip(f[1]) != CLIENT or int(f[4], 16) != PORT:
                continue
            real = hexip(f[5])
            got[int(f[2], 16)] = (int(f[8]), BY_ADDR.get(real, real), f[7])
        return got

    def carriers(self, dirs=None):
        """{client port: director} for the client's flows: the director whose IPVS entry was
        refreshed last (an ESTABLISHED entry is reset to 900 s by every packet; a director
        the flow left keeps a stale one that counts down)."""
        best = {}
        for d in dirs or DIRECTORS:
            if not os.path.exists("/run/netns/" + self.net.ns(d)):
                continue
            for p, (left, real, state) in self.ipvs_conns(d).items():
                if p not in best or left > best[p][0]:
                    best[p] = (left, d, real)
        return {p: v[1] for p, v in best.items()}, {p: v[2] for p, v in best.items()}

    def ipvs_stats(self, d):
        """{real: connections scheduled} on director D (ipvsadm --stats)."""
        out = self.net.run(d, ["ipvsadm", "-Ln", "--stats"]).stdout
        return {BY_ADDR.get(m.group(1), m.group(1)): int(m.group(2))
                for m in re.finditer(r"->\s+(\d+\.\d+\.\d+\.\d+):\d+\s+(\d+)", out)}

    # ---- the client
    def start_client(self):
        self.snap_path = os.path.join(self.dir, "client.json")
        a = self.a
        self.client = self.net.popen("client", [PY, ME, "client", "--snapshot", self.snap_path, "--long",
                                                str(a.long), "--interval", str(a.interval), "--rate", str(a.rate),
                                                "--new-timeout", str(a.new_timeout),
                                                "--long-timeout", str(a.long_timeout)])
        end = time.monotonic() + 60
        while not os.path.exists(self.snap_path):       # until its signal handlers are in
            if time.monotonic() > end or self.client.poll() is not None:
                raise RuntimeError("the client did not start")
            time.sleep(0.1)

    def snap(self, final=False):
        old = None
        try:
            old = json.load(open(self.snap_path))["seq"]
        except (OSError, ValueError, KeyError):
            pass
        self.client.send_signal(signal.SIGTERM if final else signal.SIGUSR1)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                s = json.load(open(self.snap_path))
                if s["seq"] != old:
                    return s
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("the client wrote no snapshot")

    def close(self):
        try:
            if self.client and self.client.poll() is None:
                self.client.kill()
        finally:
            self.net.close()


# ------------------------------------------------------------------ lvskit's directors
WEIGHTS = {"r1": 2, "r2": 1, "r3": 1, "r4": 1}     # LvskitLab's real servers


def lvskit_config(disk, run, ctl, birdc="birdc"):
    """A director's lvskit.ini in [announce] mode = bgp: www on the VIP, mh, checked."""
    reals = "".join("real.%s = weight=%d\n" % (REALS[r], w) for r, w in WEIGHTS.items())
    return """\
[global]
state_dir = %(disk)s/state
run_dir = %(run)s

[announce]
mode = bgp
include = %(disk)s/lvskit-vips.conf
birdc = %(birdc)s -s %(ctl)s

[service www]
address = %(vip)s
port = %(port)d
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
check_interval = 1
check_timeout = 1
%(reals)s""" % {"disk": disk, "run": run, "birdc": birdc, "ctl": ctl, "vip": VIP, "port": PORT, "reals": reals}


class LvskitLab(Lab):
    """Directors booted as lvskit's units boot them: BIRD (its include file says the VIPs
    are disabled), ipvs-sync, check-real --every 1, lvs-announce --every GATE_EVERY."""

    def __init__(self, a, root, gate_every=0.5):
        super().__init__(a)
        self.root, self.gate_every = root, gate_every

    def cfg(self, d):
        return os.path.join(self.dir, d, "lvskit.ini")

    def script(self, d, name, *args):
        """bin/NAME -c D's config ARGS..., run in director D: a CompletedProcess."""
        return subprocess.run(["ip", "netns", "exec", self.net.ns(d), PY, os.path.join(self.root, "bin", name),
                               "-c", self.cfg(d)] + list(args), capture_output=True, text=True,
                              env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))

    def start_director(self, d):
        disk = os.path.join(self.dir, d)            # kept across a reboot, as a disk is
        run = os.path.join(self.dir, d + "-run")    # empty at every boot, as /run is
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(disk, exist_ok=True)
        ctl = os.path.join(self.dir, d + ".ctl")
        with open(self.cfg(d), "w") as f:
            f.write(lvskit_config(disk, run, ctl, shutil.which("birdc") or "birdc"))
        include = os.path.join(disk, "lvskit-vips.conf")
        with open(os.path.join(self.dir, d + ".conf"), "w") as f:
            f.write(director_conf(self.dir, d, self.a, 'include "%s";' % include, "lvskit_vip"))
        if not os.path.exists(include):
            # the installation: ipvs-sync writes BIRD's include file before BIRD first starts
            # (its `birdc configure` then finds no BIRD: exit 1, one line)
            r = self.script(d, "ipvs-sync")
            if r.returncode != 1 or "BIRD did not take" not in r.stderr:
                raise RuntimeError("%s: first ipvs-sync: exit %d: %s" % (d, r.returncode, r.stderr))
        self.start_bird(d)
        end = time.monotonic() + 60
        while not (os.path.exists(ctl) and "ready." in self.birdc(d, "show", "status")):
            if time.monotonic() > end or self.bird[d].poll() is not None:
                raise RuntimeError("%s: BIRD did not start" % d)
            time.sleep(0.05)
        r = self.script(d, "ipvs-sync")
        if (r.returncode, r.stderr) != (0, ""):
            raise RuntimeError("%s: ipvs-sync: exit %d: %s" % (d, r.returncode, r.stderr))
        env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
        for name, args in (("check-real", ["--every", "1"]), ("lvs-announce", ["--every", str(self.gate_every)])):
            with open(os.path.join(self.dir, "%s-%s.log" % (d, name)), "a") as log_:
                self.net.popen(d, [PY, os.path.join(self.root, "bin", name), "-c", self.cfg(d)] + args,
                               stdout=log_, stderr=log_, env=env)


# ------------------------------------------------------------------ analysis helpers
def hexip(h):
    return socket.inet_ntoa(struct.pack("!I", int(h, 16)))


def pct(a, b):
    return round(100.0 * a / b, 1) if b else None


def new_window(snap, t1, t2):
    return [n for n in snap["new"] if t1 <= n["t"] < t2]


def summarize_new(recs, slow=0.15):
    failed = [r for r in recs if r["srv"] is None]
    slowed = [r for r in recs if r["srv"] is not None and r["d"] > slow]
    return {"count": len(recs), "failed": len(failed),
            "failed_errors": dict(collections.Counter(r["err"] for r in failed)),
            "slow_over_%gs" % slow: len(slowed),
            "max_delay_s": round(max([r["d"] for r in recs if r["d"] is not None] or [0]), 2),
            "failed_start_span_s": ([round(min(r["t"] for r in failed), 2), round(max(r["t"] for r in failed), 2)]
                                    if failed else None)}


def long_outcome(before, after, ids, t_event):
    """For connections IDS: survived (no error, a reply after T_EVENT), reset, other."""
    b = {c["id"]: c for c in before["long"]}
    a_ = {c["id"]: c for c in after["long"]}
    res = collections.Counter()
    stalls = []
    for i in ids:
        c = a_[i]
        if b[i]["state"] == "dead":
            res["already dead"] += 1
        elif c["state"] == "dead":
            res["failed:" + c["err"]] += 1
        elif c["last_ok"] and c["last_ok"] > t_event and len(c["servers"]) == 1:
            res["survived"] += 1
            stalls.append(max([w for t, w in c["slow"] if t >= t_event - 1.5] or [0]))
        else:
            res["no reply since"] += 1
    lost = [round(max([w for t, w in a_[i]["slow"] if t >= t_event - 1.5] or [0]), 2) for i in ids]
    return {"count": len(ids), "outcome": dict(res), "survived_pct": pct(res["survived"], len(ids)),
            "max_stall_s": round(max(stalls or [0]), 2),
            "stalled_over_0.15s": sum(1 for s in stalls if s > 0.15),
            "stalls_s": sorted(x for x in lost if x)}




def options(**over):
    """The lab's knobs with aa-experiment's defaults (its --help says what each is)."""
    a = argparse.Namespace(bfd_ms=100, hold=9, keepalive=3, long=150, interval=1.0, rate=10.0,
                           new_timeout=5.0, long_timeout=45.0, ecmp="hash-threshold", bfd=("d1", "d2"))
    for k, v in over.items():
        if not hasattr(a, k):
            raise TypeError("aalab.options: no option %r" % k)
        setattr(a, k, v)
    return a


def main():
    ap = argparse.ArgumentParser(prog="aalab.py", description="the active-active lab's roles")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("name")
    p = sub.add_parser("client")
    p.add_argument("--snapshot", required=True)
    p.add_argument("--vip", default=VIP)
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--long", type=int, default=100)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--new-timeout", type=float, default=5.0)
    p.add_argument("--long-timeout", type=float, default=45.0)
    a = ap.parse_args()
    if a.cmd == "serve":
        return role_serve(a.name)
    return role_client(a)


if __name__ == "__main__":
    main()
