#!/usr/bin/python3
"""IPVS apply speed: bin/ipvs-sync next to ipvsadm and keepalived, in one guest run.

Runs inside the lab guest (Debian's kernel with IPVS) as root; only ratios
inside one run mean anything (the guest is emulated, ~15x slower than the host):

  lab/guest-run --mem 1536 -- /usr/bin/python3 bench/ipvs_apply.py [--quick]
  bench/run ipvs_apply              # the same, results in bench/results/

Every measurement is a whole process's wall time (started and waited for by
this harness), or for keepalived, the time from its start/SIGHUP until the
kernel shows the result (polled: /proc/net/ip_vs line count every 20 ms, one
service's destinations over netlink every 10 ms).  Each cold load runs in a
fresh network namespace the harness enters itself (setns, so no `ip netns
exec` in the timings): deleted destinations linger in a per-namespace trash
list that the kernel scans on every add, so reloading a flushed table would
be slower than loading a fresh one.

Cases (see bench/README.md, "IPVS apply"): cold load (also with a stand-in
syslog daemon reading /dev/log: ipvs-sync logs each change), one weight changed, no-op,
drift repair, `ipvs-sync --every` reacting to a config edit, the one-weight
change by ipvs-sync and keepalived in turns (the median of the rounds' ratios:
the steadier figure on a machine whose speed drifts), start-up cost,
pyroute2's IPVS API against our codec (in-process, smaller table), and a
cProfile/-X importtime breakdown of ipvs-sync's no-op and one-weight runs.

Writes ipvs_apply.json (raw timings), ipvs_apply.md (the table) and
ipvs_apply-profile.txt to --out (default $LAB_OUT, else bench/results), and
prints the markdown table.
"""
import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
LIB = os.path.join(ROOT, "lib")
VENDOR = os.path.join(LIB, "vendor")
sys.path.insert(0, LIB)
from lvskit import ipvs  # noqa: E402
from lvskit.model import AF_INET, ServiceKey  # noqa: E402

PY = "/usr/bin/python3"
SYNC = [os.path.join(ROOT, "bin", "ipvs-sync")]     # by its path, as cron runs it: its #! line counts
IPVSADM = shutil.which("ipvsadm") or "/usr/sbin/ipvsadm"
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
CLONE_NEWNET = 0x40000000
PORT = 80

_libc = ctypes.CDLL(None, use_errno=True)
_root_ns = None


# --- the table, in the three tools' formats --------------------------------------

class Table:
    """S services x R real servers, all on guest-only 10.x addresses, DR, wlc."""

    def __init__(self, nsvc, nreal):
        self.nsvc, self.nreal = nsvc, nreal
        self.weights = {(i, j): 1 + (i + j) % 5 for i in range(nsvc) for j in range(nreal)}

    @staticmethod
    def vip(i):
        return f"10.10.{i // 200}.{i % 200 + 1}"

    @staticmethod
    def rip(i, j):
        return f"10.{20 + i // 250}.{i % 250}.{j + 1}"

    def key(self, i):
        return ServiceKey(AF_INET, 6, self.vip(i), PORT)

    @property
    def lines(self):
        """/proc/net/ip_vs line count of the full table (3 header lines)."""
        return 3 + self.nsvc * (1 + self.nreal)

    def ini(self, tmp):
        out = [f"[global]\nstate_dir = {tmp}/state\nrun_dir = {tmp}/run\n"]
        for i in range(self.nsvc):
            out.append(f"\n[service s{i:04d}]\naddress = {self.vip(i)}\nport = {PORT}\n"
                       "protocol = tcp\nscheduler = wlc\nforward = dr\n")
            out += [f"real.{self.rip(i, j)} = weight={self.weights[i, j]}\n" for j in range(self.nreal)]
        return "".join(out)

    def keepalived(self):
        out = ["global_defs {\n    router_id bench\n}\n"]
        for i in range(self.nsvc):
            out.append(f"\nvirtual_server {self.vip(i)} {PORT} {{\n    lb_algo wlc\n"
                       "    lb_kind DR\n    protocol TCP\n")
            out += [f"    real_server {self.rip(i, j)} {PORT} {{\n        weight {self.weights[i, j]}\n"
                    "    }\n" for j in range(self.nreal)]
            out.append("}\n")
        return "".join(out)

    def rules(self):
        out = []
        for i in range(self.nsvc):
            vs = f"{self.vip(i)}:{PORT}"
            out.append(f"-A -t {vs} -s wlc\n")
            out += [f"-a -t {vs} -r {self.rip(i, j)}:{PORT} -g -w {self.weights[i, j]}\n"
                    for j in range(self.nreal)]
        return "".join(out)

    def json(self):
        return [[self.vip(i), PORT, [[self.rip(i, j), self.weights[i, j]] for j in range(self.nreal)]]
                for i in range(self.nsvc)]


def write(path, text):
    """Atomic replace (a new inode: what an editor or config management does)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# --- namespaces, processes, the kernel ---------------------------------------------

def _setns(fd, what):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns {what}: {os.strerror(e)}")


class Netns:
    """A fresh namespace the harness (and so every child) lives in until close()."""

    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "add", name], check=True)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(fd, name)
        finally:
            os.close(fd)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        self.kernel = ipvs.Kernel()     # a netlink socket belongs to the namespace it was opened in

    def enter(self):
        """Back into this namespace (the harness and its next children), after another one."""
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(fd, self.name)
        finally:
            os.close(fd)

    def close(self, settle=1.0):
        self.kernel.close()
        _setns(_root_ns, "the guest's root namespace")
        subprocess.run(["ip", "netns", "del", self.name], check=True)
        time.sleep(settle)      # the kernel frees the namespace's table in the background

    def dests(self, key):
        """{(address, port): Dest} of one service, straight from the kernel (cheap)."""
        return self.kernel.dests(key)

    def weight(self, table, i, j):
        d = self.dests(table.key(i)).get((table.rip(i, j), PORT))
        return None if d is None else d.weight


def ip_vs_lines():
    with open("/proc/net/ip_vs", "rb") as f:
        return f.read().count(b"\n")


def timed(argv, **kw):
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE)
    t = time.perf_counter()
    r = subprocess.run(argv, **kw)
    return time.perf_counter() - t, r


def poll(pred, start, timeout, interval):
    """Seconds from start until pred() holds (None on timeout)."""
    while True:
        if pred():
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return None
        time.sleep(interval)


CACHE_DIR = None    # the parsed-config cache ipvs-sync uses here (set by Bench)


def sync_env(syslog=True):
    env = dict(os.environ, LVSKIT_CACHE_DIR=CACHE_DIR)
    if syslog:
        env.pop("LVSKIT_NO_SYSLOG", None)
    else:
        env["LVSKIT_NO_SYSLOG"] = "1"
    return env


def clear_cache():
    """Empty the parsed-config cache: the next ipvs-sync parses the whole config."""
    for name in os.listdir(CACHE_DIR):
        os.remove(os.path.join(CACHE_DIR, name))


def sync_lines(stderr):
    """The ipvsadm lines ipvs-sync -v logged (one per kernel change)."""
    return [l for l in stderr.decode(errors="replace").splitlines() if "ipvsadm " in l]


class Keepalived:
    """keepalived -C (checkers only) in the current namespace, killed -9 so it leaves its entries."""

    def __init__(self, conf, tmp):
        self.tmp = tmp
        log = open(os.path.join(tmp, "keepalived.log"), "ab")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            [KEEPALIVED, "-C", "-n", "-l", "-f", conf, "-p", os.path.join(tmp, "ka.pid"),
             "-c", os.path.join(tmp, "ka-checkers.pid")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def session_pids(self):
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[3]) == self.proc.pid:     # session id
                        pids.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def kill(self):
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for _ in range(100):        # the checker child is reaped by init, not us
            if not self.session_pids():
                return
            time.sleep(0.02)


# A stand-in syslog daemon: reads /dev/log and drops every datagram, counting
# them; on a datagram b"\0mark" it prints its count.  (rsyslog would also
# write each line out, in another process: this is the least a listening
# daemon costs the sender.)
_READER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
n = 0
while True:
    d = s.recv(65536)
    if d == b"\0mark":
        print(n, flush=True)
    else:
        n += 1
"""


class SyslogReader:
    """/dev/log bound by a child process for a case's duration (the guest has no syslogd)."""

    def __init__(self, path="/dev/log"):
        self.path = path
        if os.path.lexists(path):
            raise RuntimeError(f"{path} exists: a syslog daemon runs here")
        self.proc = subprocess.Popen([PY, "-S", "-c", _READER, path], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def count(self):
        """Datagrams received so far (every sender that has exited is counted)."""
        self.sock.sendto(b"\0mark", self.path)
        return int(self.proc.stdout.readline())

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.sock.close()
        os.unlink(self.path)


# --- the cases -----------------------------------------------------------------

class Bench:
    def __init__(self, a, out):
        self.a, self.out = a, out
        self.S, self.R, self.N = a.services, a.reals, a.n
        self.samples = {}       # name -> [seconds]
        self.checks = {}        # name -> [bool] / text
        self.extra = {}
        self.tmp = tempfile.mkdtemp(prefix="bench-ipvs-")
        global CACHE_DIR
        CACHE_DIR = os.path.join(self.tmp, "cache")
        os.mkdir(CACHE_DIR, 0o700)
        self.ch = (self.S // 2, self.R // 2)               # the weight that changes
        self.d_del = (self.S // 4, 3 % self.R)             # drift: deleted by hand
        self.d_w = (3 * self.S // 4, max(self.R - 3, 0))   # drift: weight changed by hand

    def log(self, msg):
        print(f"# {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    def add(self, name, seconds):
        self.samples.setdefault(name, []).append(seconds)

    def check(self, name, ok):
        self.checks.setdefault(name, []).append(bool(ok))

    def files(self, table, sub):
        d = os.path.join(self.tmp, sub)
        for s in ("state", "run"):
            os.makedirs(os.path.join(d, s), exist_ok=True)
        ini, ka, rules = (os.path.join(d, n) for n in ("lvskit.ini", "keepalived.conf", "rules"))
        write(ini, table.ini(d))
        write(ka, table.keepalived())
        write(rules, table.rules())
        return d, ini, ka, rules

    # ---- start-up ----
    def startup(self):
        self.log("start-up cost")
        table = Table(self.S, self.R)
        _, ini, _, _ = self.files(table, "startup")
        imp = [PY, "-S", "-c", f"import sys; sys.path.insert(0, {LIB!r}); import lvskit.ipvs"]
        for _ in range(max(self.N, 3)):
            self.add("python3 -c pass", timed([PY, "-c", "pass"])[0])
            self.add("python3 -S -c pass (how bin/ starts)", timed([PY, "-S", "-c", "pass"])[0])
            self.add("python3 -S, import lvskit.ipvs", timed(imp)[0])
            clear_cache()
            t, r = timed(SYNC + ["--check-config", "-c", ini], env=sync_env())
            self.check("check-config exit 0", r.returncode == 0)
            self.add("ipvs-sync --check-config (cache cold: parse)", t)
            t, r = timed(SYNC + ["--check-config", "-c", ini], env=sync_env())
            self.add("ipvs-sync --check-config (cache warm)", t)

    # ---- 1. cold load ----
    def cold(self):
        self._cold(["ipvs-sync (cache warm)", "ipvsadm -R", "keepalived", "ipvs-sync (cache cold)"],
                   "cold load")

    def cold_syslog(self):
        """The cold load again with a syslog daemon listening: ipvs-sync then sends one
        line per kernel change (11,000), keepalived what it logs."""
        try:
            reader = SyslogReader()
        except RuntimeError as e:
            self.extra["cold load, syslog listening"] = f"not run: {e}"
            return
        try:
            self._cold(["ipvs-sync (cache warm)", "keepalived", "ipvs-sync (cache cold)"],
                       "cold load, syslog listening", reader)
        finally:
            reader.close()

    def _cold(self, tools, label, reader=None):
        table = Table(self.S, self.R)
        d, ini, ka, rules = self.files(table, "cold")
        for rep in range(self.N):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]   # rotate: no tool always first
            for tool in order:
                self.log(f"{label} {rep + 1}/{self.N}: {tool}")
                before = reader.count() if reader else 0
                shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
                os.makedirs(os.path.join(d, "state"))
                ns = Netns("bcold")
                try:
                    if tool.startswith("ipvs-sync"):
                        clear_cache()
                        if "warm" in tool:  # the config parsed by an earlier run (untimed)
                            subprocess.run(SYNC + ["--check-config", "-c", ini], env=sync_env(), check=True)
                        t, r = timed(SYNC + ["-c", ini], env=sync_env())
                        self.check(f"{label}: {tool} exit 0", r.returncode == 0)
                    elif tool == "ipvsadm -R":
                        with open(rules) as f:
                            t, r = timed([IPVSADM, "-R"], stdin=f)
                        self.check("cold ipvsadm exit 0", r.returncode == 0)
                    else:
                        k = Keepalived(ka, d)
                        t = poll(lambda: ip_vs_lines() >= table.lines, k.start, 300, 0.02)
                        k.kill()
                    full = ip_vs_lines() == table.lines
                    self.check(f"{label}: {tool}: full table", full)
                    if t is not None:
                        self.add(f"{label}: {tool}", t)
                    if reader:
                        n = reader.count() - before
                        self.extra[f"{label}: {tool}: syslog lines"] = n
                        if tool.startswith("ipvs-sync"):    # one per kernel change
                            self.check(f"{label}: {tool}: one syslog line per change", n == table.lines - 3)
                finally:
                    ns.close()

    # ---- 2-5. ipvs-sync on a loaded table ----
    def sync_steady(self):
        table = Table(self.S, self.R)
        d, ini, _, rules = self.files(table, "steady")
        ns = Netns("bsync")
        i, j = self.ch
        base = table.weights[i, j]
        try:
            self.log("steady: load with ipvsadm -R, first ipvs-sync (writes its state file)")
            with open(rules) as f:
                subprocess.run([IPVSADM, "-R"], stdin=f, check=True)
            t, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
            self.check("steady first run: nothing to do", r.returncode == 0 and not sync_lines(r.stderr))

            self.log("no-op and one-weight runs")
            svc = f"{table.vip(i)}:{PORT}"
            rip = f"{table.rip(i, j)}:{PORT}"
            for _ in range(self.N):
                subprocess.run(SYNC + ["--check-config", "-c", ini], env=sync_env(), check=True)  # warm
                t, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
                self.check("no-op: exit 0 and no change", r.returncode == 0 and not sync_lines(r.stderr))
                self.add("no-op: ipvs-sync (cache warm)", t)
                clear_cache()
                t, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
                self.check("no-op: exit 0 and no change", r.returncode == 0 and not sync_lines(r.stderr))
                self.add("no-op: ipvs-sync (cache cold)", t)
                t, _ = timed([IPVSADM, "-Sn"])
                self.add("no-op: ipvsadm -Sn > /dev/null", t)

                table.weights[i, j] = base + 10
                write(ini, table.ini(d))
                clear_cache()       # an edited text misses the cache anyway: made sure of
                t, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
                lines = sync_lines(r.stderr)
                self.extra.setdefault("one-weight ipvs-sync -v lines", lines)
                self.check("one weight: exactly one ipvsadm line",
                           r.returncode == 0 and len(lines) == 1 and lines[0].split("ipvsadm", 1)[1].startswith(" -e"))
                self.check("one weight: kernel shows it", ns.weight(table, i, j) == base + 10)
                self.add("one weight: ipvs-sync", t)

                t, r = timed([IPVSADM, "-e", "-t", svc, "-r", rip, "-g", "-w", str(base)])
                self.check("one weight: ipvsadm -e applied", r.returncode == 0 and ns.weight(table, i, j) == base)
                self.add("one weight: ipvsadm -e", t)
                table.weights[i, j] = base
                write(ini, table.ini(d))

            self.log("drift repair")
            (a, b), (c, e) = self.d_del, self.d_w
            for _ in range(self.N):
                self.hand_drift(table, a, b, c, e)
                t, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
                lines = sync_lines(r.stderr)
                self.extra.setdefault("drift ipvs-sync -v lines", lines)
                self.check("drift: ipvs-sync repaired both",
                           r.returncode == 0 and len(lines) == 2
                           and ns.weight(table, a, b) == table.weights[a, b]
                           and ns.weight(table, c, e) == table.weights[c, e])
                self.add("drift repair: ipvs-sync", t)

            self.profile(table, d, ini)
            self.every(ns, table, d, ini)
        finally:
            ns.close()

    def hand_drift(self, table, a, b, c, e):
        subprocess.run([IPVSADM, "-d", "-t", f"{table.vip(a)}:{PORT}", "-r", f"{table.rip(a, b)}:{PORT}"],
                       check=True)
        subprocess.run([IPVSADM, "-e", "-t", f"{table.vip(c)}:{PORT}", "-r", f"{table.rip(c, e)}:{PORT}",
                        "-g", "-w", "99"], check=True)

    def every(self, ns, table, d, ini):
        self.log("ipvs-sync --every 30")
        i, j = self.ch
        base = table.weights[i, j]
        c, e = self.d_w
        errlog = open(os.path.join(d, "every.log"), "wb")
        p = subprocess.Popen(SYNC + ["--every", "30", "-c", ini], env=sync_env(),
                             stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
        try:
            # its first pass is done once it has repaired a hand-made drift
            subprocess.run([IPVSADM, "-e", "-t", f"{table.vip(c)}:{PORT}", "-r", f"{table.rip(c, e)}:{PORT}",
                            "-g", "-w", "77"], check=True)
            t0 = time.perf_counter()
            first = poll(lambda: ns.weight(table, c, e) == table.weights[c, e], t0, 120, 0.05)
            self.extra["--every first pass (start to repaired), s"] = first
            # An edit then SIGHUP (as keepalived is reloaded: read at once), and an edit
            # alone (noticed, and read once it has stayed unchanged for a second).
            for rep in range(2 * self.N):
                hup = rep // 2 % 2 == 0     # two of each in turn; every edit changes the weight
                new = base + 10 if rep % 2 == 0 else base
                table.weights[i, j] = new
                text = table.ini(d)
                tmp = ini + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                t0 = time.perf_counter()
                os.rename(tmp, ini)
                if hup:
                    os.kill(p.pid, signal.SIGHUP)
                t = poll(lambda: ns.weight(table, i, j) == new, t0, 60, 0.01)
                self.check("--every: change seen", t is not None)
                if t is not None:
                    self.add("config edit + SIGHUP to kernel: ipvs-sync --every 30" if hup else
                             "config edit to kernel: ipvs-sync --every 30", t)
                time.sleep(1.5)
        finally:
            p.terminate()
            p.wait()
            errlog.close()

    def keepalived_weight(self, k, ka, table, ns, new):
        """keepalived.conf rewritten, SIGHUP: seconds until ns's kernel shows the changed weight (None: never)."""
        i, j = self.ch
        write(ka, table.keepalived())
        t0 = time.perf_counter()
        k.reload()
        return poll(lambda: ns.weight(table, i, j) == new, t0, 60, 0.01)

    # ---- 2, 4, 5 for keepalived ----
    def keepalived_steady(self):
        table = Table(self.S, self.R)
        d, _, ka, _ = self.files(table, "keepalived")
        ns = Netns("bka")
        i, j = self.ch
        base = table.weights[i, j]
        k = None
        try:
            self.log("keepalived: load, then reloads")
            k = Keepalived(ka, d)
            t = poll(lambda: ip_vs_lines() >= table.lines, k.start, 300, 0.02)
            self.extra["keepalived load before reloads, s"] = t
            time.sleep(1.0)
            for rep in range(self.N):
                new = base + 10 if rep % 2 == 0 else base
                table.weights[i, j] = new
                t = self.keepalived_weight(k, ka, table, ns, new)
                self.check("keepalived reload: change seen", t is not None)
                if t is not None:
                    self.add("one weight: keepalived SIGHUP reload", t)
                time.sleep(1.0)

            self.log("keepalived: drift after SIGHUP")
            (a, b), (c, e) = self.d_del, self.d_w
            self.hand_drift(table, a, b, c, e)
            new = table.weights[i, j] + 1      # a real config change marks the reload's end
            table.weights[i, j] = new
            seen = self.keepalived_weight(k, ka, table, ns, new)
            time.sleep(2.0)
            restored_del = ns.weight(table, a, b)
            restored_w = ns.weight(table, c, e)
            self.extra["keepalived after SIGHUP: deleted real server"] = (
                "back" if restored_del == table.weights[a, b] else f"still missing ({restored_del})")
            self.extra["keepalived after SIGHUP: weight changed by hand"] = (
                "restored" if restored_w == table.weights[c, e] else f"still {restored_w} (config: {table.weights[c, e]})")
            self.check("keepalived drift reload seen", seen is not None)
        finally:
            if k:
                k.kill()
            ns.close()

    # ---- one weight, ipvs-sync and keepalived in turns ----
    def weight_pairs(self):
        """The one-weight change by ipvs-sync and by keepalived's reload, one after the other.

        The same edit each round: ipvs-sync in its namespace (the table
        loaded by ipvsadm -R), then keepalived's SIGHUP in another (its own
        load).  Runs measured seconds apart see the same spell of this
        emulated machine, slow or fast, so the ratio of each round is the
        steadier figure: the goal takes the median of the rounds' ratios.
        """
        table = Table(self.S, self.R)
        d, ini, ka, rules = self.files(table, "pairs")
        i, j = self.ch
        base = table.weights[i, j]
        ka_ns = sync_ns = k = None
        try:
            self.log("in turns: keepalived loads, ipvsadm -R loads the other namespace")
            ka_ns = Netns("bpka")
            k = Keepalived(ka, d)
            poll(lambda: ip_vs_lines() >= table.lines, k.start, 300, 0.02)
            sync_ns = Netns("bpsync")
            with open(rules) as f:
                subprocess.run([IPVSADM, "-R"], stdin=f, check=True)
            subprocess.run(SYNC + ["-c", ini], env=sync_env(), check=True)   # its state file, its cache
            time.sleep(1.0)
            for rep in range(self.N):
                new = base + 10 if rep % 2 == 0 else base
                table.weights[i, j] = new
                sync_ns.enter()
                write(ini, table.ini(d))
                clear_cache()
                t_sync, r = timed(SYNC + ["-v", "-c", ini], env=sync_env())
                lines = sync_lines(r.stderr)
                self.check("in turns: ipvs-sync one write, kernel shows it",
                           r.returncode == 0 and len(lines) == 1 and sync_ns.weight(table, i, j) == new)
                ka_ns.enter()
                t_ka = self.keepalived_weight(k, ka, table, ka_ns, new)
                self.check("in turns: keepalived reload seen", t_ka is not None)
                if t_ka is not None:
                    self.add("one weight, in turns: ipvs-sync", t_sync)
                    self.add("one weight, in turns: keepalived SIGHUP reload", t_ka)
                    self.add("one weight, in turns: ratio ipvs-sync / keepalived", t_sync / t_ka)
                time.sleep(1.0)
        finally:
            if k:
                if ka_ns:
                    ka_ns.enter()
                k.kill()
            for ns in (sync_ns, ka_ns):
                if ns:
                    ns.close()

    # ---- 6. pyroute2 vs our codec, in-process ----
    def reference(self):
        s = self.a.ref_services
        table = Table(s, self.R)
        path = os.path.join(self.tmp, "ref.json")
        with open(path, "w") as f:
            json.dump(table.json(), f)
        for rep in range(self.a.ref_n):
            for name, code in (("pyroute2", PYROUTE2_CODE), ("codec", CODEC_CODE)):
                self.log(f"reference {rep + 1}/{self.a.ref_n}: {name} {s}x{self.R}")
                ns = Netns("bref")
                try:
                    r = subprocess.run([PY, "-c", code, VENDOR if name == "pyroute2" else LIB, path],
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        self.extra[f"reference {name} error"] = r.stderr[-2000:]
                        continue
                    res = json.loads(r.stdout)
                    self.check(f"reference {name}: full table", ip_vs_lines() == table.lines
                               and res["dests"] == s * self.R)
                    for k, v in res.items():
                        if k != "dests":
                            self.add(f"ref {name}: {k}", v)
                finally:
                    ns.close()

    # ---- where ipvs-sync's time goes ----
    def profile(self, table, d, ini):
        self.log("profile: -X importtime, cProfile no-op and one-weight")
        import pstats
        import io
        i, j = self.ch
        base = table.weights[i, j]
        r = subprocess.run([PY, "-S", "-X", "importtime"] + SYNC + ["-c", ini], env=sync_env(),
                           capture_output=True, text=True)
        imports = []
        for line in r.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m:
                imports.append((int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)))
        top = sorted([x for x in imports if x[2] == 1], key=lambda x: -x[1])[:12]
        self.extra["importtime total (sum of self), s"] = sum(x[0] for x in imports) / 1e6
        self.extra["importtime modules"] = len(imports)
        self.extra["importtime top-level"] = [[n, c / 1e6] for _, c, _, n in top]
        report = io.StringIO()
        stages = {}
        for case in ("no-op", "one-weight"):
            if case == "one-weight":
                table.weights[i, j] = base + 10
                write(ini, table.ini(d))
            prof = os.path.join(self.out, f"ipvs_apply-{case}.prof")
            t, r = timed([PY, "-S", "-m", "cProfile", "-o", prof] + SYNC + ["-c", ini], env=sync_env())
            self.extra[f"cProfile {case} whole process, s"] = t
            st = pstats.Stats(prof, stream=report)
            stages[case] = profile_stages(st)
            report.write(f"\n===== {case}: top 25 by cumulative time =====\n")
            st.sort_stats("cumulative").print_stats(25)
            report.write(f"\n===== {case}: top 25 by own time =====\n")
            st.sort_stats("tottime").print_stats(25)
        table.weights[i, j] = base
        write(ini, table.ini(d))
        subprocess.run(SYNC + ["-c", ini], env=sync_env(), check=True)
        self.extra["profile stages, s"] = stages
        with open(os.path.join(self.out, "ipvs_apply-profile.txt"), "w") as f:
            f.write("-X importtime (us: self | cumulative | module)\n")
            for s_, c, depth, n in sorted(imports, key=lambda x: -x[1])[:40]:
                f.write(f"{s_:9d} | {c:9d} | {' ' * depth}{n}\n")
            f.write(report.getvalue())

    def run(self):
        t0 = time.perf_counter()
        self.warm_up()
        for step in self.a.cases.split(","):
            getattr(self, step)()
        self.extra["harness wall time, s"] = time.perf_counter() - t0

    def warm_up(self):
        """One untimed pass so .pyc files exist in the guest's tmpfs overlay and binaries are cached."""
        self.log("warm-up")
        table = Table(min(self.S, 20), self.R)
        _, ini, ka, rules = self.files(table, "warm")
        ns = Netns("bwarm")
        try:
            subprocess.run(SYNC + ["-c", ini], env=sync_env(), check=True)
            subprocess.run([IPVSADM, "-Sn"], stdout=subprocess.DEVNULL, check=True)
            subprocess.run([KEEPALIVED, "--version"], capture_output=True)
            subprocess.run([PY, "-c", f"import sys; sys.path.insert(0, {VENDOR!r}); import pyroute2"],
                           check=True)
        finally:
            ns.close(settle=0)


# pstats keys are (file, line, function): match on the file's tail and the name
STAGES = [
    ("configcache.load (cache read, else parse and cache write)", "lvskit/configcache.py", "load"),
    ("  config.parse (INI parse + validate)", "lvskit/config/__init__.py", "parse"),
    ("  cache written (pickle)", "lvskit/configcache.py", "_put"),
    ("Kernel() (socket, family lookup)", "lvskit/ipvs.py", "__init__"),
    ("Kernel.read (dump + decode)", "lvskit/ipvs.py", "read"),
    ("  _dump (netlink I/O and the decoding below)", "lvskit/ipvs.py", "_dump"),
    ("  attributes decoded by type (Attrs.unpack)", "lvskit/ipvs.py", "unpack"),
    ("  records built (dest_from)", "lvskit/ipvs.py", "dest_from"),
    ("desired_table (config -> table)", "lvskit/desired.py", "desired_table"),
    ("plan_changes", "lvskit/plan.py", "plan_changes"),
    ("Kernel.execute (writes)", "lvskit/ipvs.py", "execute"),
    ("state load/save", "lvskit/state.py", "load"),
    ("reconcile (all of the work)", "lvskit/sync.py", "reconcile"),
]


def profile_stages(st):
    out = {"total (profiled)": st.total_tt}
    for label, tail, func in STAGES:
        cum = 0.0
        for (fname, _, fn), (_, _, _, ct, _) in st.stats.items():
            if (fn == func or func.endswith("_") and fn.startswith(func)) and fname.endswith(tail):
                cum += ct
        out[label] = cum
    imports = 0.0
    for (fname, _, fn), (_, _, _, ct, _) in st.stats.items():
        if fn == "_find_and_load" and "importlib" in fname:
            imports = max(imports, ct)
    out["imports (top-level _find_and_load)"] = imports
    return out


PYROUTE2_CODE = r"""
import json, socket, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from pyroute2 import IPVS, IPVSService, IPVSDest
t1 = time.perf_counter()
table = json.load(open(sys.argv[2]))
with IPVS() as ipvs:
    for vip, port, reals in table:
        s = IPVSService(addr=vip, port=port, protocol=socket.IPPROTO_TCP, sched_name="wlc")
        ipvs.service("add", service=s)
        for rip, w in reals:
            ipvs.dest("add", service=s, dest=IPVSDest(addr=rip, port=port, weight=w, fwd_method=3))
    t2 = time.perf_counter()
    n = 0
    for msg in ipvs.service("dump"):
        s = IPVSService.from_message(msg)
        key = IPVSService(af=s["af"], protocol=s["protocol"], addr=s["addr"], port=s["port"])
        n += len([IPVSDest.from_message(m) for m in ipvs.dest("dump", service=key)])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "read": t3 - t2, "dests": n}))
"""

CODEC_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from lvskit import ipvs, plan
from lvskit.model import AF_INET, Dest, Service, ServiceKey
t1 = time.perf_counter()
table = json.load(open(sys.argv[2]))
desired = {}
for vip, port, reals in table:
    key = ServiceKey(AF_INET, 6, vip, port)
    desired[key] = Service(key, "wlc", dests={(r, port): Dest(r, port, 3, w) for r, w in reals})
with ipvs.Kernel() as k:
    ops = plan.plan_changes(desired, {})
    failed = k.execute(ops)
    t2 = time.perf_counter()
    n = sum(len(s.dests) for s in k.read().values())
t3 = time.perf_counter()
assert not failed, failed
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "read": t3 - t2, "dests": n}))
"""


# --- the report ----------------------------------------------------------------

def stats(xs):
    return statistics.median(xs), min(xs), max(xs), len(xs)


def fmt(x):
    return "–" if x is None else f"{x:.3f}"


def report(b, meta):
    S = b.samples
    med = {k: statistics.median(v) for k, v in S.items()}
    rows = []
    for name, xs in S.items():
        m, lo, hi, n = stats(xs)
        rows.append(f"| {name} | {m:.3f} | {lo:.3f} | {hi:.3f} | {n} |")
    out = [f"IPVS apply benchmark, {meta['date']}, guest kernel {meta['kernel']}, "
           f"{b.S} services x {b.R} real servers (reference: {b.a.ref_services} x {b.R}), N={b.N}",
           "", "| case: tool | median s | min s | max s | n |", "|---|---|---|---|---|"] + rows

    def ok(name):
        v = b.checks.get(name)
        return v is not None and all(v)

    def g(name):
        return med.get(name)

    goals = []

    def goal(label, left, right, factor, extra_ok=True, extra=""):
        if left is None or right is None:
            goals.append(f"| {label} | – | – | not measured |")
            return
        verdict = "PASS" if left <= factor * right and extra_ok else "FAIL"
        goals.append(f"| {label} | {left:.3f} | {factor:g} x {right:.3f} = {factor * right:.3f} | "
                     f"{verdict}{extra} |")

    for label in ("cold load", "cold load, syslog listening"):
        for c in ("cache warm", "cache cold"):
            if g(f"{label}: ipvs-sync ({c})") is not None:
                goal(f"{label}: ipvs-sync ({c}) <= keepalived", g(f"{label}: ipvs-sync ({c})"),
                     g(f"{label}: keepalived"), 1)
    one = ok("one weight: exactly one ipvsadm line") and ok("one weight: kernel shows it")
    goal("one weight, cache cold: ipvs-sync <= 4 x keepalived reload, one write", g("one weight: ipvs-sync"),
         g("one weight: keepalived SIGHUP reload"), 4, one,
         "" if one else " (not exactly one write)")
    turns = g("one weight, in turns: ratio ipvs-sync / keepalived")
    two = ok("in turns: ipvs-sync one write, kernel shows it")
    if turns is not None:
        goals.append(f"| one weight, cache cold, in turns: median of the rounds' ratios <= 4, one write | "
                     f"{turns:.2f}x | 4x | "
                     f"{'PASS' if turns <= 4 and two else 'FAIL'}{'' if two else ' (not exactly one write)'} |")
    for c in ("cache warm", "cache cold"):
        goal(f"no-op: ipvs-sync ({c}) <= 3 x ipvsadm -Sn", g(f"no-op: ipvs-sync ({c})"),
             g("no-op: ipvsadm -Sn > /dev/null"), 3)
    goal("--every: edit + SIGHUP to kernel <= keepalived reload",
         g("config edit + SIGHUP to kernel: ipvs-sync --every 30"), g("one weight: keepalived SIGHUP reload"), 1)
    drift = b.checks.get("drift: ipvs-sync repaired both")
    goals.append(f"| drift repaired by ipvs-sync | {sum(drift or [])}/{len(drift or [])} runs | all | "
                 f"{'PASS' if drift and all(drift) else 'FAIL'} |")
    out += ["", "| goal | ipvs-sync s | limit s | verdict |", "|---|---|---|---|"] + goals
    out += ["", "Checks (all runs):"]
    for name, v in b.checks.items():
        out.append(f"- {name}: {sum(v)}/{len(v)}")
    out += ["", "Notes:"]
    for k, v in b.extra.items():
        if k in ("profile stages, s",):
            continue
        if isinstance(v, float):
            v = f"{v:.3f}"
        out.append(f"- {k}: {v}")
    stages = b.extra.get("profile stages, s")
    if stages:
        cases = list(stages)
        out += ["", "ipvs-sync under cProfile (cumulative s; profiler overhead included):", "",
                "| stage | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
        for label in stages[cases[0]]:
            out.append(f"| {label} | " + " | ".join(fmt(stages[c].get(label)) for c in cases) + " |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="\n".join(__doc__.split("\n")[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 100 x 10, N=1, reference 10 x 10 (under 2 minutes)")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("-n", type=int, default=5, help="repetitions per case (default 5)")
    ap.add_argument("--ref-services", type=int, default=100, help="services for the pyroute2 reference")
    ap.add_argument("--ref-n", type=int, default=3)
    ap.add_argument("--cases", default="startup,cold,cold_syslog,sync_steady,keepalived_steady,weight_pairs,"
                    "reference",
                    help="comma-separated subset, in order")
    ap.add_argument("--out", default=os.environ.get("LAB_OUT") or os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    if a.quick:
        a.services, a.n, a.ref_services, a.ref_n = 100, 1, 10, 1
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        sys.exit("ipvs_apply: needs root and a kernel with IPVS (run it in the lab guest: see bench/README.md)")
    os.makedirs(a.out, exist_ok=True)
    # Measure what an installed system runs: compiled .pyc files (the warm-up writes
    # them into the guest's tmpfs overlay).  Shells here often export this variable.
    dont_write = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    global _root_ns
    _root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "kernel": platform.release(),
            "services": a.services, "reals": a.reals, "n": a.n, "quick": a.quick,
            "ref_services": a.ref_services, "PYTHONDONTWRITEBYTECODE (dropped)": dont_write,
            "guest_loadavg_before": open("/proc/loadavg").read().strip(),
            "namespaces": "a fresh netns per cold load / reference run; one each for the ipvs-sync "
                          "and keepalived steady-state cases; the harness enters them with setns"}
    b = Bench(a, a.out)
    try:
        b.run()
    finally:
        meta["guest_loadavg_after"] = open("/proc/loadavg").read().strip()
        with open(os.path.join(a.out, "ipvs_apply.json"), "w") as f:
            json.dump({"meta": meta, "samples": b.samples, "checks": b.checks, "extra": b.extra}, f, indent=1)
        shutil.rmtree(b.tmp, ignore_errors=True)
    text = report(b, meta)
    with open(os.path.join(a.out, "ipvs_apply.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
