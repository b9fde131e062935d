"""check-real end to end against local listeners and the fake kernel table."""
import json
import time
import os
import socket
import subprocess
import sys

import pytest

import loopback
from lvskit import checkreal, config, health, state, sync
from lvskit.errors import CHECK_CRITICAL, CHECK_OK, CHECK_WARNING
from fakekernel import FakeKernel as MemoryTable
from lvskit.model import PROTOCOLS, ServiceKey

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "bin", "check-real")
SEED = os.path.join(ROOT, "conf", "lvskit.ini")


class Listeners:
    """TCP listeners on 127.0.0.N:port that a test can stop and start; the port stays
    ours on every address meanwhile (a stopped one refuses)."""

    def __init__(self):
        self.holder = loopback.shared_port()
        self.port = self.holder.getsockname()[1]
        self.socks = {}

    def start(self, n):
        self.socks[n] = loopback.on_port(f"127.0.0.{n}", self.port)

    def stop(self, n):
        self.socks.pop(n).close()

    def close(self):
        for s in list(self.socks.values()) + [self.holder]:
            s.close()


@pytest.fixture
def lis():
    ls = Listeners()
    yield ls
    ls.close()


def make_cfg(tmp_path, port, extra="", glob="", fall=2):
    text = f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
{glob}
[service web]
address = 10.0.0.100
port = {port}
check = tcp
check_timeout = 0.5
check_rise = 2
check_fall = {fall}
check_flap_changes = 0
real.127.0.0.1 = weight=3
real.127.0.0.2 = weight=2
{extra}
"""
    path = tmp_path / "lvskit.ini"
    path.write_text(text)
    return config.load(str(path))


def weights(kernel, port):
    svc = kernel.table[ServiceKey(socket.AF_INET, PROTOCOLS["tcp"], "10.0.0.100", port)]
    return {d.address: d.weight for d in svc.dests.values()}


def round_(cfg, kernel):
    known = health.read(cfg)
    tracks, checked = known.tracks, known.checked
    rnd, _, _ = checkreal.once(cfg, kernel, tracks, checked)
    return rnd


def test_fail_quiesce_then_return_after_rise(tmp_path, lis):
    lis.start(1), lis.start(2)
    cfg, k = make_cfg(tmp_path, lis.port), MemoryTable()
    rnd = round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 2}
    assert checkreal.report(rnd)[0] == CHECK_OK
    lis.stop(2)
    round_(cfg, k)                                      # 1 failure: fall is 2
    assert weights(k, lis.port)["127.0.0.2"] == 2
    rnd = round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0}
    code, lines = checkreal.report(rnd)
    assert code == CHECK_WARNING  # one down, the other serves: degraded
    assert lines[0].startswith("CHECK_REAL WARNING - 1/2 down; web 127.0.0.2 down: connection refused")
    assert "| up=1;;;0;2 down=1;;;0;2" in lines[0]
    # ipvs-sync reads the same health and plans nothing: one path to the kernel
    assert sync.reconcile(cfg, k, dry_run=True).ops == []
    lis.start(2)
    round_(cfg, k)                                      # 1 success: rise is 2
    assert weights(k, lis.port)["127.0.0.2"] == 0
    round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 2}


def test_on_failure_remove(tmp_path, lis):
    lis.start(1)
    cfg, k = make_cfg(tmp_path, lis.port, "on_failure = remove\n", fall=1), MemoryTable()
    round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3}
    lis.start(2)
    round_(cfg, k), round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 2}
    lis.stop(1)
    round_(cfg, k)
    # out of the table the graceful way (removal = drain): weight 0, deleted once idle
    assert weights(k, lis.port) == {"127.0.0.1": 0, "127.0.0.2": 2}
    round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.2": 2}


def test_all_down_keeps_last_healthy_set_loudly(tmp_path, lis):
    lis.start(1)
    cfg, k = make_cfg(tmp_path, lis.port), MemoryTable()
    round_(cfg, k), round_(cfg, k)          # .2 never listened: down at once
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0}
    lis.stop(1)
    round_(cfg, k)
    rnd = round_(cfg, k)
    # .1 was the last healthy one: it stays; .2 stays out
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0}
    code, lines = checkreal.report(rnd)
    assert code == CHECK_CRITICAL and "web ALL DOWN: keeping the last healthy set (127.0.0.1)" in lines[0]
    data = json.load(open(state.health_path(cfg)))
    assert data["services"]["web"]["127.0.0.1:%d" % lis.port]["kept"] is True
    assert sync.reconcile(cfg, k, dry_run=True).ops == []


def test_all_down_sorry_server_takes_over(tmp_path, lis):
    cfg, k = make_cfg(tmp_path, lis.port, "sorry = 127.0.0.9\n"), MemoryTable()
    rnd = round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 0, "127.0.0.2": 0, "127.0.0.9": 1}
    assert "sorry server 127.0.0.9" in checkreal.report(rnd)[1][0]
    lis.start(1)
    round_(cfg, k), round_(cfg, k)
    # back: the sorry server leaves the way any server does (drained, then deleted)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0, "127.0.0.9": 0}
    round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0}


def test_maintenance_flag_and_hook(tmp_path, lis):
    lis.start(1), lis.start(2)
    hook_log = tmp_path / "hook.log"
    hook = tmp_path / "hook"
    hook.write_text(f'#!/bin/sh\necho "$@" "$LVSKIT_ADDRESS" >> {hook_log}\n')
    hook.chmod(0o755)
    cfg, k = make_cfg(tmp_path, lis.port, glob=f"check_hook = {hook}"), MemoryTable()
    round_(cfg, k)
    os.makedirs(state.maint_dir(cfg))
    open(os.path.join(state.maint_dir(cfg), "127.0.0.1"), "w").write("disk swap\n")
    rnd = round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 0, "127.0.0.2": 2}
    code, lines = checkreal.report(rnd)
    assert code == CHECK_WARNING and "maintenance (127.0.0.1: disk swap)" in lines[0]
    os.unlink(os.path.join(state.maint_dir(cfg), "127.0.0.1"))
    round_(cfg, k), round_(cfg, k)
    assert weights(k, lis.port)["127.0.0.1"] == 3
    calls = hook_log.read_text().splitlines()
    assert calls[0].startswith("127.0.0.1 web unknown up connected in")
    assert any(c.startswith("127.0.0.1 web up maint maintenance (127.0.0.1: disk swap)") for c in calls)
    assert calls[-1].startswith("127.0.0.1 web maint up")


def test_maintenance_flag_text_is_one_short_printable_line(tmp_path):
    cfg = make_cfg(tmp_path, 80)
    os.makedirs(state.maint_dir(cfg))
    dest = cfg.services[0].reals[0].dest
    flag = os.path.join(state.maint_dir(cfg), "127.0.0.1")
    open(flag, "wb").write(b"disk\x1b[2J swap " + b"x" * 100_000 + b"\nsecond line\n")
    reason = checkreal.maintenance(cfg, dest)
    assert reason == f"maintenance (127.0.0.1: disk?[2J swap {'x' * (checkreal.MAX_FLAG_TEXT - 17)}...)"
    os.unlink(flag)
    os.mkfifo(flag)     # no writer: reading it must not wait for one
    assert checkreal.maintenance(cfg, dest) == "maintenance (127.0.0.1: unreadable: not a regular file)"
    os.unlink(flag)
    os.mkdir(flag)
    assert checkreal.maintenance(cfg, dest) == "maintenance (127.0.0.1: unreadable: not a regular file)"


def test_warning_from_external_reduces_weight(tmp_path):
    script = tmp_path / "check_load"
    script.write_text("#!/bin/sh\n[ \"$1\" = 127.0.0.2 ] && { echo 'LOAD WARNING - 9.1'; exit 1; }\necho OK\n")
    script.chmod(0o755)
    text = f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[service web]
address = 10.0.0.100
port = 80
check = external
check_command = {script} {{address}}
check_warning_weight = 50
real.127.0.0.1 = weight=3
real.127.0.0.2 = weight=4
"""
    cfg, k = config.parse(text, "t.ini"), MemoryTable()
    rnd = round_(cfg, k)
    assert weights(k, 80) == {"127.0.0.1": 3, "127.0.0.2": 2}
    assert checkreal.report(rnd)[0] == CHECK_WARNING


def test_deleting_the_state_file_is_harmless(tmp_path, lis):
    lis.start(1)
    cfg, k = make_cfg(tmp_path, lis.port), MemoryTable()
    round_(cfg, k)
    os.unlink(state.health_path(cfg))
    round_(cfg, k)
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 0}


def test_loop_honours_each_services_interval(tmp_path, lis):
    lis.start(1)
    cfg = make_cfg(tmp_path, lis.port)
    tracks, checked = {}, {}
    rnd, tracks, checked = checkreal.run_round(cfg, tracks, checked, now=1000.0, all_due=False)
    assert rnd.probes == 2
    rnd, _, _ = checkreal.run_round(cfg, tracks, checked, now=1001.0, all_due=False)
    assert rnd.probes == 0 and not any(r.checked for r in rnd.rows)    # interval 5 s
    rnd, _, _ = checkreal.run_round(cfg, tracks, checked, now=1005.0, all_due=False)
    assert rnd.probes == 2


# --- the script, as cron and Nagios run it ---------------------------------------

def run(*args, env=None, merged=False):
    """check-real's run; merged: stderr into stdout, as Icinga 2 reads a plugin."""
    return subprocess.run([sys.executable, BIN, *args], stdout=subprocess.PIPE, text=True, timeout=30,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                          env=dict(os.environ, LVSKIT_NO_SYSLOG="1", **(env or {})))


def test_script_help_and_bad_config(tmp_path):
    r = run("--help")
    assert r.returncode == 0 and "exit codes" in r.stdout and "check-real --every" in r.stdout
    bad = tmp_path / "bad.ini"
    bad.write_text("[service web]\naddress = 10.0.0.1\nport = 80\ncheck = telepathy\n")
    r = run("-c", str(bad), "--no-kernel", merged=True)   # stderr merged, as Icinga 2 reads it
    why = (f"{bad}:4: [service web] check: 'telepathy' is not one of "
           "none, tcp, http, https, udp, xdmcp, ssh, ping, external")
    assert r.returncode == 3        # a check: UNKNOWN, the why on its status line, first
    assert r.stdout.splitlines() == [f"CHECK_REAL UNKNOWN - {why}", f"check-real: {why}"]
    # --every is the daemon, not a check: the command line first, then the config
    assert run("--every", "0", "-c", str(bad)).returncode == 2
    assert run("--every", "nan", "-c", str(bad)).returncode == 2
    assert run("-n", "--every", "5", "-c", str(bad)).returncode == 6
    assert run("--bogus").returncode == 3     # a check: UNKNOWN, with its status line
    assert run("--bogus").stdout.startswith("CHECK_REAL UNKNOWN - usage: unrecognized arguments: --bogus")


def test_script_plugin_output_and_exit_codes(tmp_path, lis):
    lis.start(1), lis.start(2)
    cfg = make_cfg(tmp_path, lis.port)
    r = run("-c", cfg.path, "--no-kernel")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CHECK_REAL OK - 2/2 up | up=2;;;0;2 down=0;;;0;2")
    assert r.stdout.count("\n") == 1 and r.stderr == ""
    lis.stop(2)
    run("-c", cfg.path, "--no-kernel")
    r = run("-c", cfg.path, "--no-kernel", "-v")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith("CHECK_REAL WARNING - 1/2 down; web 127.0.0.2 down: connection refused")
    assert lines[1].split()[:3] == ["SERVICE", "SERVER", "STATE"]
    assert lines[2].split()[:3] == ["web", "127.0.0.2", "down"]     # failed first
    assert lines[3].split()[:3] == ["web", "127.0.0.1", "up"]
    # -n changes nothing: the state file is not written
    before = open(state.health_path(cfg)).read()
    lis.start(2)
    run("-c", cfg.path, "--no-kernel", "-n")
    assert open(state.health_path(cfg)).read() == before


def test_seed_config_validates_with_its_checks():
    cfg = config.load(SEED)
    kinds = {vs.name: vs.check.kind for vs in cfg.services}
    assert kinds == {"www": "http", "ssh": "ssh", "xdmcp": "xdmcp"}


def test_a_server_in_warning_that_could_not_be_checked_is_named_once(tmp_path):
    """It is both: a warning, and a check that could not tell (UNKNOWN, the worse)."""
    from lvskit.errors import CHECK_UNKNOWN
    from lvskit.health import UNKNOWN, UP, WARNING, Track
    cfg = make_cfg(tmp_path, 80)
    vs = cfg.service("web")
    a, b = vs.reals
    rnd = checkreal.Round(rows=[
        checkreal.Row(vs, a, Track(), Track(state=WARNING, last=UNKNOWN, reason="no answer"), checked=True),
        checkreal.Row(vs, b, Track(), Track(state=UP, last=UP), checked=True)])
    assert checkreal.report(rnd) == (CHECK_UNKNOWN, [
        "CHECK_REAL UNKNOWN - 2/2 up; web 127.0.0.1 warning: no answer | up=2;;;0;2 down=0;;;0;2 "
        "maint=0;;;0;2 warning=1;;;0;2 probes=0;;;0 time=0.000s;;;0"])


@pytest.mark.parametrize("on_return, fresh", [("", ["127.0.0.2"]), ("on_return = keep\n", [])])
def test_a_returning_server_gets_a_fresh_start_unless_kept(tmp_path, lis, monkeypatch, on_return, fresh):
    calls = []
    monkeypatch.setattr(sync, "fresh_start",
                        lambda cfg, kernel, returning: calls.extend(d.address for _, d in returning) or [])
    lis.start(1), lis.start(2)
    cfg, k = make_cfg(tmp_path, lis.port, on_return, fall=1), MemoryTable()
    round_(cfg, k)
    lis.stop(2)
    round_(cfg, k)
    assert weights(k, lis.port)["127.0.0.2"] == 0 and calls == []
    lis.start(2)
    round_(cfg, k), round_(cfg, k)                      # rise is 2
    assert weights(k, lis.port) == {"127.0.0.1": 3, "127.0.0.2": 2}
    assert calls == fresh


@pytest.mark.parametrize("a, b, want", [
    (("up", "up"), ("up", "up"), CHECK_OK),
    (("up", "up"), ("down", "down"), CHECK_WARNING),              # degraded: the other serves
    (("down", "down"), ("down", "down"), CHECK_CRITICAL),         # none up: ALL DOWN
    (("maint", "maint"), ("down", "down"), CHECK_CRITICAL),
    (("maint", "maint"), ("up", "up"), CHECK_WARNING),
    (("warning", "unknown"), ("up", "up"), 3),                    # could not tell: UNKNOWN
    (("unknown", "unknown"), ("up", "up"), 3),                    # no result yet
])
def test_check_real_and_lvs_status_agree_on_a_service(tmp_path, a, b, want):
    """One state (health.json, the kernel as it follows it): both checks say the same."""
    import time
    from lvskit import status
    from lvskit.health import Track
    cfg = make_cfg(tmp_path, 80)
    r1, r2 = (str(r.dest) for r in cfg.service("web").reals)
    tracks = {"web": {r1: Track(state=a[0], last=a[1], reason="x"), r2: Track(state=b[0], last=b[1], reason="y")}}
    health.save(cfg, health.View(tracks, {"web": time.time()}))
    kernel = MemoryTable()
    sync.reconcile(cfg, kernel)
    real_code, lines = checkreal.check_only(cfg, kernel)
    status_code, line = status.check(status.gather(cfg, kernel)[0])
    assert (real_code, status_code) == (want, want), (lines[0], line)
    assert ("ALL DOWN" in lines[0]) == ("ALL DOWN" in line) == (want == CHECK_CRITICAL)


def test_check_mode_reads_only_and_says_when_the_state_is_stale(tmp_path, lis):
    """--check: no probe, no lock, nothing written; an old or missing state is UNKNOWN."""
    from lvskit.lock import Lock
    lis.start(1), lis.start(2)
    cfg = make_cfg(tmp_path, lis.port)
    r = run("-c", cfg.path, "--no-kernel", "--check")
    assert r.returncode == 3 and r.stdout.count("\n") == 1
    assert r.stdout.startswith("CHECK_REAL UNKNOWN - 0/2 up; web never checked")
    assert "web 127.0.0.1 unknown: no result yet" in r.stdout
    assert not os.path.exists(state.health_path(cfg))                  # nothing written
    assert run("-c", cfg.path, "--no-kernel").returncode == 0         # a real round writes it
    with Lock(cfg.run_dir, "check-real"):                            # the loop holds the lock
        r = run("-c", cfg.path, "--no-kernel", "--check")
        assert r.returncode == 0 and r.stdout.startswith("CHECK_REAL OK - 2/2 up |"), r.stdout
        assert r.stdout.count("\n") == 1 and " age=" in r.stdout
        lis.stop(2)                                                   # --check does not probe
        assert run("-c", cfg.path, "--no-kernel", "--check").returncode == 0
        r = run("-c", cfg.path, "--no-kernel")                        # a plain run: busy, reports the state
        assert r.returncode == 0 and r.stdout.startswith(
            "CHECK_REAL OK - 2/2 up; another check-real runs: its state reported |"), r.stdout
    view = health.read(cfg)
    old = time.time() - checkreal.stale_after(cfg.service("web")) - 5
    health.save(cfg, health.View(view.tracks, {"web": old}))
    r = run("-c", cfg.path, "--no-kernel", "--check")
    assert r.returncode == 3 and "web last checked" in r.stdout and "is check-real running?" in r.stdout
