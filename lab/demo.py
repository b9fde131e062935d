#!/usr/bin/python3
"""make demo: the IME cluster of the slides in a box, played with the real scripts.

    lab/guest-run -- /usr/bin/python3 lab/demo.py [--short] [--no-plot]

Builds the seed's network in namespaces (lab/topo.py, direct routing): a
client, the director midas, the spare estepe, the real servers hades, kama,
apolo and cronos.  The config is conf/lvskit.ini itself, its 192.168.45.x
addresses replaced by the lab's before anything runs.  Then the story:

  1. traffic to the VIP spreads per scheduler and weights (www wlc 2/1/3,
     ssh rr, xdmcp wlc 10/7/10/1 persistent);
  2. hades's services die: check-real takes it out, it heals and returns;
  3. kama gets busy (two CPU burners): reweight lowers its xdmcp weight, new
     sessions go elsewhere; the burners stop and its weight climbs back;
  4. midas dies: estepe takes the VIP over, midas returns and takes it back.

Prints a timeline and a summary of measured figures, writes them as JSON and
a picture (PNG, when matplotlib is there) to $LAB_OUT (the host's
LAB_OUT_HOST).  `run(short=True)` is the shortened scenario tests/lab/test_demo.py
asserts on.  Everything it starts dies with the lab, also on Ctrl-C.

Every namespace of the guest shares one kernel and so one load average, so
each real server is also a cgroup v2 (as on a real machine: the slice where
its services run) holding its services, its lvs-agent and, on kama, the
burners; the agents read their own cgroup's CPU time (`[agent] cgroup`), as
tests/lab/test_reweight.py does.  `ip netns exec` mounts a fresh /sys without
/sys/fs/cgroup, so the demo mounts the cgroup v2 hierarchy a second time in a
temporary directory, which every namespace's processes see.
"""
import collections
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "lib"))
from topo import Lab, in_cgroup, remove_cgroup, unique_prefix  # noqa: E402

PY = "/usr/bin/python3"
SHIPPED = os.path.join(ROOT, "conf", "lvskit.ini")
NODE = os.path.join(HERE, "demo_node.py")

# The guest emulates its CPUs, far slower than the host: the shipped heartbeat
# timings are the host's; here a slower heartbeat and a longer silence before
# a takeover, which the guest holds without a false takeover while the whole
# demo runs.
GUEST_HEARTBEAT = {"interval": "200ms", "deadtime": "1500ms", "warntime": "800ms", "initdead": "5s"}
# Checks every second instead of every 5 s: shorter phases; fall/rise stay the shipped ones.
GUEST_CHECK = {"check_interval": "1", "check_timeout": "1"}
LOOP = 1            # check-real --every / reweight --every, seconds
SAMPLE = 0.5        # how often the demo reads the kernel tables
SWITCH_SLACK = 0.1  # s the demo may read the client's ARP change late (its thread's wake-up)

# seconds per phase: (full, short)
PHASES = {
    "steady": (30, 14),
    "after_detection": (10, 5),
    "after_return": (8, 3),
    "busy": (30, 14),
    "after_takeover": (20, 20),     # SPARE_WINDOW: the spare's shares are judged over its first 20 s
    "after_failback": (10, 5),
}
USERS_FIRST = "10.200.16.1"      # the simulated X terminals (one address per XDMCP session)
USERS_NET = "10.200.16.0/20"
BURNERS = 2                      # the guest's CPUs
# The burners get about 2/3 of the guest's CPUs (the rest of the demo runs on the same two), so
# kama's capacity settles near 0.4 with the shipped cpu_full = 1: its weight falls below half.
LOW, BACK = 0.5, 0.9               # fractions of kama's full weight: loaded, recovered
INITIAL = {"hades": "h", "kama": "k", "apolo": "a", "cronos": "c"}
# What the client must see (issue "what the client sees"), asserted on every run:
BACK_WINDOW = 10.0      # s after check-real puts the healed server back ...
BACK_SHARE = 0.8        # ... in which it gets at least this much of its www weight share
SPARE_WINDOW = 20.0     # s of the spare's first traffic, whose www shares ...
SPARE_POINTS = 0.10     # ... are each within this of the weights' shares


class DemoError(RuntimeError):
    pass


def _neighbours(data):
    """(destination, link-layer address) of each RTM_NEWNEIGH in a netlink datagram."""
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        if length < 16:
            break
        if kind == 28:                                  # RTM_NEWNEIGH: nlmsghdr, ndmsg, attributes
            attrs, dst, mac = at + 16 + 12, None, None
            while attrs + 4 <= at + length:
                alen, atype = struct.unpack_from("=HH", data, attrs)
                if alen < 4:
                    break
                value = data[attrs + 4:attrs + alen]
                if atype == 1:
                    dst = value                         # NDA_DST
                elif atype == 2:
                    mac = value                         # NDA_LLADDR
                attrs += (alen + 3) & ~3
            yield dst, mac
        at += (length + 3) & ~3


# --- the config: the shipped file with lab addresses ----------------------------------------
def _sections(text):
    """[(kind, name, [lines])] keeping every line (comments too)."""
    out = [("", "", [])]
    for line in text.splitlines():
        m = re.match(r"^\s*\[\s*(\w+)(?:\s+([^\]\s]+))?\s*\]", line)
        if m:
            out.append((m.group(1), m.group(2) or "", []))
        out[-1][2].append(line)
    return out


def derive(text, addresses, overrides):
    """The shipped config with every address in `addresses` replaced and keys set.

    overrides: {(kind, name or "*"): {key: value}}; a key present is replaced,
    a missing one appended to the section.  Comments are substituted too: no
    example address may survive anywhere in the file.
    """
    pattern = re.compile(r"(?<![\d.])(%s)(?![\d.])" % "|".join(re.escape(a) for a in addresses))
    out = []
    for kind, name, lines in _sections(text):
        want = dict(overrides.get((kind, "*"), {}))
        want.update(overrides.get((kind, name), {}))
        body = []
        for line in lines:
            line = pattern.sub(lambda m: addresses[m.group(1)], line)
            m = re.match(r"^(\s*)([\w.]+)(\s*=\s*)(.*)$", line)
            if m and m.group(2) in want:
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{want.pop(m.group(2))}"
            body.append(line)
        while body and not body[-1].strip():
            body.pop()
        body += [f"{k} = {v}" for k, v in want.items() if v is not None]
        if body:
            out += body + [""]
    return "\n".join(out)


# --- the kernel table -----------------------------------------------------------------------
def parse_table(text, names, counts=False):
    """`ipvsadm -Ln` -> {"TCP 10.200.1.100:80": {server name: weight}}; with counts, the
    value is "weight/active/inactive" (why a least-connection scheduler picks whom)."""
    table, svc = {}, None
    for line in text.splitlines():
        m = re.match(r"^(TCP|UDP)\s+(\S+)\s", line)
        if m:
            svc = f"{m.group(1)} {m.group(2)}"
            table[svc] = {}
            continue
        m = re.match(r"^\s+->\s+([\d.]+):\d+\s+\w+\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m and svc:
            table[svc][names.get(m.group(1), m.group(1))] = "/".join(m.groups()[1:]) if counts else int(m.group(2))
    return table


class Demo:
    def __init__(self, short=False, out=None, say=print):
        self.short, self.say = short, say
        self.dur = {k: v[1 if short else 0] for k, v in PHASES.items()}
        self.out = out or os.environ.get("LAB_OUT") or tempfile.mkdtemp(prefix="lvskit-demo-out-")
        os.makedirs(self.out, exist_ok=True)
        self.base = tempfile.mkdtemp(prefix="lvskit-demo-")
        self.t0 = time.monotonic()
        self.lab = None
        self.events, self.samples, self.records = [], [], []
        self._log_pos, self._last_event_idx = 0, 0
        self.figures = {}
        self.dead = set()
        self._stop = threading.Event()
        self._sampler = None
        self.cg_mount, self.cgroups, self.burners = None, {}, []

    # --- small helpers ----------------------------------------------------------------------
    def now(self):
        return time.monotonic() - self.t0

    def node_dir(self, node):
        d = os.path.join(self.base, node)
        os.makedirs(d, exist_ok=True)
        return d

    def script(self, name, node, *args):
        return [PY, os.path.join(ROOT, "bin", name), "-c", self.cfg_path[node]] + list(args)

    def env(self):
        return {**os.environ, "LVSKIT_NO_SYSLOG": "1"}

    def lab_node(self, node):
        return self.labname.get(node, node)

    def run(self, node, argv, check=True, **kw):
        r = self.lab.run(self.lab_node(node), argv, env=self.env(), **kw)
        if check and r.returncode != 0:
            raise DemoError(f"{node}: {' '.join(map(str, argv))[:120]}: exit {r.returncode}: "
                            f"{(r.stderr or r.stdout).strip()[-400:]}")
        return r

    def popen(self, node, argv, log):
        f = open(os.path.join(self.node_dir(node), log), "a")
        return self.lab.popen(self.lab_node(node), argv, stdout=f, stderr=subprocess.STDOUT,
                              env=self.env(), stdin=subprocess.DEVNULL)

    # --- setup -------------------------------------------------------------------------------
    def setup(self):
        from lvskit import config
        shipped = config.load(SHIPPED)
        self.servers = list(shipped.servers)                       # hades, kama, apolo, cronos
        nodes = sorted(shipped.nodes, key=lambda n: (-n.priority, n.name))
        self.director, self.spare = nodes[0].name, nodes[1].name   # midas, estepe
        self.services = {vs.name: vs for vs in shipped.services}
        self.check = {vs.name: vs.check for vs in shipped.services}
        self.configured = {vs.name: {r.name: r.dest.weight for r in vs.reals} for vs in shipped.services}
        self.scale = shipped.reweight.scale
        self.reweighted = {vs.name for vs in shipped.services if vs.reweight != "none"}
        self.hb_shipped = shipped.heartbeat

        t = time.monotonic()
        self.lab = Lab(prefix=unique_prefix("demo"), mode="dr", reals=tuple(self.servers), spare=True)
        self.lab.up()
        lab = self.lab
        self._make_cgroups()
        self.labname = {self.director: "director", self.spare: "spare"}
        self.addr = {self.director: lab.addr["director"], self.spare: lab.addr["spare"],
                     **{s: lab.addr[s] for s in self.servers}, "client": lab.addr["client"]}
        self.names = {a: n for n, a in self.addr.items()}

        # the example's addresses -> the lab's, derived from the shipped file itself
        amap = {}
        vips = {vs.service.key.address for vs in shipped.services if vs.service.key.address}
        if len(vips) != 1:
            raise DemoError("the demo expects one VIP in conf/lvskit.ini")
        self.vip_example = vips.pop()
        amap[self.vip_example] = lab.vip
        for s in self.servers:
            amap[shipped.servers[s].address] = lab.addr[s]
        front = self.vip_example.rsplit(".", 1)[0] + "."
        self.cross = []
        for i, path in enumerate(sorted(nodes[0].paths)):
            a, b = nodes[0].paths[path], nodes[1].paths[path]
            if a.startswith(front):
                amap[a], amap[b] = lab.addr["director"], lab.addr["spare"]
            else:                  # a crossover cable: a veth pair straight between the two
                dev, net = f"eth{1 + len(self.cross)}", f"10.200.{3 + len(self.cross)}."
                amap[a], amap[b] = net + "1", net + "2"
                self.cross.append((path, dev, net))
        self.amap = amap
        for path, dev, net in self.cross:
            d, s = lab.ns["director"], lab.ns["spare"]
            subprocess.run(["ip", "-n", d, "link", "add", dev, "type", "veth", "peer", "name", dev,
                            "netns", s], check=True)
            for ns, host in ((d, 1), (s, 2)):
                subprocess.run(["ip", "-n", ns, "-batch", "-"], check=True, text=True,
                               input=f"addr add {net}{host}/24 dev {dev}\nlink set {dev} up\n")

        key = os.path.join(self.base, "hb.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(key, 0o600)
        self.cfg_path = {}
        text = open(SHIPPED).read()
        from lvskit import config as cfgmod
        for node in [self.director, self.spare] + self.servers:
            d = self.node_dir(node)
            ov = {("global", ""): {"state_dir": f"{d}/state", "run_dir": f"{d}/run",
                                   "maint_dir": f"{d}/state/maint"},
                  ("heartbeat", ""): {"key_file": key, **GUEST_HEARTBEAT,
                                      "monitor_start": f"{d}/monitor-start",
                                      "monitor_stop": f"{d}/monitor-stop"},
                  ("agent", ""): {"state_file": f"{d}/agent-state", "utmp": f"{d}/utmp"}}
            if node in (self.director, self.spare):
                ov[("global", "")]["director"] = node
            else:
                ov[("agent", "")]["cgroup"] = self.cgroups[node]
            for name, check in self.check.items():
                if check.kind != "none":
                    ov[("service", name)] = dict(GUEST_CHECK)
            derived = derive(text, amap, ov)
            if re.search(r"192\.168\.", derived):
                raise DemoError("an example address survived the substitution")
            path = os.path.join(d, "lvskit.ini")
            with open(path, "w") as f:
                f.write(derived)
            self.cfg_path[node] = path
            cfgmod.load(path)       # validated before anything runs: ConfigError stops here
            if node in (self.director, self.spare):
                self._hooks(node)
        cfg = cfgmod.load(self.cfg_path[self.director])
        self.hb = cfg.heartbeat
        self.vip = lab.vip
        self.svc_of = {f"{'TCP' if vs.service.key.protocol == 6 else 'UDP'} "
                       f"{vs.service.key.address}:{vs.service.key.port}": vs.name for vs in cfg.services}
        self.say(self._intro(time.monotonic() - t))

        # real servers: lvs-realserver puts the VIP on lo (topo's own copy removed first)
        for s in self.servers:
            self.lab.run(s, f"ip addr del {lab.vip}/32 dev lo; ip addr del {lab.vip6}/128 dev lo")
        jobs = [self.lab.popen(s, self.script("lvs-realserver", s, "up"), env=self.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for s in self.servers]
        for s, p in zip(self.servers, jobs):
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                raise DemoError(f"lvs-realserver up on {s}: {out.strip()}")
        self.servers_up = {}
        for s in self.servers:
            self.start_services(s)
        for s in self.servers:
            self._wait_ready(s)
            self.popen(s, in_cgroup(self.cgroups[s], self.script("lvs-agent", s, "--listen")), "lvs-agent.log")
        self.event("real servers up", f"lvs-realserver up, services, lvs-agent --listen on {len(self.servers)}")

        # the users' addresses on the client, and the routes back to them
        import ipaddress
        n_users = int(sum(self.dur.values()) / 0.25) + 400
        self.users = [str(ipaddress.ip_address(USERS_FIRST) + i) for i in range(n_users)]
        lab.run("client", ["ip", "-batch", "-"],
                input="".join(f"addr add {u}/32 dev eth0\n" for u in self.users))
        for node in [self.director, self.spare] + self.servers:
            self.run(node, ["ip", "route", "add", USERS_NET, "via", lab.addr["client"]])

        # directors: the VIP is theirs to elect; the table loaded on both (cron/boot ipvs-sync)
        lab.run("director", f"ip addr del {lab.vip}/32 dev eth0; ip addr del {lab.vip6}/128 dev eth0")
        for node in (self.director, self.spare):
            t = time.monotonic()
            self.run(node, self.script("ipvs-sync", node))
            self.event(f"ipvs-sync on {node}", f"table loaded in {time.monotonic() - t:.1f} s", node=node)
        for node in (self.director, self.spare):
            self.start_heartbeat(node)
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()
        if not self.wait(lambda: self.holder() == self.director and self.weights_ready(), 120):
            raise DemoError(f"{self.director} did not become active with check-real's and reweight's "
                            f"first rounds: {self.logs(self.director)}")
        self.event(f"{self.director} active", "hb-listen elected it: VIP + ARP, takeover ran "
                   "monitor_start (check-real, reweight)")

        self.watch_vip_neighbour()
        self.watch_resets()
        self.client_log = os.path.join(self.out, "client.jsonl")
        open(self.client_log, "w").close()
        self.client = self.lab.popen("client", [PY, NODE, "client", self.client_log, lab.vip,
                                                "--users", f"{self.users[0]},{len(self.users)}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # xdmcp sessions come from self.users in order
        self.wait(lambda: self.read_log() or len(self.records) > 5, 30)
        self.event("client started", "www every 0.1 s, xdmcp every 0.25 s (new user each), ssh every 1 s")

    def _hooks(self, node):
        """monitor_start/stop: what `systemctl start/stop check-real reweight` is on a director."""
        d = self.node_dir(node)
        cfg = self.cfg_path[node]
        start = ["#!/bin/sh", "# takeover's monitor_start: the checks and reweight run on the active director only",
                 f"mkdir -p {d}/run"]
        for prog in ("check-real", "reweight"):
            start.append(f"if ! kill -0 $(cat {d}/run/{prog}.pid 2>/dev/null) 2>/dev/null; then "
                         f"setsid {PY} {ROOT}/bin/{prog} -c {cfg} -v --every {LOOP} "
                         f">>{d}/{prog}.log 2>&1 </dev/null & echo $! > {d}/run/{prog}.pid; fi")
        stop = ["#!/bin/sh"] + [f"[ -f {d}/run/{p}.pid ] && kill $(cat {d}/run/{p}.pid) 2>/dev/null; "
                                f"rm -f {d}/run/{p}.pid" for p in ("check-real", "reweight")] + ["exit 0"]
        for name, lines in (("monitor-start", start), ("monitor-stop", stop)):
            with open(os.path.join(d, name), "w") as f:
                f.write("\n".join(lines) + "\n")
            os.chmod(os.path.join(d, name), 0o755)

    def _intro(self, took):
        hb = self.hb_shipped
        lines = [f"lvskit demo{' (short)' if self.short else ''}: the IME table of conf/lvskit.ini in "
                 f"the lab (namespaces, {'guest kernel ' + os.environ['LAB_KERNEL'] if os.environ.get('LAB_KERNEL') else 'this kernel'}, "
                 f"real IPVS), lab up in {took:.1f} s",
                 "  addresses of the shipped file replaced before anything runs:"]
        for a, b in self.amap.items():
            who = self.names.get(b) or ("VIP" if b == self.lab.vip else "crossover")
            lines.append(f"    {a:<15} -> {b:<14} {who}")
        lines.append(f"  config per machine: {self.base}/NODE/lvskit.ini (state, run, key in temp dirs)")
        lines.append(f"  the emulated guest runs ~15x slower than the host, so: heartbeat interval "
                     f"{hb.interval * 1000:g} ms -> {GUEST_HEARTBEAT['interval']}, deadtime "
                     f"{hb.deadtime * 1000:g} ms -> {GUEST_HEARTBEAT['deadtime']}, initdead {GUEST_HEARTBEAT['initdead']};")
        lines.append(f"  check_interval -> {GUEST_CHECK['check_interval']} s, check_timeout -> "
                     f"{GUEST_CHECK['check_timeout']} s (fall/rise as shipped); check-real and reweight "
                     f"--every {LOOP}")
        lines.append("  the host's fast figures are in bench/README.md (quoted in the summary)")
        lines.append("  every namespace of one VM shares one load average: each real server is a cgroup v2 "
                     "too, its lvs-agent reads that cgroup's CPU time")
        lines.append("  table columns: " + ", ".join(f"{v}={k}" for k, v in INITIAL.items()))
        lines.append("")
        lines.append(f"  {'time':>7}  {'event':<36} {'table on the active director':<50} client since last event")
        return "\n".join(lines)

    def start_services(self, s):
        p = self.lab.popen(s, in_cgroup(self.cgroups[s], [PY, NODE, "serve", s]), stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        self.servers_up[s] = p

    def _wait_ready(self, s):
        p = self.servers_up[s]
        import select
        r, _, _ = select.select([p.stdout], [], [], 60)
        if not r or p.stdout.readline().strip() != "READY":
            raise DemoError(f"the services on {s} did not start")

    def kill_services(self, s):
        p = self.servers_up.pop(s)
        p.kill()
        p.wait()

    def _make_cgroups(self):
        """A cgroup v2 per real server, in a second mount of the hierarchy (see the module doc)."""
        mount = tempfile.mkdtemp(prefix="lvskit-demo-cgroup2-")
        r = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", mount], capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(mount)
            raise DemoError(f"mount -t cgroup2: {r.stderr.strip()}")
        self.cg_mount = mount
        for s in self.servers:
            self.cgroups[s] = os.path.join(mount, self.lab.ns[s])
            os.mkdir(self.cgroups[s])

    def start_burners(self, s):
        self.burners += [self.lab.popen(s, in_cgroup(self.cgroups[s], [PY, "-c", "while True: pass"]),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for _ in range(BURNERS)]

    def stop_burners(self):
        while self.burners:
            p = self.burners.pop()
            p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass            # gone with the lab at the latest

    def _remove_cgroups(self):
        """After the lab is gone: the cgroups, then the second mount (never a recursive delete)."""
        for cg in self.cgroups.values():
            remove_cgroup(cg)
        self.cgroups = {}
        if self.cg_mount:
            if subprocess.run(["umount", self.cg_mount]).returncode != 0:
                subprocess.run(["umount", "-l", self.cg_mount])
            if not os.path.ismount(self.cg_mount):
                os.rmdir(self.cg_mount)
                self.cg_mount = None

    def start_heartbeat(self, node):
        """hb-listen, and hb-send once hb-listen listens.

        Heartbeats that say "standby" make the active peer hand the VIP back
        (auto_failback, failback_delay 0): if they went out while this node's
        hb-listen was still starting (seconds in the guest), nobody would take
        the VIP until it did.
        """
        log = os.path.join(self.node_dir(node), "hb-listen.log")
        seen = os.path.getsize(log) if os.path.exists(log) else 0
        self.popen(node, self.script("hb-listen", node, "-v"), "hb-listen.log")

        def listening():
            with open(log, errors="replace") as f:
                f.seek(seen)
                return "listening on port" in f.read()
        if not self.wait(listening, 60):
            raise DemoError(f"hb-listen did not start on {node}: {self.logs(node)}")
        self.popen(node, self.script("hb-send", node), "hb-send.log")

    def logs(self, node, n=15):
        out = []
        d = self.node_dir(node)
        for name in sorted(os.listdir(d)):
            if name.endswith(".log"):
                lines = open(os.path.join(d, name), errors="replace").read().splitlines()[-n:]
                out.append(f"--- {node}/{name}\n" + "\n".join(lines))
        return "\n".join(out)

    # --- watching ----------------------------------------------------------------------------
    def _read_node(self, node):
        r = self.lab.run(self.lab_node(node), "ipvsadm -Ln; echo @@; ip -o -4 addr show dev eth0")
        table_text, _, addrs = r.stdout.partition("@@")
        return self._services(table_text), f" {self.vip}/" in addrs

    def _services(self, text, counts=False):
        """parse_table keyed by the config's service names (www, ssh, xdmcp)."""
        return {self.svc_of.get(k, k): v for k, v in parse_table(text, self.names, counts).items()}

    def _sample_loop(self):
        while not self._stop.is_set():
            t = self.now()
            for node in (self.director, self.spare):
                if node in self.dead:
                    continue
                try:
                    table, vip = self._read_node(node)
                except Exception:       # a namespace going away at the end
                    continue
                self.samples.append({"t": t, "node": node, "vip": vip, "table": table})
            self._stop.wait(SAMPLE)

    def latest(self, node):
        for s in reversed(self.samples):
            if s["node"] == node:
                return s
        return None

    def holder(self):
        """The node that holds the VIP (by the latest samples); None if none or both."""
        held = [n for n in (self.director, self.spare)
                if n not in self.dead and (self.latest(n) or {}).get("vip")]
        return held[0] if len(held) == 1 else None

    def table(self, node=None):
        s = self.latest(node or self.holder() or self.director)
        return s["table"] if s else {}

    def weights_ready(self):
        """check-real and reweight have done a round on the active director."""
        d = os.path.join(self.node_dir(self.director), "state")
        return os.path.exists(os.path.join(d, "health.json")) and \
            os.path.exists(os.path.join(d, "weights.json"))

    def wait(self, cond, timeout, step=0.1):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(step)
        return cond()

    def wait_sample(self, cond, timeout):
        """Wait for a new sample that satisfies cond(sample); returns its time or None."""
        seen = len(self.samples)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for s in self.samples[seen:]:
                seen += 1
                if cond(s):
                    return s["t"]
            time.sleep(0.05)
        return None

    def sleep(self, seconds):
        time.sleep(seconds)
        self.read_log()

    def read_log(self):
        with open(self.client_log) as f:
            f.seek(self._log_pos)
            data = f.read()
        complete = data[:data.rfind("\n") + 1]
        self._log_pos += len(complete.encode())
        for line in complete.splitlines():
            rec = json.loads(line)
            rec["t"] -= self.t0
            self.records.append(rec)
        return False

    def window(self, t1, t2, svc=None):
        return [r for r in self.records if t1 <= r["t"] < t2 and (svc is None or r["svc"] == svc)]

    # --- the timeline --------------------------------------------------------------------------
    def fmt_table(self, table):
        parts = []
        for svc in self.configured:
            if svc in table:
                ws = table[svc]
                parts.append(svc + " " + " ".join(f"{INITIAL.get(n, n)}{w}" for n, w in ws.items()))
        return "  ".join(parts) if parts else "-"

    def event(self, what, detail="", t=None, node=None):
        t = self.now() if t is None else t
        if getattr(self, "client_log", None):
            self.read_log()
        recs = self.records[self._last_event_idx:]
        self._last_event_idx = len(self.records)
        ok = sum(1 for r in recs if r["server"])
        client = f"{ok} ok / {len(recs) - ok} failed" if getattr(self, "client_log", None) else ""
        table = self.fmt_table(self.table(node)) if self.samples or node else "-"
        if node and not self.samples:
            try:
                table = self.fmt_table(self._read_node(node)[0])
            except Exception:
                table = "-"
        self.events.append({"t": t, "what": what, "detail": detail, "table": table, "client": client})
        self.say(f"  {t:6.1f} s  {what:<36} {table:<50} {client}")
        if detail:
            self.say(f"  {'':>9}  ({detail})")

    # --- the phases -----------------------------------------------------------------------------
    def shares(self, recs):
        c = collections.Counter(r["server"] for r in recs if r["server"])
        n = sum(c.values())
        return {k: v / n for k, v in c.items()} if n else {}

    def phase_steady(self):
        t1 = self.now()
        self.sleep(self.dur["steady"])
        t2 = self.now()
        f = {"t1": t1, "t2": t2}
        for svc in self.configured:
            recs = self.window(t1, t2, svc)
            conf = self.configured[svc]
            total = sum(conf.values())
            f[svc] = {"sent": len(recs), "failed": sum(1 for r in recs if not r["server"]),
                      "share": self.shares(recs),
                      "expected": {n: w / total for n, w in conf.items()}}
        self.figures["steady"] = f
        self.event("1. steady: shares measured",
                   "; ".join(f"{svc} " + " ".join(f"{n} {f[svc]['share'].get(n, 0):.0%}"
                                                  for n in self.configured[svc])
                             + f" (weights {'/'.join(map(str, self.configured[svc].values()))})"
                             for svc in self.configured))

    def phase_hades(self):
        victim = "hades"
        services = [svc for svc, conf in self.configured.items()
                    if victim in conf and self.check[svc].kind != "none"]
        t_kill = self.now()
        self.kill_services(victim)
        self.event(f"2. {victim}'s services killed", "http 80, ssh 22, xdmcp 177 all gone")
        fall = max(self.check[s].fall for s in services)
        bound = fall * float(GUEST_CHECK["check_interval"]) + LOOP + 3.0
        t_out = self.wait_sample(lambda s: s["node"] == self.director and all(
            s["table"].get(svc, {}).get(victim, 1) == 0 for svc in services), bound + 30)
        if t_out is None:
            raise DemoError(f"check-real did not take {victim} out: {self.logs(self.director)}")
        self.event(f"check-real took {victim} out", f"weight 0 in {', '.join(services)} "
                   f"{t_out - t_kill:.1f} s after the kill (fall {fall} x {GUEST_CHECK['check_interval']} s)",
                   t=t_out)
        self.sleep(self.dur["after_detection"])
        t_heal = self.now()
        self.start_services(victim)
        self._wait_ready(victim)
        self.event(f"{victim}'s services restarted")
        want = {svc: self.configured[svc][victim] for svc in services}
        t_back = self.wait_sample(lambda s: s["node"] == self.director and all(
            s["table"].get(svc, {}).get(victim, 0) > 0 for svc in services), 60)
        if t_back is None:
            raise DemoError(f"{victim} did not return: {self.logs(self.director)}")
        self.event(f"check-real put {victim} back", f"{t_back - t_heal:.1f} s after the restart "
                   f"(rise {self.check[services[0]].rise}); www weight back to {want.get('www')}", t=t_back)
        self.sleep(self.dur["after_return"])
        before = self.window(t_kill, t_out)
        after = self.window(t_out, t_heal)
        self.figures["hades"] = {
            "kill": t_kill, "out": t_out, "heal": t_heal, "back": t_back,
            "detect_s": t_out - t_kill, "bound_s": bound, "back_s": t_back - t_heal,
            "sent_before_detection": len(before), "failed_before_detection": sum(1 for r in before if not r["server"]),
            "sent_after_detection": len(after), "failed_after_detection": sum(1 for r in after if not r["server"]),
            "to_victim_after_detection": sum(1 for r in after if r["server"] == victim),
            "sampling_s": SAMPLE}

    def phase_kama(self):
        victim, svc = "kama", sorted(self.reweighted)[0]        # xdmcp
        full = self.configured[svc][victim] * self.scale
        t_load = self.now()
        w0 = self.table(self.director).get(svc, {}).get(victim)
        others_before = {n: w for n, w in self.table(self.director).get(svc, {}).items() if n != victim}
        self.start_burners(victim)
        self.event(f"3. {victim} busy ({BURNERS} CPU burners)", f"python3 busy loops in {victim}'s cgroup, "
                   f"which its lvs-agent reads; reweight polls every {LOOP} s")
        weight = lambda s, n=victim: s["table"].get(svc, {}).get(n, full)     # noqa: E731
        t_low = self.wait_sample(lambda s: s["node"] == self.director and 0 < weight(s) <= LOW * full,
                                 self.dur["busy"] + 30)
        if t_low is None:
            raise DemoError(f"reweight did not lower {victim}'s weight: {self.logs(self.director)}")
        self.event(f"reweight: {victim}'s {svc} weight <= {LOW:.0%}", f"{w0} -> "
                   f"{self.table(self.director)[svc][victim]} in {t_low - t_load:.1f} s", t=t_low)
        rest = self.dur["busy"] - (self.now() - t_load)
        self.sleep(max(rest, 6 if self.short else 10))
        t_idle = self.now()
        loaded = [s for s in self.samples if s["node"] == self.director and t_load <= s["t"] <= t_idle]
        w_min = min(weight(s) for s in loaded)
        others = {n: min(weight(s, n) for s in loaded) for n in others_before}
        others_end = {n: weight(loaded[-1], n) for n in others_before}
        self.stop_burners()
        self.event(f"{victim} idle again", "burners killed; its weight climbs back a step per round")
        t_back = self.wait_sample(lambda s: s["node"] == self.director and weight(s) >= BACK * full, 90)
        if t_back is None:
            raise DemoError(f"{victim}'s weight did not come back: {self.logs(self.director)}")
        self.event(f"reweight: {victim}'s {svc} weight >= {BACK:.0%}",
                   f"{self.table(self.director)[svc][victim]} {t_back - t_idle:.1f} s after the burners stopped",
                   t=t_back)
        steady = self.figures["steady"][svc]
        during = self.window(t_low, t_idle, svc)
        self.figures["kama"] = {
            "service": svc, "load": t_load, "low": t_low, "idle": t_idle, "weight_before": w0,
            "weight_min": w_min, "full": full, "settle_s": t_low - t_load, "low_frac": LOW,
            "back": t_back, "back_s": t_back - t_idle, "others_before": others_before, "others_min": others, "others_end": others_end,
            "share_before": steady["share"].get(victim, 0.0),
            "share_during": self.shares(during).get(victim, 0.0),
            "sessions_during": len(during), "failed_during": sum(1 for r in during if not r["server"]),
            "shares_during": self.shares(during)}

    def phase_midas(self):
        d, s = self.director, self.spare
        sock, indexes = self._netlink(d)
        t_kill = self.now()
        self._links_down(sock, indexes)
        self.dead.add(d)
        self.killall(d)
        self.event(f"4. {d} dies", "links down + SIGKILL of everything in its namespace")
        t_vip = self.wait_sample(lambda x: x["node"] == s and x["vip"], 60)
        if t_vip is None:
            raise DemoError(f"{s} did not take over: {self.logs(s)}")
        self.event(f"{s} holds the VIP", f"{t_vip - t_kill:.1f} s after the kill (deadtime "
                   f"{GUEST_HEARTBEAT['deadtime']})", t=t_vip, node=s)
        self.inherited = self._conn_states(s)
        self.figures["inherited"] = self.inherited
        self.spare_counts = {"takeover": self._counts(s)}
        self.wait(lambda: self.read_log() or any(r["server"] and r["svc"] == "www" for r in
                                                 self.window(t_kill, 1e9)), 60)
        first = next((r for r in self.window(t_kill, 1e9, "www") if r["server"]), None)
        if first is None:
            raise DemoError("the client got no answer after the takeover")
        self.event("client answered again", "first www answer through " + s, t=first["t"] + first["d"], node=s)
        self.sleep(self.dur["after_takeover"])
        self.spare_counts["before return"] = self._counts(s)
        self.spare_states = {k: v for k, v in self._conn_states(s).items() if "FIN_WAIT" not in k}
        self.figures["spare_counts"] = self.spare_counts
        # midas returns as a rebooted machine: no VIP, no table, empty /run
        t_ret = self.now()
        steps = self._reboot(d)
        self.dead.discard(d)
        self.event(f"{d} back (rebooted)", steps)
        fb = self.hb.auto_failback
        if fb:
            t_fb = self.wait_sample(lambda x: x["node"] == d and x["vip"], 90)
            if t_fb is None:
                raise DemoError(f"{d} did not take the VIP back: {self.logs(d)} {self.logs(s)}")
            self.event(f"failback: {d} holds the VIP", f"{t_fb - t_ret:.1f} s after it came back "
                       f"(auto_failback = yes, failback_delay {self.hb.failback_delay:g} s)", t=t_fb, node=d)
            self.wait_sample(lambda x: x["node"] == s and not x["vip"], 30)
        else:
            t_fb = None
        self.sleep(self.dur["after_failback"])
        t_end = self.now()
        www = self.window(t_kill, t_ret, "www")
        ok = [r for r in www if r["server"]]
        fail_ret = self.window(t_ret, t_end)
        www_fb = [r for r in self.window(t_ret, t_end, "www") if r["server"]]
        # TCP connections opened through estepe and still open when the client's ARP entry
        # moved to midas: midas does not know them yet (connection sync lags up to ~2 s, and
        # never sends a handshake); the handover grace forwards them to estepe.  Counted apart,
        # to say which failures (if any) straddled the switch
        t_switch = self.switch_after(t_ret)
        cut = [r for r in fail_ret if not r["server"] and t_switch is not None
               and r["t"] < t_switch and r["t"] + r["d"] > t_switch - SWITCH_SLACK]
        gaps = [b["t"] - (a["t"] + a["d"]) for a, b in zip(www_fb, www_fb[1:])]
        self.figures["midas"] = {
            "kill": t_kill, "vip": t_vip, "first_answer": first["t"] + first["d"], "return": t_ret,
            "failback": t_fb, "end": t_end,
            "takeover_s": t_vip - t_kill, "gap_s": first["t"] + first["d"] - t_kill,
            "sent_down": len(self.window(t_kill, t_ret)),
            "failed_down": sum(1 for r in self.window(t_kill, t_ret) if not r["server"]),
            "ok_after_takeover": len([r for r in ok if r["t"] > t_vip]),
            "sent_failback": len(fail_ret), "failed_failback": sum(1 for r in fail_ret if not r["server"]),
            "switch": t_switch, "cut_at_switch": len(cut),
            "vip_arp": [(when, mac.hex(":")) for when, mac in getattr(self, "vip_macs", [])],
            "resets": getattr(self, "resets", []),
            # each failure as the client saw it, timed from the client's ARP switch (or the failback)
            "failed_failback_list": [
                f"{r['svc']} sent at {r['t'] - (t_switch or t_fb or t_ret):+.3f} s, {r['d']:.3f} s: "
                f"{r.get('err')}{' (open at the switch)' if r in cut else ''}"
                + "".join(f"; reset from {mac} {src}" for _, mac, src, port in getattr(self, "resets", [])
                          if port == r.get("port"))
                for r in fail_ret if not r["server"]],
            "failback_s": (t_fb - t_ret) if t_fb else None,
            "failback_gap_s": max(gaps) if gaps else None,
            "holder_end": self.holder()}

    def _counts(self, node):
        """NODE's www row as "name weight/active/inactive ..."."""
        r = self.run(node, ["ipvsadm", "-Ln"], check=False)
        www = self._services(r.stdout, counts=True).get("www", {})
        return " ".join(f"{n} {c}" for n, c in www.items())

    def _conn_states(self, node):
        """{"real:port state": count} of NODE's connection table: what it inherited by sync."""
        r = self.run(node, ["cat", "/proc/net/ip_vs_conn"], check=False)
        names = {self.lab.addr[n]: n for n in self.servers}
        c = collections.Counter()
        for line in r.stdout.splitlines()[1:]:
            w = line.split()
            if len(w) >= 8:
                real = str(ipaddress.ip_address(int(w[5], 16))) if ":" not in w[5] else w[5]
                c[f"{w[0]} {names.get(real, real)}:{int(w[6], 16)} {w[7]}"] += 1
        return dict(sorted(c.items()))

    def _in_namespace(self, node, make):
        """make() run inside NODE's network namespace (what it opens stays there)."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.lab.ns[self.lab_node(node)]}", os.O_RDONLY)
        try:
            if libc.setns(target, 0x40000000) != 0:                 # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
            return make()
        finally:
            libc.setns(own, 0x40000000)
            os.close(own)
            os.close(target)

    def _netlink(self, node, groups=0):
        """A netlink socket inside NODE's namespace, opened in advance (see tests/netns/hbtopo.py),
        and the indexes of its links."""
        def make():
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
            sock.bind((0, groups))
            return sock, [socket.if_nametoindex(dev) for dev in ["eth0"] + [c[1] for c in self.cross]
                          if node != "client"]
        return self._in_namespace(node, make)

    def watch_vip_neighbour(self):
        """Record when the client's ARP entry for the VIP changes (demo time, the MAC): the
        instant the client starts sending to another director."""
        sock, _ = self._netlink("client", groups=0x4)           # RTMGRP_NEIGH
        sock.settimeout(0.2)
        vip = socket.inet_aton(self.vip)
        self.vip_macs = []

        def loop():
            with sock:
                while not self._stop.is_set():
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    now = self.now()
                    for dst, mac in _neighbours(data):
                        if dst == vip and mac and (not self.vip_macs or self.vip_macs[-1][1] != mac):
                            self.vip_macs.append((now, mac))
        self._neigh = threading.Thread(target=loop, daemon=True)
        self._neigh.start()

    def watch_resets(self):
        """Record every TCP reset the client receives: (demo time, the frame's source MAC, source
        address:port, client port), so a failed request names who reset it."""
        def packet():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            sock.bind(("eth0", 0))
            return sock
        sock = self._in_namespace("client", packet)
        sock.settimeout(0.2)
        self.resets = []

        def loop():
            with sock:
                while not self._stop.is_set():
                    try:
                        frame = sock.recv(256)
                    except socket.timeout:
                        continue
                    ip = frame[14:]
                    if len(ip) < 40 or ip[9] != 6:
                        continue
                    at = (ip[0] & 15) * 4
                    if len(ip) >= at + 14 and ip[at + 13] & 0x04:           # RST
                        sport, dport = struct.unpack_from("!HH", ip, at)
                        self.resets.append((self.now(), frame[6:12].hex(":"),
                                            f"{socket.inet_ntoa(ip[12:16])}:{sport}", dport))
        self._rst = threading.Thread(target=loop, daemon=True)
        self._rst.start()

    def switch_after(self, t):
        """When the client's ARP entry for the VIP first moved after t (None if it did not)."""
        return next((when for when, _ in getattr(self, "vip_macs", [])[1:] if when > t), None)

    @staticmethod
    def _links_down(sock, indexes):
        for seq, index in enumerate(indexes, 1):
            body = struct.pack("=BxHiII", 0, 0, index, 0, 1)        # ifinfomsg: change IFF_UP to 0
            sock.send(struct.pack("=IHHII", 16 + len(body), 16, 0x1 | 0x4, seq, 0) + body)
        for _ in indexes:
            sock.recv(4096)
        sock.close()

    def killall(self, node):
        ns = self.lab.ns[self.lab_node(node)]
        pids = subprocess.run(["ip", "netns", "pids", ns], text=True, capture_output=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def _reboot(self, node):
        d = self.node_dir(node)
        shutil.rmtree(os.path.join(d, "run"), ignore_errors=True)        # /run is a tmpfs
        devs = ["eth0"] + [c[1] for c in self.cross]
        steps = []
        for cmd in ["ipvsadm -C; ipvsadm --stop-daemon master; ipvsadm --stop-daemon backup; "
                    f"ip addr del {self.vip}/32 dev eth0",
                    "; ".join(f"ip link set {dev} up" for dev in devs)]:
            t = time.monotonic()
            self.run(node, cmd, check=False)
            steps.append(f"{cmd[:30]}: {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        self.run(node, self.script("ipvs-sync", node))
        steps.append(f"ipvs-sync: {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        self.start_heartbeat(node)
        steps.append(f"hb-listen up, hb-send started: {time.monotonic() - t:.1f} s")
        return "; ".join(steps)

    # --- the end -------------------------------------------------------------------------------
    def client_figures(self):
        """What the client saw after the healing and after the takeover (www answers)."""
        self.read_log()
        conf = self.configured["www"]
        want = {n: w / sum(conf.values()) for n, w in conf.items()}
        h, m = self.figures.get("hades"), self.figures.get("midas")
        if h:
            recs = self.window(h["back"], h["back"] + BACK_WINDOW, "www")
            first = next((r for r in recs if r["server"] == "hades"), None)
            h.update(share_back=self.shares(recs).get("hades", 0.0), expected_back=want["hades"],
                     sent_back=len(recs), back_window_s=BACK_WINDOW,
                     first_answer_back_s=(first["t"] + first["d"] - h["back"]) if first else None)
        if m:
            recs = self.window(m["vip"], min(m["vip"] + SPARE_WINDOW, m["return"]), "www")
            m.update(spare_share=self.shares(recs), spare_expected=want, spare_sent=len(recs),
                     spare_window_s=min(SPARE_WINDOW, m["return"] - m["vip"]))

    def client_problems(self):
        """Lines for each client-level figure that is not what the client must see."""
        out = []
        h, m = self.figures.get("hades"), self.figures.get("midas")
        if h and h["share_back"] < BACK_SHARE * h["expected_back"]:
            out.append(f"healed hades got {h['share_back']:.0%} of {h['sent_back']} www requests in the "
                       f"{BACK_WINDOW:g} s after its return, want >= {BACK_SHARE:.0%} of {h['expected_back']:.0%}")
        if m:
            off = {n: m["spare_share"].get(n, 0.0) - e for n, e in m["spare_expected"].items()}
            if any(abs(d) > SPARE_POINTS for d in off.values()):
                out.append("estepe's www shares " + " ".join(
                    f"{n} {m['spare_share'].get(n, 0):.0%}/{e:.0%}" for n, e in m["spare_expected"].items())
                    + f" (measured/weights) over its first {m['spare_window_s']:.0f} s: more than "
                    f"{SPARE_POINTS:.0%} off; its connection table at the takeover: "
                    + ", ".join(f"{k} x{v}" for k, v in getattr(self, "inherited", {}).items())
                    + "; its www weight/active/inactive " + "; ".join(
                        f"{when}: {row}" for when, row in getattr(self, "spare_counts", {}).items())
                    + "; its entries not in FIN_WAIT before midas returned: " + ", ".join(
                        f"{k} x{v}" for k, v in getattr(self, "spare_states", {}).items()))
            if m["failed_failback"]:
                out.append(f"{m['failed_failback']} requests failed during the failback ("
                           + "; ".join(m.get("failed_failback_list", [])) + ")")
        return out

    def summary(self):
        f = self.figures
        rows = []
        st = f.get("steady")
        if st:
            for svc in self.configured:
                x = st[svc]
                shares = " ".join(f"{n} {x['share'].get(n, 0):.0%}/{x['expected'][n]:.0%}" for n in self.configured[svc])
                rows.append((f"1 steady {svc} ({self.services[svc].service.scheduler})", x["sent"], x["failed"],
                             f"share measured/weights: {shares}"))
        h = f.get("hades")
        if h:
            rows.append(("2 hades dies: until detected", h["sent_before_detection"], h["failed_before_detection"],
                         f"detection {h['detect_s']:.1f} s (bound {h['bound_s']:.0f} s)"))
            rows.append(("2 hades out: after detection", h["sent_after_detection"], h["failed_after_detection"],
                         f"to hades: {h['to_victim_after_detection']}; back {h['back_s']:.1f} s after restart"))
            if "share_back" in h:
                first = h["first_answer_back_s"]
                rows.append((f"2 hades back: {h['back_window_s']:g} s (www)", h["sent_back"], 0,
                             f"hades's share {h['share_back']:.0%} (weights {h['expected_back']:.0%}); first "
                             f"answer {'none' if first is None else f'{first:.1f} s'} after its return"))
        k = f.get("kama")
        if k:
            rows.append((f"3 kama busy ({k['service']})", k["sessions_during"], k["failed_during"],
                         f"weight {k['weight_before']} -> {k['weight_min']} (<={k['low_frac']:.0%} in {k['settle_s']:.1f} s, "
                         f"back >={BACK:.0%} {k['back_s']:.1f} s after); kama's share of new sessions "
                         f"{k['share_before']:.0%} -> {k['share_during']:.0%}; the others meanwhile "
                         + " ".join(f"{n} {w}->{k['others_end'][n]}" for n, w in k["others_before"].items())))
        m = f.get("midas")
        if m:
            rows.append(("4 midas dies -> estepe", m["sent_down"], m["failed_down"],
                         f"VIP on estepe {m['takeover_s']:.1f} s, client gap {m['gap_s']:.1f} s"))
            if "spare_share" in m:
                rows.append((f"4 estepe's first {m['spare_window_s']:.0f} s (www)", m["spare_sent"], 0,
                             "share measured/weights: " + " ".join(
                                 f"{n} {m['spare_share'].get(n, 0):.0%}/{e:.0%}"
                                 for n, e in m["spare_expected"].items())))
            fb = (f"failback {m['failback_s']:.1f} s after return, longest www gap "
                  f"{m['failback_gap_s']:.2f} s" if m["failback_s"] is not None else "no failback")
            if m.get("cut_at_switch"):
                fb += f"; {m['cut_at_switch']} open at the client's switch to midas failed"
            rows.append(("4 midas returns (failback)", m["sent_failback"], m["failed_failback"], fb))
        out = ["", "summary (measured in this run; client requests: www + xdmcp + ssh)",
               f"  {'phase':<32} {'sent':>5} {'failed':>6}  figures", "  " + "-" * 110]
        for name, sent, failed, fig in rows:
            out.append(f"  {name:<32} {sent:>5} {failed:>6}  {fig}")
        bench = bench_quote()
        if bench:
            out.append(f"  host benchmark (bench/README.md, interval 20 ms, deadtime 100 ms): {bench}")
        return "\n".join(out)

    def save(self):
        path = os.path.join(self.out, "demo.json")
        with open(path, "w") as fh:
            json.dump({"short": self.short, "events": self.events, "figures": self.figures,
                       "samples": self.samples, "configured": self.configured, "scale": self.scale},
                      fh, default=str)
        return path

    def close(self):
        # a second Ctrl-C (or SIGTERM) must not leave burners, cgroups or the mount behind
        masked = threading.current_thread() is threading.main_thread()
        if masked:
            old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._close()
        finally:
            if masked:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    def _close(self):
        self._stop.set()
        try:
            self.stop_burners()
            if self._sampler:
                self._sampler.join(5)
            for name in ("_neigh", "_rst"):
                if getattr(self, name, None):
                    getattr(self, name).join(5)
            if self.lab:
                self.lab.close()
        finally:
            self._remove_cgroups()
        logs = os.path.join(self.out, "logs")       # the scripts' own words, for the curious
        for node in sorted(os.listdir(self.base)) if os.path.isdir(self.base) else ():
            if not os.path.isdir(os.path.join(self.base, node)):
                continue
            for name in os.listdir(os.path.join(self.base, node)):
                if name.endswith((".log", ".ini")):
                    os.makedirs(logs, exist_ok=True)
                    shutil.copy(os.path.join(self.base, node, name), os.path.join(logs, f"{node}-{name}"))
        shutil.rmtree(self.base, ignore_errors=True)


def bench_quote():
    try:
        text = open(os.path.join(ROOT, "bench", "README.md")).read()
    except OSError:
        return ""
    m = re.search(r"^\|[^|\n]*\| \**failover gap\**:[^\n]*?\| \**median ([\d.]+ s)\**, max ([\d.]+ s)", text, re.M)
    return f"failover gap median {m.group(1)}, worst {m.group(2)}" if m else ""


# --- the picture ------------------------------------------------------------------------------------
COLORS = {"hades": "tab:blue", "kama": "tab:orange", "apolo": "tab:green", "cronos": "tab:purple"}


LABEL_GAP = 0.015      # of the time axis: two labels closer than this would overlap (7-point text)


def label_groups(events, end):
    """[(t, text)]: the events' labels, those closer in time than LABEL_GAP of the axis
    joined into one (at the first one's time, "a / b"), so no two labels overlap."""
    groups = []
    for e in sorted(events, key=lambda e: e["t"]):
        if groups and e["t"] - groups[-1][2] < LABEL_GAP * max(end, 1.0):
            groups[-1][1].append(e["what"])
            groups[-1][2] = e["t"]
        else:
            groups.append([e["t"], [e["what"]], e["t"]])
    return [(t, " / ".join(whats)) for t, whats, _ in groups]


def plot(demo, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    recs, end = demo.records, demo.now()
    fig, axes = plt.subplots(3, 1, figsize=(13, 9.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 2]})
    step = 2.0
    bins = [i * step for i in range(int(end / step) + 2)]

    def per_bin(sel):
        c = collections.Counter(int(r["t"] // step) for r in recs if sel(r))
        return [c.get(i, 0) / step for i in range(len(bins))]
    ax = axes[0]
    for n in demo.servers:
        if n in demo.configured["www"]:
            ax.plot(bins, per_bin(lambda r, n=n: r["svc"] == "www" and r["server"] == n),
                    color=COLORS.get(n), label=n, lw=1.6, drawstyle="steps-post")
    ax.bar(bins, per_bin(lambda r: not r["server"]), width=step, align="edge", color="tab:red",
           alpha=0.6, label="failed (any service)")
    ax.set_ylabel("www answers / s")
    ax.set_title("lvskit demo: the IME table in the lab (client requests per real server, kernel weights, events)")
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    ax = axes[1]
    xstep = 5.0
    xb = [i * xstep for i in range(int(end / xstep) + 2)]
    bottom = [0] * len(xb)
    for n in demo.configured["xdmcp"]:
        c = collections.Counter(int(r["t"] // xstep) for r in recs if r["svc"] == "xdmcp" and r["server"] == n)
        vals = [c.get(i, 0) for i in range(len(xb))]
        ax.bar(xb, vals, width=xstep, align="edge", bottom=bottom, color=COLORS.get(n), label=n, alpha=0.8)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_ylabel(f"new xdmcp sessions\nper {xstep:g} s")
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    ax = axes[2]
    for svc, style in (("www", "-"), ("xdmcp", "--")):
        for n, w in demo.configured[svc].items():
            full = w * (demo.scale if svc in demo.reweighted else 1)
            pts = []
            for s in demo.samples:
                if s["vip"] and svc in s["table"] and n in s["table"][svc]:
                    pts.append((s["t"], 100.0 * s["table"][svc][n] / full))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=COLORS.get(n), lw=1.3,
                        label=f"{svc} {n}", drawstyle="steps-post")
    ax.set_ylabel("kernel weight\n% of configured")
    ax.set_ylim(-5, 110)
    ax.set_xlabel("seconds since the demo started (guest clock)")
    ax.legend(loc="lower left", fontsize=7, ncol=4)
    shown = [e for e in demo.events if e["what"][:2] in ("1.", "2.", "3.", "4.") or any(
        w in e["what"] for w in ("took", "back", "holds", "reweight", "idle"))]
    for e in shown:
        for ax in axes:
            ax.axvline(e["t"], color="0.4", lw=0.7, ls=":")
    for t, text in label_groups(shown, end):
        axes[0].annotate(text, (t, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                         fontsize=7, va="top", ha="right", color="0.25")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(short=False, out=None, make_plot=True, say=print):
    """Play the scenario; returns the figures.  Raises DemoError when a step did not happen."""
    demo = Demo(short=short, out=out, say=say)
    try:
        demo.setup()
        demo.phase_steady()
        demo.phase_hades()
        demo.phase_kama()
        demo.phase_midas()
        demo.event("end")
        demo.client_figures()
        say(demo.summary())
        path = demo.save()
        host = os.environ.get("LAB_OUT_HOST")
        where = (lambda p: os.path.join(host, os.path.basename(p))) if host and demo.out == os.environ.get("LAB_OUT") \
            else (lambda p: p)
        say(f"\ntimeline and figures: {where(path)}; client log: {where(demo.client_log)}")
        if make_plot:
            png = plot(demo, os.path.join(demo.out, "demo.png"))
            say(f"picture: {where(png)}" if png else
                "picture: none (matplotlib is not installed: apt-get install python3-matplotlib)")
        problems = demo.client_problems()
        if problems:
            raise DemoError("what the client saw: " + "; ".join(problems))
        return demo.figures
    finally:
        demo.close()


def main(argv):
    short = "--short" in argv
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    t = time.monotonic()
    try:
        run(short=short, make_plot="--no-plot" not in argv, say=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        print("interrupted: lab removed", file=sys.stderr)
        return 130
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - t:.0f} s; lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
