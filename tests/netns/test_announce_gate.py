"""lvs-announce, the health gate, steering a real BIRD 2 of our own.

Which side is real:
- real: BIRD 2 in a namespace of ours (birdns.py), every birdc call, the
  include file ipvs-sync writes and its `birdc configure`, lvs-announce as a
  resident process (its loop, SIGTERM, --drain, --withdraw), and what BIRD
  then holds (`show protocols`, the VIPs' routes it would export);
- fake: the IPVS table (this host has no IPVS): a table in a file that
  ipvs-sync and lvs-announce share (filekernel.py; emptying the file is
  `ipvsadm -C`), and check-real's health.json, written here with a fresh
  "checked" (the checks' real servers would be outside addresses).
tests/lab/test_announce_gate.py does it again on the guest's real IPVS.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "lib"))
from birdns import Bird  # noqa: E402
import usermanager  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                       reason="BIRD 2 not installed (bird2: make apt-deps)"),
]

EVERY = 0.2     # seconds between the gate's rounds here
SERVICES = """\
[service www]
address = 192.0.2.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
check_interval = 60
real.198.51.100.13 = weight=1
real.198.51.100.43 = weight=1
[service www6]
address = 2001:db8::26
port = 80
scheduler = mh
sched_flags = mh-port
real.2001:db8::13 = weight=1
"""
ENV = {**os.environ, "LVSKIT_NO_SYSLOG": "1"}


class Director:
    def __init__(self, tmp, bird):
        self.tmp, self.bird = tmp, bird
        self.table = str(tmp / "ipvs-table.pickle")
        self.config = str(tmp / "lvskit.ini")
        with open(self.config, "w") as f:
            f.write(bird.lvskit_config(tmp, SERVICES))
        os.makedirs(os.path.dirname(bird.include))

    def run(self, script, *args, background=False):
        argv = [sys.executable, "-S", os.path.join(HERE, "filekernel.py"), self.table,
                os.path.join(ROOT, "bin", script), "-c", self.config, *args]
        if background:
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60)

    def fresh_health(self):
        from lvskit import config, health
        health.save(config.load(self.config), health.View(checked={"www": time.time()}))

    def announced(self):
        """{protocol: up?} of ours, and the VIP routes BIRD holds from them."""
        st = self.bird.states()
        return ((st["lvskit_vip"], st["lvskit_vip_v6"]),
                self.bird.routes("lvskit_vip") + self.bird.routes("lvskit_vip_v6"))

    def verdict(self):
        try:
            with open(self.tmp / "run" / "announce.json") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}


ON = (("up", "up"), ["192.0.2.26/32", "2001:db8::26/128"])
OFF = (("down", "down"), [])


def until(what, timeout=30):
    """Seconds it took what() to hold (polled); fails after timeout."""
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < timeout, "not within the time"
        time.sleep(0.02)
    return time.monotonic() - start


def rounds_after(d, t, n):
    """Wait until the gate has finished n more rounds after wall-clock time t (its announce.json)."""
    until(lambda: d.verdict().get("checked", 0) > t + (n - 1) * EVERY)


@pytest.fixture
def director(tmp_path):
    (tmp_path / "bird").mkdir()
    with Bird(tmp_path / "bird", tmp_path / "etc-bird" / "lvskit-vips.conf") as b:
        d = Director(tmp_path, b)
        d.run("ipvs-sync")              # the include file BIRD starts with (BIRD not up: exit 1)
        b.start()
        r = d.run("ipvs-sync")
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        d.fresh_health()
        yield d


def test_the_gate_announces_rides_out_a_configure_withdraws_on_drift_and_on_sigterm(director):
    d = director
    assert d.announced() == OFF         # BIRD starts with the protocols disabled
    gate = d.run("lvs-announce", "--every", str(EVERY), background=True)
    try:
        until(lambda: d.announced() == ON)
        # `birdc configure` disables what was enabled at run time; the next rounds enable it again
        d.bird.birdc("configure")
        assert d.bird.states()["lvskit_vip"] == "down"
        took = until(lambda: d.announced() == ON)
        print(f"\nannounced again {took:.2f} s after birdc configure (rounds every {EVERY} s)")
        assert took < 2 * EVERY + 1, took
        # ipvsadm -C: withdrawn within two rounds
        t = time.time()
        os.unlink(d.table)
        took = until(lambda: d.announced() == OFF)
        print(f"withdrawn {took:.2f} s after the table was emptied")
        assert took < 2 * EVERY + 1, took
        rounds_after(d, t, 2)
        assert d.announced() == OFF
        v = d.verdict()
        assert (v["announced"], v["key"], v["reason"]) == (
            False, "empty", "www (tcp 192.0.2.26:80) is not in the kernel's IPVS table")
        # ipvs-sync makes it right: announced again
        assert d.run("ipvs-sync").returncode == 0
        until(lambda: d.announced() == ON)
        # a planned drain: withdrawn when --drain returns, and it stays so
        r = d.run("lvs-announce", "--drain", "upgrade")
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        assert d.announced() == OFF
        rounds_after(d, time.time(), 3)
        assert d.announced() == OFF and d.verdict()["key"] == "drain"
        assert d.run("lvs-announce", "--undrain").returncode == 0
        until(lambda: d.announced() == ON)
        gate.send_signal(signal.SIGTERM)
        out, err = gate.communicate(timeout=30)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    assert gate.returncode == 0
    assert err.splitlines() == ["lvs-announce: lvskit_vip, lvskit_vip_v6 found disabled in BIRD "
                                "(a birdc configure or a restart): enabled again",
                                "lvs-announce: withdrawing 192.0.2.26, 2001:db8::26: www (tcp 192.0.2.26:80) "
                                "is not in the kernel's IPVS table"], err
    assert d.announced() == OFF
    assert (d.verdict()["announced"], d.verdict()["reason"]) == (False, "lvs-announce stopped")


def test_a_killed_gate_is_withdrawn_by_what_the_unit_runs_after_it(director):
    d = director
    gate = d.run("lvs-announce", "--every", str(EVERY), background=True)
    try:
        until(lambda: d.announced() == ON)
    finally:
        gate.kill()                     # SIGKILL: no withdrawal of its own
        gate.communicate()
    assert d.announced() == ON
    r = d.run("lvs-announce", "--withdraw")   # ExecStopPost=
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert d.announced() == OFF


def test_stale_health_and_a_dead_bird_withdraw(director):
    d = director
    from lvskit import config, health
    cfg = config.load(d.config)
    health.save(cfg, health.View(checked={"www": time.time() - 3 * 60 - 3.5}))    # 3 rounds + timeout ago
    r = d.run("lvs-announce")
    assert r.returncode == 7 and "www last checked 184s ago" in r.stderr, r.stderr
    d.fresh_health()
    assert d.run("lvs-announce").returncode == 0 and d.announced() == ON
    d.bird.close()                      # BIRD gone: nothing answers on its socket
    r = d.run("lvs-announce")
    assert r.returncode == 1 and "BIRD does not answer: " in r.stderr, r.stderr
    assert "Unable to connect to server control socket" in r.stderr


# --- under a real systemd, with the shipped unit -----------------------------------------------

WATCHDOG = "3s"     # the shipped 10 s, shortened: the test waits for it


@pytest.fixture
def manager(tmp_path):
    """A systemd service manager of the test's own (usermanager.py, as test_sdnotify.py's)."""
    if not usermanager.available():
        pytest.skip("needs systemd and unshare")
    with usermanager.running(str(tmp_path), f"lvskit-gate-{os.getpid()}") as env:
        yield env


systemctl = usermanager.systemctl


def show(env):
    return usermanager.show(env, "lvs-announce")


def install_unit(env, d):
    """The shipped unit; its two commands run the checkout's lvs-announce on the file table,
    with the same arguments after the config; WatchdogSec= shortened."""
    lines = []
    wrap = [sys.executable, "-S", os.path.join(HERE, "filekernel.py"), d.table,
            os.path.join(ROOT, "bin", "lvs-announce")]
    for line in open(os.path.join(ROOT, "conf", "systemd", "lvs-announce.service")):
        key, _, value = line.rstrip("\n").partition("=")
        if key in ("ExecStart", "ExecStopPost"):
            args = value.split()
            assert args[0] == "@SBINDIR@/lvs-announce" and args[1:3] == ["-c", "@SYSCONFDIR@/lvskit/lvskit.ini"]
            line = f"{key}={' '.join(wrap + ['-c', d.config] + args[3:])}\n"
        elif key == "WatchdogSec":
            line = f"WatchdogSec={WATCHDOG}\n"
        lines.append(line)
        if key == "ExecStart":
            log = str(d.tmp / "lvs-announce.log")
            lines.append(f"Environment=LVSKIT_NO_SYSLOG=1 LVSKIT_CACHE_DIR={os.environ['LVSKIT_CACHE_DIR']}\n"
                         f"StandardOutput=append:{log}\nStandardError=append:{log}\n")
    units = os.path.join(env["XDG_RUNTIME_DIR"], "systemd", "user")
    os.makedirs(units, exist_ok=True)
    with open(os.path.join(units, "lvs-announce.service"), "w") as f:
        f.write("".join(lines))
    assert systemctl(env, "daemon-reload").returncode == 0


def bird_said(d, since):
    """BIRD's log lines about our IPv4 protocol from line `since` on: 'Enabling' / 'Disabling'."""
    with open(d.bird.log) as f:
        lines = f.read().splitlines()[since:]
    return [l.split()[3] for l in lines if l.endswith(" protocol lvskit_vip")]


def bird_lines(d):
    with open(d.bird.log) as f:
        return len(f.read().splitlines())


def test_systemd_withdraws_a_killed_or_stuck_gate_before_it_starts_again(director, manager):
    d = director
    install_unit(manager, d)
    r = systemctl(manager, "start", "lvs-announce.service")     # returns once READY=1 came
    assert r.returncode == 0, r.stderr
    until(lambda: d.announced() == ON)
    first = show(manager)
    assert (first["ActiveState"], first["NRestarts"]) == ("active", "0")
    for n, (how, result) in enumerate([(signal.SIGKILL, "killed"), (signal.SIGSTOP, "watchdog")], 1):
        mark = bird_lines(d)
        pid = int(show(manager)["MainPID"])
        os.kill(pid, how)       # it cannot withdraw by itself: ExecStopPost= does

        def again():
            s = show(manager)
            return s["NRestarts"] == str(n) and s["ActiveState"] == "active" and d.announced() == ON
        until(again, 60)
        # withdrawn after the end, announced again by the new gate's first round
        assert bird_said(d, mark) == ["Disabling", "Enabling"], (result, open(d.bird.log).read())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert systemctl(manager, "stop", "lvs-announce.service").returncode == 0
    assert d.announced() == OFF
