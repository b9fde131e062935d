"""lab/topo.py: an LVS test topology in network namespaces (stdlib only).

Works on the host (everything but IPVS: routing, ARP, heartbeat/failover
timing) and inside the lab/guest-run guest (with IPVS).  Needs root and
iproute2.  Nothing is added to the root namespace: the bridges live in their
own namespace PREFIX-sw, the veth pairs are created directly between it and
the node namespaces.

    import sys; sys.path.insert(0, "lab")
    from topo import Lab

    with Lab(prefix="lvs", mode="nat") as lab:          # or mode="dr"
        lab.serve()                                     # responders on every real server
        lab.ipvsadm("-A", "-t", f"{lab.vip}:80", "-s", "wrr")
        for r in lab.reals:
            lab.ipvsadm("-a", "-t", f"{lab.vip}:80", "-r", f"{lab.addr[r]}:80", "-m", "-w", "1")
        print(lab.connect(80, 10))                      # Counter({'hades': 5, 'kama': 5})

Namespaces (lab.ns[name]): PREFIX-client, PREFIX-director, PREFIX-spare (if
spare=True), PREFIX-<real> for each real server, PREFIX-sw (bridges).

Addresses (the same in every Lab: namespaces are private, so labs with
different prefixes never clash; all test-only, never routed outside):

  front net 10.200.1.0/24, fd00:200:1::/64 (bridge br0):
      client .10 / ::10, director .2 / ::2, spare .3 / ::3
      VIP 10.200.1.100 / fd00:200:1::100 (lab.vip, lab.vip6), a /32 (/128)
      on the director's eth0 (the spare gets nothing: takeover is the test's job)
  mode="dr": real servers on the front net, .11, .12, ... (::11, ::12, ...),
      VIP (and VIP6) on their lo; arp_ignore=1, arp_announce=2.
  mode="nat": real servers on the back net 10.200.2.0/24, fd00:200:2::/64
      (bridge br1), .11, .12, ...; director eth1 .2, spare eth1 .3 (lab.inner),
      and the floating gateway 10.200.2.1 / fd00:200:2::1 (lab.gw, lab.gw6, a
      /32 /128 on the director's eth1) that is the real servers' default route.
      ip_forward (v4+v6) on director and spare.  The client has a route to the
      back net via the director (so real servers are reachable directly too).
      For a spare takeover, move the VIP to the spare's eth0 and lab.gw to the
      spare's eth1 (and repoint the client's back-net route if you use it).

All IPv6 addresses are added with nodad (usable at once).  Interfaces: eth0
on every node (front, or back for NAT real servers), eth1 = back for the
director/spare in NAT mode.  MACs are fixed: 02:00:0a:c8:NET:HOST (lab.mac()).

Parallel runs: namespace names are global on a machine, so pick a prefix per
test session, e.g. Lab(prefix=unique_prefix()).  A lock file
/run/lvskit-lab/PREFIX.pid guards it; namespaces left behind by a dead owner
are removed on the next Lab with that prefix.
"""
import collections
import json
import os
import signal
import subprocess
import sys
import time

__all__ = ["Lab", "unique_prefix"]

HERE = os.path.dirname(os.path.abspath(__file__))
RESPONDER = os.path.join(HERE, "responder.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
LOCKDIR = "/run/lvskit-lab"

FRONT, FRONT6 = "10.200.1.", "fd00:200:1::"
BACK, BACK6 = "10.200.2.", "fd00:200:2::"


def unique_prefix(base="lvs"):
    """A prefix unique to this process, e.g. 'lvs4711'."""
    return "%s%d" % (base, os.getpid())


def _ip(args, input=None, check=True):
    r = subprocess.run(["ip"] + args, input=input, text=True, capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s failed: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
    return r


def in_cgroup(cg, argv):
    """argv run as a member of cgroup v2 directory CG from its first instruction."""
    return ["sh", "-ec", 'echo $$ > "$0/cgroup.procs"; exec "$@"', cg] + list(argv)


def remove_cgroup(cg):
    """rmdir a cgroup, waiting up to 5 s for its last members to exit (never a recursive delete)."""
    for _ in range(50):
        try:
            os.rmdir(cg)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Lab:
    """Client, director, spare and real servers in namespaces; see the module doc.

    Attributes: mode, prefix, reals (tuple of names), nodes (all node names),
    ns {name: namespace}, addr {name: IPv4}, addr6 {name: IPv6}, inner /
    inner6 {director/spare: back-net address} (NAT), vip, vip6, gw, gw6 (NAT,
    else None), front_net / back_net (CIDR strings).
    """

    def __init__(self, prefix="lvs", mode="dr", reals=("hades", "kama"), spare=True):
        if mode not in ("dr", "nat"):
            raise ValueError("mode must be 'dr' or 'nat'")
        reals = tuple(reals)
        reserved = {"client", "director", "spare", "sw"}
        if reserved & set(reals) or len(set(reals)) != len(reals):
            raise ValueError("real server names must be unique and not client/director/spare/sw")
        self.prefix, self.mode, self.reals = prefix, mode, reals
        self.nodes = ("client", "director") + (("spare",) if spare else ()) + reals
        self.ns = {n: "%s-%s" % (prefix, n) for n in self.nodes}
        self.sw = "%s-sw" % prefix
        self.vip, self.vip6 = FRONT + "100", FRONT6 + "100"
        self.front_net, self.front_net6 = FRONT + "0/24", FRONT6 + "/64"
        self.back_net = BACK + "0/24" if mode == "nat" else None
        self.back_net6 = BACK6 + "/64" if mode == "nat" else None
        self.gw = BACK + "1" if mode == "nat" else None
        self.gw6 = BACK6 + "1" if mode == "nat" else None
        host = {"director": 2, "spare": 3, "client": 10}
        for i, r in enumerate(reals):
            host[r] = 11 + i
        self._host = host
        self.addr, self.addr6, self.inner, self.inner6 = {}, {}, {}, {}
        for n in self.nodes:
            back = mode == "nat" and n in reals
            self.addr[n] = (BACK if back else FRONT) + str(host[n])
            self.addr6[n] = (BACK6 if back else FRONT6) + str(host[n])
            if mode == "nat" and n in ("director", "spare"):
                self.inner[n] = BACK + str(host[n])
                self.inner6[n] = BACK6 + str(host[n])
        self._procs = []          # every Popen we started
        self._servers = {}        # real name -> Popen of its responder
        self._up = False

    # ------------------------------------------------------------------ setup
    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    _active = set()   # prefixes of the Labs that are up in this process

    def _lock(self):
        if self.prefix in Lab._active:
            raise RuntimeError("lab prefix %r is already up in this process" % self.prefix)
        os.makedirs(LOCKDIR, exist_ok=True)
        path = os.path.join(LOCKDIR, self.prefix + ".pid")
        try:
            pid = int(open(path).read().strip())
        except (OSError, ValueError):
            pid = None
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise RuntimeError("lab prefix %r is in use by pid %d; pick another prefix "
                               "(topo.unique_prefix())" % (self.prefix, pid))
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        self._lockfile = path
        Lab._active.add(self.prefix)

    def _existing(self):
        r = _ip(["netns", "list"], check=False)
        have = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
        return [n for n in list(self.ns.values()) + [self.sw] if n in have]

    def _mac(self, net, node):
        return "02:00:0a:c8:%02x:%02x" % (net, self._host[node])

    def up(self):
        """Create everything (called by `with`)."""
        self._lock()
        stale = self._existing()
        if stale:
            self._delete_namespaces(stale)
        self._up = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        nat = self.mode == "nat"
        _ip(["-batch", "-"], input="".join("netns add %s\n" % n for n in [self.sw] + list(self.ns.values())))
        # bridges and veth pairs: the pN end stays in the switch namespace
        sw = ["link set lo up", "link add br0 type bridge mcast_snooping 0", "link set br0 up"]
        if nat:
            sw += ["link add br1 type bridge mcast_snooping 0", "link set br1 up"]
        links = []  # (node, dev, bridge)
        for n in self.nodes:
            if nat and n in self.reals:
                links.append((n, "eth0", "br1"))
            else:
                links.append((n, "eth0", "br0"))
            if nat and n in ("director", "spare"):
                links.append((n, "eth1", "br1"))
        for i, (n, dev, br) in enumerate(links):
            sw.append("link add p%d type veth peer name %s netns %s" % (i, dev, self.ns[n]))
            sw.append("link set p%d master %s up" % (i, br))
        # no IPv6 on the switch ports: they would chatter (DAD, RS) on the test links
        r = subprocess.run(["ip", "netns", "exec", self.sw, "sh", "-ec",
                            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6\n"
                            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6\n"
                            "exec ip -batch -\n"],
                           input="\n".join(sw) + "\n", text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError("lab setup failed (switch): " + (r.stderr or r.stdout).strip())

        # per node: sysctls + addresses + routes, one process chain per node, in parallel
        jobs = []
        for n in self.nodes:
            # links are still down here: no DAD at all (else the link-local
            # address stays tentative and the first forwarded v6 packet waits ~2 s)
            sysctl = {"net/ipv6/conf/all/accept_dad": 0, "net/ipv6/conf/default/accept_dad": 0,
                      "net/ipv6/conf/eth0/accept_dad": 0}
            if nat and n in ("director", "spare"):
                sysctl["net/ipv6/conf/eth1/accept_dad"] = 0
            cmds = ["link set lo up"]
            real_on_back = nat and n in self.reals
            net = 2 if real_on_back else 1
            cmds += ["link set eth0 address %s up" % self._mac(net, n),
                     "addr add %s/24 dev eth0" % self.addr[n],
                     "addr add %s/64 dev eth0 nodad" % self.addr6[n]]
            if nat and n in ("director", "spare"):
                cmds += ["link set eth1 address %s up" % self._mac(2, n),
                         "addr add %s/24 dev eth1" % self.inner[n],
                         "addr add %s/64 dev eth1 nodad" % self.inner6[n]]
                sysctl.update({"net/ipv4/ip_forward": 1, "net/ipv6/conf/all/forwarding": 1})
            if n == "director":
                cmds += ["addr add %s/32 dev eth0" % self.vip,
                         "addr add %s/128 dev eth0 nodad" % self.vip6]
                if nat:
                    cmds += ["addr add %s/32 dev eth1" % self.gw,
                             "addr add %s/128 dev eth1 nodad" % self.gw6]
            if n == "client" and nat:
                cmds += ["route add %s via %s" % (self.back_net, self.addr["director"]),
                         "route add %s via %s" % (self.back_net6, self.addr6["director"])]
            if n in self.reals:
                if nat:
                    cmds += ["route add default via %s" % self.gw,
                             "route add ::/0 via %s" % self.gw6]
                else:
                    cmds += ["addr add %s/32 dev lo" % self.vip,
                             "addr add %s/128 dev lo" % self.vip6]
                    sysctl.update({"net/ipv4/conf/all/arp_ignore": 1,
                                   "net/ipv4/conf/all/arp_announce": 2,
                                   "net/ipv4/conf/eth0/arp_ignore": 1,
                                   "net/ipv4/conf/eth0/arp_announce": 2})
            script = "".join("echo %s > /proc/sys/%s\n" % (v, k) for k, v in sysctl.items())
            if n in ("director", "spare"):
                # as README.md tells a director's admin: a new connection that reuses the
                # ports of an old one to a quiesced (dead) real server is scheduled afresh
                script += ("if [ -d /proc/sys/net/ipv4/vs ]; then "
                           "echo 1 > /proc/sys/net/ipv4/vs/expire_nodest_conn; fi\n")
            script += "exec ip -batch -\n"
            p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], "sh", "-ec", script],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            jobs.append((n, p, "\n".join(cmds) + "\n"))
        errors = []
        for n, p, inp in jobs:
            out, _ = p.communicate(inp)
            if p.returncode != 0:
                errors.append("%s: %s" % (n, out.strip()))
        if errors:
            raise RuntimeError("lab setup failed: " + "; ".join(errors))

    # --------------------------------------------------------------- teardown
    def close(self):
        """Kill every process started here and in the namespaces, delete them."""
        for p in self._procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2
        for p in self._procs:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs, self._servers = [], {}
        if self._up:
            self._delete_namespaces(self._existing())
            self._up = False
        lock = getattr(self, "_lockfile", None)
        if lock:
            Lab._active.discard(self.prefix)
            try:
                if open(lock).read().strip() == str(os.getpid()):
                    os.unlink(lock)
            except OSError:
                pass
            self._lockfile = None

    @staticmethod
    def _delete_namespaces(names):
        for n in names:  # anything still running inside (keepalived, ...)
            r = _ip(["netns", "pids", n], check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        if names:
            _ip(["-force", "-batch", "-"], input="".join("netns del %s\n" % n for n in names), check=False)

    # ------------------------------------------------------------- utilities
    def _argv(self, name, argv):
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        return ["ip", "netns", "exec", self.ns[name]] + list(argv)

    def run(self, name, argv, **kw):
        """subprocess.run(`ip netns exec NS argv`); argv may be a list or a
        shell string.  Defaults: text=True, capture_output=True (override in kw)."""
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        return subprocess.run(self._argv(name, argv), **kw)

    def popen(self, name, argv, **kw):
        """subprocess.Popen(`ip netns exec NS argv`); killed by close()."""
        p = subprocess.Popen(self._argv(name, argv), **kw)
        self._procs.append(p)
        return p

    def ipvsadm(self, *args, node="director", check=True):
        """Run ipvsadm ARGS in the director's (or node's) namespace; returns stdout."""
        r = self.run(node, ["ipvsadm"] + [str(a) for a in args])
        if check and r.returncode != 0:
            raise RuntimeError("ipvsadm %s: %s" % (" ".join(map(str, args)), r.stderr.strip()))
        return r.stdout

    def mac(self, name, dev="eth0"):
        """MAC address of NAME's interface DEV (as the kernel reports it)."""
        r = _ip(["-n", self.ns[name], "-j", "link", "show", "dev", dev])
        return json.loads(r.stdout)[0]["address"]

    # ---------------------------------------------------------- test servers
    def serve(self, names=None, ports=(80, 22), udp_ports=(177,), timeout=30):
        """Start responder.py on the real servers NAMES (a name, a list, or
        None = all real servers; any node name works).  TCP ports answer
        NAME\\n and close, UDP ports answer every datagram with NAME; v4+v6.
        Returns when all are listening.  A running responder is restarted."""
        if names is None:
            names = self.reals
        elif isinstance(names, str):
            names = (names,)
        started = []
        for n in names:
            self.kill_server(n)
            argv = [PYTHON, RESPONDER, "serve", n,
                    "--tcp", ",".join(map(str, ports)), "--udp", ",".join(map(str, udp_ports))]
            p = self.popen(n, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self._servers[n] = p
            started.append((n, p))
        for n, p in started:
            line = _readline_timeout(p, timeout)
            if line.strip() != "READY":
                err = ""
                if p.poll() is not None:
                    err = p.stderr.read()
                raise RuntimeError("responder on %s did not start: %s %s" % (n, line.strip(), err.strip()))

    def kill_server(self, name):
        """Stop NAME's responder (no-op when none runs)."""
        p = self._servers.pop(name, None)
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def probe(self, port, n, proto="tcp", addr=None, timeout=2.0, node="client"):
        """Like connect() but returns the list of answers in order (None = failure)."""
        addr = addr or self.vip
        argv = [PYTHON, RESPONDER, "probe", addr, str(port), str(n), "--timeout", str(timeout)]
        if proto == "udp":
            argv.append("--udp")
        elif proto != "tcp":
            raise ValueError("proto must be tcp or udp")
        r = self.run(node, argv)
        if r.returncode != 0:
            raise RuntimeError("probe failed: %s" % r.stderr.strip())
        return json.loads(r.stdout)

    def connect(self, port, n, proto="tcp", addr=None, timeout=2.0, node="client"):
        """From the client namespace, N sequential connections (TCP) or
        request/reply datagrams (UDP), each from a new socket, to ADDR (default
        the VIP; pass lab.vip6 for IPv6) and PORT.  Returns a Counter of the
        names that answered; failures count under None.  One python process
        for all N (a process start is slow in the emulated guest)."""
        return collections.Counter(self.probe(port, n, proto, addr, timeout, node))

    def __repr__(self):
        return "Lab(prefix=%r, mode=%r, reals=%r)" % (self.prefix, self.mode, self.reals)


def _readline_timeout(p, timeout):
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        return ""
    return p.stdout.readline()


if __name__ == "__main__":
    # smoke test: python3 lab/topo.py [dr|nat]
    mode = sys.argv[1] if len(sys.argv) > 1 else "nat"
    t = time.monotonic()
    with Lab(prefix=unique_prefix(), mode=mode) as lab:
        print("%s up in %.2f s" % (lab, time.monotonic() - t))
        for n in lab.nodes:
            print("  %-9s %-14s %-18s %s" % (n, lab.addr[n], lab.addr6[n], lab.ns[n]))
        lab.serve()
        for r in lab.reals:
            print("  %s answers %s / %s" % (r, lab.connect(80, 1, addr=lab.addr[r]),
                                            lab.connect(177, 1, proto="udp", addr=lab.addr6[r])))
