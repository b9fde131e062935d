"""Director, spare and client in network namespaces, for failover tests and bench/failover.py.

    client  eth0 10.201.1.10 ------ br0 (front) ----- director eth0 10.201.1.2 (VIP 10.201.1.100)
                                         |----------- spare    eth0 10.201.1.3
    director eth1 10.201.2.2 --- br1 (heartbeat) --- spare eth1 10.201.2.3

Everything lives in namespaces PREFIX-{sw,client,director,spare}; nothing in
the root namespace.  Heartbeats can go over both nets (paths "front" and
"hb") or only "hb", so a test can cut just the heartbeat.  Stdlib only.
"""
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
FRONT, HB = "10.201.1.", "10.201.2."
VIP = FRONT + "100"
FRONT6 = "fd00:201:1::"
VIP6 = FRONT6 + "100"
HOST = {"director": 2, "spare": 3, "client": 10}
KEY = b"0123456789abcdef0123456789abcdef\n"
# The service and the probe are measuring instruments: real-time, so that a
# loaded test machine (other test runs, stress-ng) delays neither; what is
# measured is the failover, not the scheduler's treatment of a test server.
RESPONDER = ["chrt", "-f", "5", PY, os.path.join(ROOT, "lab", "responder.py"), "serve"]


def _sh(ns, script, check=True):
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-ec", script], text=True, capture_output=True)
    if check and r.returncode:
        raise RuntimeError(f"{ns}: {r.stderr.strip()}")
    return r


# What inetd does for a "dgram udp wait" service: bind, put the socket on fd 0, exec.
INETD = ("import os, socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 694))\n"
         "os.dup2(s.fileno(), 0); os.execv(sys.argv[1], sys.argv[1:])\n")


class NotifySocket:
    """What systemd listens on for Type=notify services: an AF_UNIX datagram socket at path.

    Each message comes with its sender's pid (SO_PASSCRED: systemd's
    NotifyAccess=main goes by it) and the kernel's arrival time
    (SO_TIMESTAMPNS, wall clock): gaps between pings are measured as they
    arrived, not as the test got round to reading them.
    """
    UCRED, TIMESPEC = struct.Struct("3i"), struct.Struct("ll")
    SO_TIMESTAMPNS = 35

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, self.SO_TIMESTAMPNS, 1)
        self.sock.bind(path)

    def next(self, timeout):
        """(arrival, pid, {name: value}) of the next message, or None after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, 256)
        except (socket.timeout, BlockingIOError):      # BlockingIOError: timeout 0, nothing queued
            return None
        pid, at = None, None
        for level, kind, raw in anc:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = self.UCRED.unpack(raw)[0]
            elif (level, kind) == (socket.SOL_SOCKET, self.SO_TIMESTAMPNS):
                sec, ns = self.TIMESPEC.unpack(raw)
                at = sec + ns * 1e-9
        return at, pid, dict(line.partition("=")[::2] for line in data.decode().split("\n"))

    def close(self):
        self.sock.close()


class Pair:
    def __init__(self, prefix, workdir, paths=("front", "hb"), priorities=(200, 100),
                 timings="interval = 20ms\ndeadtime = 120ms\nwarntime = 60ms\ninitdead = 1s\n",
                 extra="", reals=0, v6=False, scheduler="rr"):
        self.prefix, self.dir = prefix, workdir
        # reals: that many direct-routing real servers r1, r2... on the front net (.11, .12...),
        # the VIP on their lo, and a [service web] VIP:80 over them in the config
        self.reals = [f"r{i}" for i in range(1, reals + 1)]
        for i, r in enumerate(self.reals):
            HOST[r] = 11 + i
        self.ns = {n: f"{prefix}-{n}" for n in ["sw", "client", "director", "spare"] + self.reals}
        self.procs = {}
        self._delete()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
        sw = ["link set lo up", "link add br0 type bridge mcast_snooping 0", "link set br0 up",
              "link add br1 type bridge mcast_snooping 0", "link set br1 up"]
        links = [("client", "eth0", "br0"), ("director", "eth0", "br0"), ("spare", "eth0", "br0"),
                 ("director", "eth1", "br1"), ("spare", "eth1", "br1")] + [(r, "eth0", "br0") for r in self.reals]
        for i, (n, dev, br) in enumerate(links):
            sw += [f"link add p{i} type veth peer name {dev} netns {self.ns[n]}", f"link set p{i} master {br} up"]
        subprocess.run(["ip", "-n", self.ns["sw"], "-batch", "-"], input="\n".join(sw) + "\n",
                       text=True, check=True)
        for n in ["client", "director", "spare"] + self.reals:
            h = HOST[n]
            cmds = ["ip link set lo up", f"ip link set eth0 address 02:00:0a:c9:01:{h:02x} up",
                    f"ip addr add {FRONT}{h}/24 dev eth0"]
            if v6:
                cmds += [f"ip addr add {FRONT6}{h}/64 dev eth0 nodad"]
            if n in self.reals:
                cmds += [f"ip addr add {VIP}/32 dev lo"] + [
                    f"echo {v} > /proc/sys/net/ipv4/conf/{c}/{k}"
                    for c in ("all", "eth0") for k, v in (("arp_ignore", 1), ("arp_announce", 2))]
            elif n != "client":
                cmds += [f"ip link set eth1 address 02:00:0a:c9:02:{h:02x} up", f"ip addr add {HB}{h}/24 dev eth1"]
            _sh(self.ns[n], "\n".join(cmds))
        self.node_dir = {}
        for n, prio in zip(("director", "spare"), priorities):
            d = os.path.join(workdir, n)
            os.makedirs(d, exist_ok=True)
            self.node_dir[n] = d
        key = os.path.join(workdir, "hb.key")
        with open(key, "wb") as f:
            f.write(KEY)
        os.chmod(key, 0o600)
        nodes = ""
        for n, prio in zip(("director", "spare"), priorities):
            nodes += f"[node {n}]\npriority = {prio}\n"
            if "front" in paths:
                nodes += f"path.front = {FRONT}{HOST[n]}\n"
            if "hb" in paths:
                nodes += f"path.hb = {HB}{HOST[n]}\n"
            if "front6" in paths:       # needs v6=True
                nodes += f"path.front6 = {FRONT6}{HOST[n]}\n"
        services = ""
        if self.reals:
            services = "".join(f"[server {r}]\naddress = {FRONT}{HOST[r]}\n" for r in self.reals)
            services += f"[service web]\naddress = {VIP}\nport = 80\nforward = dr\nscheduler = {scheduler}\n"
            services += "".join(f"real.{r} =\n" for r in self.reals)
        vip6 = f", {VIP6}/128" if v6 else ""
        self.config = {}
        for n in ("director", "spare"):
            d = self.node_dir[n]
            text = (f"[global]\nstate_dir = {d}/state\nrun_dir = {d}/run\n\n"
                    f"[heartbeat]\nkey_file = {key}\nvip_interface = eth0\nvips = {VIP}/32{vip6}\n"
                    f"arp_repeat = 1s\nrelease_wait = 1s\n{timings}{extra}\n{nodes}{services}")
            path = os.path.join(d, "lvskit.ini")
            with open(path, "w") as f:
                f.write(text)
            self.config[n] = path

    # --- processes --------------------------------------------------------------
    def popen(self, node, argv, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[node]] + argv, **kw)

    def run(self, node, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns[node]] + argv, text=True,
                              capture_output=True, **kw)

    def tool(self, node, name, *args):
        who = ["--node", node] if name.startswith("hb-") else []
        return [PY, os.path.join(ROOT, "bin", name), "-c", self.config[node]] + who + list(args)

    def start(self, node, inetd=False):
        """hb-listen, hb-send and a UDP responder (port 9000, answers with the node's name).

        inetd: hb-listen gets its UDP socket on stdin, bound by a stand-in for inetd.
        """
        err = open(os.path.join(self.dir, f"{node}.log"), "a")
        env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
        listen = self.tool(node, "hb-listen", "-v")
        if inetd:
            listen = [PY, "-c", INETD] + self.tool(node, "hb-listen", "-v", "--inetd")
        self.procs[node] = [
            self.popen(node, listen, stderr=err, stdout=err, env=env),
            self.popen(node, self.tool(node, "hb-send"), stderr=err, stdout=err, env=env),
            self.popen(node, RESPONDER + [node, "--udp", "9000"],
                       stdout=subprocess.DEVNULL, stderr=err),
        ]

    def kill(self, node):
        """As a machine dies: links down, then SIGKILL of everything in its namespace.

        Returns the monotonic time just before the links went down.  The links
        go down through a netlink socket opened in the node's namespace in
        advance: an `ip` process can be slow to start on a loaded machine,
        and meanwhile the node would still be alive on one link.
        """
        sock, indexes = self._netlink(node)
        t = time.monotonic()
        for seq, index in enumerate(indexes, 1):
            # RTM_NEWLINK, ifinfomsg: family 0, index, flags 0, change IFF_UP
            body = struct.pack("=BxHiII", 0, 0, index, 0, 1)
            sock.send(struct.pack("=IHHII", 16 + len(body), 16, 0x1 | 0x4, seq, 0) + body)
        for _ in indexes:
            sock.recv(4096)
        sock.close()
        self.killall(node)
        return t

    def _netlink(self, node):
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns[node]}", os.O_RDONLY)
        try:
            if libc.setns(target, 0x40000000) != 0:       # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)     # NETLINK_ROUTE
            sock.bind((0, 0))
            indexes = [socket.if_nametoindex(dev) for dev in ("eth0", "eth1")]
        finally:
            libc.setns(own, 0x40000000)
            os.close(own)
            os.close(target)
        return sock, indexes

    def killall(self, node):
        out = subprocess.run(["ip", "netns", "pids", self.ns[node]], text=True, capture_output=True).stdout
        for pid in out.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for p in self.procs.pop(node, []):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def revive(self, node, reboot=True):
        """The killed machine back, before its programs start: no VIP (an interface comes up
        bare), RUN_DIR emptied by a reboot or kept by a crash without one (STATE_DIR kept
        either way), links up.  Returns the monotonic time the links came up."""
        self.run(node, ["ip", "addr", "del", f"{VIP}/32", "dev", "eth0"])
        if reboot:
            shutil.rmtree(os.path.join(self.node_dir[node], "run"), ignore_errors=True)
        self.links(node, "up")
        return time.monotonic()

    def links(self, node, updown, devs=("eth0", "eth1")):
        for dev in devs:
            subprocess.run(["ip", "-n", self.ns[node], "link", "set", dev, updown], check=True)

    def holds_vip(self, node):
        out = self.run(node, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
        return f" {VIP}/" in out

    def client_neigh_mac(self, address=VIP):
        out = self.run("client", ["ip", "neigh", "show", address, "dev", "eth0"]).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    def mac(self, node, dev="eth0"):
        return self.run(node, ["cat", f"/sys/class/net/{dev}/address"]).stdout.strip()

    def ask(self, timeout=0.2, address=VIP):
        """Who answers a UDP request to VIP:9000 from the client (None: nobody)."""
        af = "AF_INET6" if ":" in address else "AF_INET"
        code = (f"import socket,sys;s=socket.socket(socket.{af},socket.SOCK_DGRAM);"
                f"s.settimeout({timeout});s.sendto(b'?',('{address}',9000))\n"
                "try: print(s.recv(100).decode())\nexcept OSError: print('')")
        return self.run("client", [PY, "-c", code]).stdout.strip() or None

    def role(self, node):
        r = self.run(node, self.tool(node, "takeover", "status"))
        return r.returncode

    def wait(self, predicate, timeout, step=0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(step)
        return predicate()

    def log(self, node):
        try:
            with open(os.path.join(self.dir, f"{node}.log")) as f:
                return f.read()
        except OSError:
            return ""

    # --- teardown ------------------------------------------------------------------
    def close(self):
        for node in ["director", "spare", "client"] + self.reals:
            self.killall(node)
        self._delete()

    def _delete(self):
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
