"""hb-send and hb-listen speaking systemd's notify protocol, as Type=notify services with a watchdog.

The real daemons in a network namespace, first with NOTIFY_SOCKET,
WATCHDOG_USEC and WATCHDOG_PID as systemd sets them, pointing at a socket
the test owns in systemd's place: READY=1 comes once the sockets are up;
WATCHDOG=1 comes regularly from the loop; a SIGSTOPped loop stops the pings
for longer than the watchdog timeout; SIGCONT and they resume; SIGTERM says
STOPPING=1.  Then under a real systemd, with the shipped units: started
(systemctl start waits for READY=1), SIGSTOPped, killed by the watchdog and
started again.

The machine's PID 1 need not be systemd: the test runs a manager of its own
(`systemd --user` as root, confined to cgroups and mounts of its own:
usermanager.py).
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usermanager  # noqa: E402
from hbtopo import FRONT, HB, HOST, ROOT, NotifySocket, Pair  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("ss"),
                                reason="needs root, iproute2 (network namespaces) and ss")

WATCHDOG = 1.0      # seconds, the daemons' WATCHDOG_USEC: they ping every half of it


@pytest.fixture
def pair(tmp_path):
    p = Pair(f"hbw{os.getpid() % 10000}", str(tmp_path / "pair"))
    yield p
    p.close()


def stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


class Daemon:
    """One daemon of the director's, started as systemd starts a Type=notify service with WatchdogSec."""

    def __init__(self, p, name, manager):
        self.manager, self.log = manager, os.path.join(p.dir, f"{name}.log")
        env = dict(os.environ, LVSKIT_NO_SYSLOG="1", NOTIFY_SOCKET=manager.path,
                   WATCHDOG_USEC=str(int(WATCHDOG * 1e6)))
        # WATCHDOG_PID names the main process, as systemd's does: sh's pid, kept by
        # both execs (sh's, then ip netns exec's).
        argv = (["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh",
                 "ip", "netns", "exec", p.ns["director"]] + p.tool("director", name, "-v"))
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=err, stderr=err)
        p.procs["director"] = p.procs.get("director", []) + [self.proc]

    def said(self):
        with open(self.log) as f:
            return f.read()

    def next(self, name, timeout):
        """(arrival, fields) of the next message that sets name, within timeout; every message
        on the way must be the main process's (NotifyAccess=main)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.manager.next(max(0.0, deadline - time.monotonic()))
            if m is None:
                return None
            at, pid, fields = m
            assert pid == self.proc.pid, (pid, fields)
            if name in fields:
                return at, fields


def children(pid):
    """The command lines (NUL-separated) of pid's children."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{entry}/cmdline") as f:
                out.append(f.read())
        except (OSError, ValueError, IndexError):
            continue
    return out


def local_udp(p, pid):
    """The local addresses of pid's UDP sockets in the director's namespace, as ss(8) lists them."""
    out = p.run("director", ["ss", "-Hnuap"]).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


@pytest.mark.parametrize("name", ["hb-send", "hb-listen"])
def test_ready_then_pings_from_the_loop_that_a_stopped_loop_stops(pair, tmp_path, name):
    manager = NotifySocket(str(tmp_path / "notify"))
    d = Daemon(pair, name, manager)
    try:
        # hb-listen's worker imports pyroute2 before it is ready: a loaded machine takes a while
        ready = d.next("READY", 30)
        assert ready and ready[1]["READY"] == "1", d.said()
        assert ready[1]["STATUS"].startswith("director: ")
        # Ready means working: every path's socket bound; hb-listen's on the port, its worker up.
        bound = local_udp(pair, d.proc.pid)
        hosts = {a.rsplit(":", 1)[0] for a in bound}
        assert {FRONT + str(HOST["director"]), HB + str(HOST["director"])} <= hosts, bound
        if name == "hb-listen":
            assert {a.rsplit(":", 1)[1] for a in bound} == {"694"}, bound
            assert any("takeover\0--serve" in c for c in children(d.proc.pid)), children(d.proc.pid)

        # Regular pings, at about half the watchdog timeout: none late, none per beat or wake.
        alive = [ready[0]]
        for _ in range(5):
            ping = d.next("WATCHDOG", 2 * WATCHDOG)
            assert ping and ping[1]["WATCHDOG"] == "1", d.said()
            alive.append(ping[0])
        gaps = [b - a for a, b in zip(alive, alive[1:])]
        assert all(WATCHDOG / 2 - 0.1 < g < WATCHDOG for g in gaps), gaps

        # The loop stopped: no ping for longer than the watchdog timeout.
        os.kill(d.proc.pid, signal.SIGSTOP)
        assert pair.wait(lambda: stopped(d.proc.pid), 5)
        stopped_at = time.time()
        last = alive[-1]
        while True:         # a ping sent just before the stop may still be queued
            m = d.next("WATCHDOG", 0)
            if m is None:
                break
            assert m[0] <= stopped_at
            last = m[0]
        assert d.next("WATCHDOG", 2 * WATCHDOG) is None, "a ping from a stopped loop"
        os.kill(d.proc.pid, signal.SIGCONT)
        ping = d.next("WATCHDOG", 2 * WATCHDOG)
        assert ping, d.said()
        assert ping[0] - last > WATCHDOG        # what systemd's watchdog acts on
        again = d.next("WATCHDOG", 2 * WATCHDOG)
        assert again and again[0] - ping[0] < WATCHDOG, d.said()
        assert d.proc.poll() is None

        d.proc.send_signal(signal.SIGTERM)
        assert d.next("STOPPING", 10), d.said()
        assert d.proc.wait(10) == 0, d.said()
    finally:
        manager.close()


# --- under a real systemd ---------------------------------------------------------------------

@pytest.fixture
def manager(tmp_path):
    """A systemd service manager of the test's own (usermanager.py); the environment
    systemctl --user needs to reach it."""
    if not usermanager.available():
        pytest.skip("needs systemd and unshare")
    with usermanager.running(str(tmp_path), f"lvskit-test-{os.getpid()}") as env:
        yield env


systemctl, show = usermanager.systemctl, usermanager.show


def ended(p, name):
    return os.path.join(p.dir, f"{name}.ended")


def endings(p, name):
    """How each run of the unit ended: [(SERVICE_RESULT, EXIT_CODE, EXIT_STATUS), ...]."""
    try:
        with open(ended(p, name)) as f:
            return [tuple(line.split()) for line in f]
    except FileNotFoundError:
        return []


def install_unit(env, p, name):
    """The shipped unit, started as the checkout's daemon in the director's namespace."""
    lines = []
    for line in open(os.path.join(ROOT, "conf", "systemd", f"{name}.service")):
        if line.startswith("ExecStart="):
            line = "ExecStart=" + " ".join([shutil.which("ip"), "netns", "exec", p.ns["director"]]
                                           + p.tool("director", name, "-v")) + "\n"
            # the test's cache and no syslog, as every test runs the scripts; no journald here
            log = os.path.join(p.dir, f"{name}.log")
            line += (f"Environment=LVSKIT_NO_SYSLOG=1 LVSKIT_CACHE_DIR={os.environ['LVSKIT_CACHE_DIR']}\n"
                     f"StandardOutput=append:{log}\nStandardError=append:{log}\n"
                     # how each run ended, in systemd's words
                     "ExecStopPost=/bin/sh -c 'echo $$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS >> "
                     f"{ended(p, name)}'\n")
        lines.append(line)
    units = os.path.join(env["XDG_RUNTIME_DIR"], "systemd", "user")
    os.makedirs(units, exist_ok=True)
    with open(os.path.join(units, f"{name}.service"), "w") as f:
        f.write("".join(lines))
    assert systemctl(env, "daemon-reload").returncode == 0


@pytest.mark.parametrize("name", ["hb-send", "hb-listen"])
def test_systemd_restarts_a_stopped_loop_through_its_watchdog(pair, manager, name):
    install_unit(manager, pair, name)
    r = systemctl(manager, "start", f"{name}.service")      # returns once READY=1 came
    before = show(manager, name)
    assert r.returncode == 0 and before["ActiveState"] == "active", (r.stderr, before, pair.log(name))
    watchdog = float(systemctl(manager, "show", name, "-p", "WatchdogUSec", "--value").stdout.strip("s\n"))
    assert watchdog > 0
    pid = int(before["MainPID"])
    assert pid > 0 and before["NRestarts"] == "0"
    # Its pings keep it: no watchdog timeout while the loop runs (half as long again as one).
    assert not pair.wait(lambda: show(manager, name) != before, watchdog * 1.5, step=0.2), \
        (show(manager, name), endings(pair, name), pair.log(name))

    os.kill(pid, signal.SIGSTOP)
    # The watchdog's timeout, then SIGABRT and a start again (RestartSec=), READY=1 again.
    again = {}

    def restarted():
        again.update(show(manager, name))
        return again["NRestarts"] == "1" and again["ActiveState"] == "active"
    assert pair.wait(restarted, watchdog + 30, step=0.1), (again, endings(pair, name), pair.log(name))
    assert int(again["MainPID"]) not in (0, pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # the watchdog's doing: SIGABRT (WatchdogSignal=), a core dumped or not
    [(result, code, status)] = endings(pair, name)
    assert (result, status) == ("watchdog", "ABRT") and code in ("killed", "dumped"), pair.log(name)

    # A clean stop: SIGTERM, exit 0.
    assert systemctl(manager, "stop", f"{name}.service").returncode == 0
    assert endings(pair, name)[1:] == [("success", "exited", "0")], pair.log(name)
