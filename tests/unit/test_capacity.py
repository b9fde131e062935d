"""lvs-agent's formula over prepared /proc files and utmp records; the script itself."""
import os
import socket
import subprocess
import sys
import time

import pytest

from lvskit import capacity, config
from lvskit.agentproto import parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(ROOT, "bin", "lvs-agent")


def fake_proc(d, load="0.00", cpus=4, total=1000, avail=1000, psi=None):
    d.mkdir(exist_ok=True)
    (d / "loadavg").write_text(f"{load} 0.50 0.25 1/100 1234\n")
    (d / "stat").write_text("cpu  1 2 3\n" + "".join(f"cpu{i} 1 2 3\n" for i in range(cpus)) + "intr 5\n")
    (d / "meminfo").write_text(f"MemTotal: {total} kB\nMemFree: 1 kB\nMemAvailable: {avail} kB\n")
    if psi is not None:
        (d / "pressure").mkdir(exist_ok=True)
        (d / "pressure" / "memory").write_text(
            f"some avg10={psi:.2f} avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return str(d)


def knobs(**kw):
    return config.Agent(**kw)


def test_cpu_term_is_load_per_cpu(tmp_path):
    root = fake_proc(tmp_path / "p", load="2.00", cpus=4)
    r = capacity.measure(knobs(memory="off"), root, utmp="/nonexistent")
    assert r.cpus == 4 and r.load == 2.0
    assert r.cpu == pytest.approx(0.5) and r.capacity == pytest.approx(0.5)
    # cpu_full = 2: a load of 2 per CPU is full, so 0.5 per CPU leaves 75%
    r = capacity.measure(knobs(memory="off", cpu_full=2.0), root, utmp="/nonexistent")
    assert r.capacity == pytest.approx(0.75)
    root = fake_proc(tmp_path / "q", load="9.00", cpus=4)
    assert capacity.measure(knobs(memory="off"), root, utmp="/x").capacity == 0.0     # clamped


def test_load_avg_knob_picks_the_column(tmp_path):
    root = fake_proc(tmp_path / "p", load="4.00", cpus=1)     # 5-minute column is 0.50
    assert capacity.measure(knobs(memory="off", load_avg=5), root, utmp="/x").cpu == pytest.approx(0.5)


def test_memory_by_psi_when_present_else_meminfo(tmp_path):
    root = fake_proc(tmp_path / "p", total=1000, avail=250, psi=5.0)
    assert capacity.memory_free(knobs(psi_full=10.0), root) == pytest.approx(0.5)        # PSI wins
    assert capacity.memory_free(knobs(memory="meminfo", mem_ok=0.5), root) == pytest.approx(0.5)
    root2 = fake_proc(tmp_path / "q", total=1000, avail=600)
    assert capacity.memory_free(knobs(), root2) == 1.0          # 40% used: below mem_ok
    with pytest.raises(OSError):
        capacity.memory_free(knobs(memory="psi"), root2)
    assert capacity.memory_free(knobs(memory="off"), root) == 1.0


def test_scarcest_resource_decides(tmp_path):
    root = fake_proc(tmp_path / "p", load="0.40", cpus=4, total=1000, avail=100)
    r = capacity.measure(knobs(memory="meminfo", mem_ok=0.5), root, utmp="/x")
    assert r.cpu == pytest.approx(0.9) and r.memory == pytest.approx(0.2)
    assert r.capacity == pytest.approx(0.2)


def test_sessions_count_live_logins_on_ttys_and_displays(tmp_path):
    root = fake_proc(tmp_path / "p")
    (tmp_path / "p" / "4242").mkdir()
    rec = capacity.utmp_record
    data = (rec("pts/0", pid=4242) + rec(":0", pid=0) + rec("tty1", pid=4242)
            + rec("pts/1", pid=999999)                          # stale: its process is gone
            + rec("~", ut_type=2) + rec("pts/2", ut_type=8))    # boot record, dead process
    (tmp_path / "utmp").write_bytes(data)
    assert capacity.sessions(str(tmp_path / "utmp"), root) == 3
    r = capacity.measure(knobs(memory="off", max_sessions=4), root, utmp=str(tmp_path / "utmp"))
    assert r.sessions == 3 and r.session == pytest.approx(0.25) and r.capacity == pytest.approx(0.25)
    assert capacity.sessions(str(tmp_path / "none"), root) == 0


def test_admin_state_file(tmp_path):
    f = tmp_path / "agent-state"
    assert capacity.admin_state(str(f)) == "up"
    f.write_text("drain\n")
    assert capacity.admin_state(str(f)) == "drain"
    f.write_text("maint  # kernel upgrade\n")
    assert capacity.admin_state(str(f)) == "maint"


def run_agent(*args, cfg=None):
    env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
    argv = [sys.executable, AGENT] + (["-c", cfg] if cfg else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=20)


def test_script_inetd_mode_writes_one_line(tmp_path):
    root = fake_proc(tmp_path / "p", load="1.00", cpus=4)
    cfg = tmp_path / "agent.ini"
    cfg.write_text(f"[agent]\nmemory = off\nstate_file = {tmp_path}/state\nutmp = {tmp_path}/utmp\n")
    r = run_agent("--proc-root", root, cfg=str(cfg))
    assert (r.returncode, r.stdout, r.stderr) == (0, "up ready 75%\n", "")
    for word, line in (("drain", "up drain 75%\n"), ("maint", "up maint 75%\n"), ("down", "down ready 75%\n")):
        (tmp_path / "state").write_text(word + "\n")
        assert run_agent("--proc-root", root, cfg=str(cfg)).stdout == line


# Runs lvs-agent with lvskit.log's /dev/log pointed at a test socket: argv[1] is its path.
# A prelude may break something first, to stand for a bug.
_WITH_SYSLOG = ("import runpy, sys; sys.path.insert(0, sys.argv[2]); from lvskit import log; "
                "log.SYSLOG_PATH = sys.argv[1]; sys.argv = sys.argv[3:]; {prelude}; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")


def inetd_agent(args, syslog_path, prelude="pass", reset_ok=False):
    """(exit code, bytes the client got): stdin, stdout and stderr one socket, as inetd gives them.

    The client sends a line first, as HAProxy's agent-send does; the agent never reads it, and
    must not reset the connection for it when it answers (reset_ok: it does not answer)."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"backend be server web\n")      # never read by the agent
        code = _WITH_SYSLOG.format(prelude=prelude)
        p = subprocess.Popen([sys.executable, "-S", "-c", code, syslog_path, os.path.join(ROOT, "lib"),
                              AGENT] + args, stdin=server, stdout=server, stderr=server,
                             env=dict(os.environ, LVSKIT_NO_SYSLOG="0"))
        server.close()
        client.settimeout(10)
        got = b""
        try:
            for data in iter(lambda: client.recv(4096), b""):
                got += data
        except ConnectionResetError:
            if not reset_ok:
                raise
    return p.wait(timeout=20), got


def test_under_inetd_the_client_gets_only_the_answer_and_syslog_the_rest(tmp_path, syslog_socket):
    root = fake_proc(tmp_path / "p", load="1.00", cpus=4)
    cfg = tmp_path / "agent.ini"
    cfg.write_text(f"[agent]\nmemory = off\nstate_file = {tmp_path}/state\nutmp = {tmp_path}/utmp\n")
    (tmp_path / "state").write_bytes(b"\xff\xfe not a state\n")
    assert inetd_agent(["-c", str(cfg), "--proc-root", root], syslog_socket.path) == (0, b"up ready 75%\n")
    assert "ignoring this state file (not ASCII text)" in syslog_socket.text()
    (tmp_path / "bad.ini").write_text("[agent]\ncpu_full = lots\n")
    for args, code, logged in (
            (["-c", str(cfg), "--proc-root", str(tmp_path / "missing")], 1, "cannot measure load"),
            (["-c", str(cfg), "--bogus"], 2, "unrecognized arguments: --bogus"),
            (["-c", str(tmp_path / "bad.ini")], 6, "[agent] cpu_full: 'lots' is not a number"),
            (["-c", str(tmp_path / "none.ini")], 6, "none.ini")):
        assert inetd_agent(args, syslog_socket.path, reset_ok=True) == (code, b""), args
        line = syslog_socket.line()
        assert line.startswith("<27>lvs-agent[") and logged in line      # daemon.err
    r = run_agent("--proc-root", str(tmp_path / "missing"), cfg=str(cfg))   # not under inetd: said
    assert r.returncode == 1 and "cannot measure load" in r.stderr


def test_under_inetd_a_bug_is_one_syslog_line_not_a_traceback_to_the_client(tmp_path, syslog_socket):
    cfg = tmp_path / "agent.ini"
    cfg.write_text(f"[agent]\nmemory = off\nstate_file = {tmp_path}/state\n")
    bug = "from lvskit import capacity; capacity.measure = lambda *a, **k: 1 / 0"
    code, got = inetd_agent(["-c", str(cfg)], syslog_socket.path, prelude=bug, reset_ok=True)
    assert (code, got) == (1, b"")
    line = syslog_socket.line()
    assert line.startswith("<27>lvs-agent[") and "bug: ZeroDivisionError: division by zero at" in line


def test_script_errors(tmp_path):
    (tmp_path / "empty.ini").write_text("")
    r = run_agent("--proc-root", str(tmp_path / "missing"), cfg=str(tmp_path / "empty.ini"))
    assert r.returncode == 1 and r.stdout == "" and "cannot measure load" in r.stderr
    bad = tmp_path / "bad.ini"
    bad.write_text("[agent]\ncpu_full = lots\n")
    r = run_agent(cfg=str(bad))
    assert r.returncode == 6 and r.stderr.strip().endswith("[agent] cpu_full: 'lots' is not a number")
    assert ":2:" in r.stderr
    r = run_agent("-c", str(tmp_path / "nope.ini"))
    assert r.returncode == 6
    assert run_agent("--bogus").returncode == 2


def test_script_listen_mode_answers_each_connection(tmp_path):
    root = fake_proc(tmp_path / "p", load="3.00", cpus=4)
    cfg = tmp_path / "agent.ini"
    cfg.write_text(f"[agent]\nmemory = off\nstate_file = {tmp_path}/state\nutmp = {tmp_path}/utmp\n")
    # The port stays ours: bound with SO_REUSEADDR and never listening, it lets the agent
    # (which binds with SO_REUSEADDR too) listen there, and nobody else bind it.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
    proc = subprocess.Popen([sys.executable, AGENT, "-c", str(cfg), "--proc-root", root,
                             "--listen", f"127.0.0.1:{port}"], env=env)
    try:
        answers = []
        deadline = time.monotonic() + 10
        while len(answers) < 3 and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    c.sendall(b"backend be server web\n")      # HAProxy's agent-send: unread, no reset
                    answers.append(b"".join(iter(lambda: c.recv(4096), b"")))   # to the agent's end
            except ConnectionRefusedError:
                time.sleep(0.05)        # poll: the agent is not listening yet
            if len(answers) == 1:
                (tmp_path / "p" / "loadavg").write_text("1.00 0 0 1/1 1\n")
        assert answers == [b"up ready 25%\n", b"up ready 75%\n", b"up ready 75%\n"]
    finally:
        proc.terminate()
        proc.wait(5)
        holder.close()


# --- [agent] cgroup: a cgroup v2's CPU time instead of the machine's loadavg

def fake_cgroup(d, usage_usec, cpu_max=None):
    d.mkdir(exist_ok=True)
    (d / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    if cpu_max is not None:
        (d / "cpu.max").write_text(cpu_max + "\n")
    return str(d)


class FakeTime:
    """monotonic() and sleep() for CgroupCPU; sleeping runs the next work item."""
    def __init__(self):
        self.now, self.during_sleep = 100.0, []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += s
        if self.during_sleep:
            self.during_sleep.pop(0)()


def test_cgroup_busy_is_cpu_seconds_per_second(tmp_path):
    t = FakeTime()
    cg = fake_cgroup(tmp_path / "cg", 5_000_000)
    meter = capacity.CgroupCPU(cg, 0.25, t.clock, t.sleep)
    # first answer: two readings cpu_sample apart; 0.45 CPU-seconds in 0.25 s = 1.8 CPUs
    t.during_sleep.append(lambda: fake_cgroup(tmp_path / "cg", 5_450_000))
    assert meter.busy() == pytest.approx(1.8)
    # next answer 10 s later: the average since the previous answer, no wait
    fake_cgroup(tmp_path / "cg", 5_450_000 + 5_000_000)
    t.now += 10
    assert meter.busy() == pytest.approx(0.5) and not t.during_sleep
    # too soon (a second poller) or too late (stale): a fresh sample again
    t.now += 0.1
    t.during_sleep.append(lambda: fake_cgroup(tmp_path / "cg", 10_450_000 + 250_000))
    assert meter.busy() == pytest.approx(1.0)
    t.now += capacity.CgroupCPU.MAX_AGE + 1
    t.during_sleep.append(lambda: None)
    assert meter.busy() == 0.0
    # the cgroup made anew (its counter went back): no negative load
    fake_cgroup(tmp_path / "cg", 1000)
    t.now += 5
    t.during_sleep.append(lambda: fake_cgroup(tmp_path / "cg", 1000 + 25_000))
    assert meter.busy() == pytest.approx(0.1)


def test_cgroup_cpu_term_and_cpu_max_cap(tmp_path):
    t = FakeTime()
    root = fake_proc(tmp_path / "p", load="9.00", cpus=4)      # the machine's loadavg is ignored
    cg = fake_cgroup(tmp_path / "cg", 0)
    k = knobs(memory="off", cgroup=cg, cpu_sample=1.0)
    t.during_sleep.append(lambda: fake_cgroup(tmp_path / "cg", 1_000_000))      # 1 CPU busy
    r = capacity.measure(k, root, utmp="/x", meter=capacity.CgroupCPU(cg, 1.0, t.clock, t.sleep))
    assert (r.load, r.cpus) == (pytest.approx(1.0), 4) and r.capacity == pytest.approx(0.75)
    assert f"1.00 of 4 cpus busy in {cg}" in r.explain()
    # cpu.max 2 CPUs (200 ms per 100 ms): 1 busy is half of it
    fake_cgroup(tmp_path / "cg", 0, cpu_max="200000 100000")
    t.during_sleep.append(lambda: fake_cgroup(tmp_path / "cg", 1_000_000))
    r = capacity.measure(k, root, utmp="/x", meter=capacity.CgroupCPU(cg, 1.0, t.clock, t.sleep))
    assert r.cpus == 2 and r.capacity == pytest.approx(0.5)
    fake_cgroup(tmp_path / "cg", 0, cpu_max="max 100000")
    assert capacity.CgroupCPU(cg, 1.0).cpus(4) == 4
    # a real sleep (no meter given): nothing used in 10 ms, all spare
    k = knobs(memory="off", cgroup=cg, cpu_sample=0.01)
    assert capacity.measure(k, root, utmp="/x").capacity == 1.0


def test_cgroup_missing_or_garbled_is_an_error_not_the_machine_load(tmp_path):
    root = fake_proc(tmp_path / "p", load="0.00", cpus=4)
    k = knobs(memory="off", cgroup=str(tmp_path / "nope"), cpu_sample=0.01)
    with pytest.raises(ValueError, match=r"cgroup .*/nope: cannot read cpu.stat: No such file "
                                         r"or directory \(not a cgroup v2 directory\?\)"):
        capacity.measure(k, root, utmp="/x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cpu.stat").write_text("user_usec 5\n")
    with pytest.raises(ValueError, match="no usage_usec number in cpu.stat"):
        capacity.CgroupCPU(str(tmp_path / "bad"), 0.01).busy()
    (tmp_path / "bad" / "cpu.stat").write_text("usage_usec lots\n")
    with pytest.raises(ValueError, match="no usage_usec number"):
        capacity.CgroupCPU(str(tmp_path / "bad"), 0.01).busy()


def test_cgroup_config_keys(tmp_path):
    def agent(text):
        f = tmp_path / "a.ini"
        f.write_text("[agent]\n" + text)
        return config.load(str(f)).agent
    assert agent("").cgroup == "" and agent("").cpu_sample == 0.25
    assert agent("cgroup = user.slice\n").cgroup == "/sys/fs/cgroup/user.slice"
    assert agent("cgroup = /sys/fs/cgroup/system.slice/\n").cgroup == "/sys/fs/cgroup/system.slice"
    assert agent("cpu_sample = 100ms\n").cpu_sample == pytest.approx(0.1)
    with pytest.raises(config.ConfigError, match=r"\[agent\] cgroup: '../etc' climbs out"):
        agent("cgroup = ../etc\n")
    with pytest.raises(config.ConfigError, match=r"\[agent\] cpu_sample: 20 out of range"):
        agent("cpu_sample = 20\n")


def test_script_with_a_missing_cgroup_says_so_in_one_line(tmp_path):
    cfg = tmp_path / "agent.ini"
    cfg.write_text(f"[agent]\nmemory = off\ncgroup = {tmp_path}/gone\nstate_file = {tmp_path}/s\n")
    r = run_agent(cfg=str(cfg))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"cgroup {tmp_path}/gone: cannot read cpu.stat" in r.stderr
    fake_cgroup(tmp_path / "gone", 42)
    assert run_agent(cfg=str(cfg)).stdout == "up ready 100%\n"
