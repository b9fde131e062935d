"""A slow server never stalls a round, and every script exits.

Real servers on loopback that trickle their answer a byte at a time, accept
and say nothing, or never accept; a plugin that never exits.  A round ends
within its largest check_timeout plus one second, whatever they do.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import loopback
from lvskit import agentpoll, checkreal, checks, config
from lvskit.config import Check
from lvskit.health import DOWN, UP
from lvskit.model import Dest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, LVSKIT_NO_SYSLOG="1")


def within(fn, bound):
    """fn()'s result, run on a thread of its own so that a test fails (not hangs) when it
    runs past bound seconds."""
    box = {}

    def go():
        t0 = time.monotonic()
        box["result"] = fn()
        box["took"] = time.monotonic() - t0
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(bound + 5)
    assert "took" in box, f"still running {bound + 5:g}s later"
    assert box["took"] < bound, f"took {box['took']:.2f}s, bound {bound:g}s"
    return box["result"]


def wait_for(condition, timeout=5.0, what="condition"):
    """Poll condition() until it is true; fail after timeout."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"no {what} within {timeout:g}s"
        time.sleep(0.02)


def exchange_threads():
    return [t for t in threading.enumerate() if t.name.startswith("exchange ")]


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def servers():
    """servers(behaviour, address) -> port of a loopback.serve listener, served on a thread."""
    socks, stop = [], []
    pending = []

    def add(behaviour, address="127.0.0.1"):
        s = loopback.listener(address)
        socks.append(s)
        pending.append((s, behaviour))
        return s.getsockname()[1]

    def start():
        t = threading.Thread(target=loopback.serve, args=(list(pending), lambda: bool(stop)), daemon=True)
        t.start()
    add.start = start
    add.keep = socks.append
    yield add
    stop.append(1)
    for s in socks:
        s.close()


def never_accepting(keep, address="127.0.0.1"):
    s, fillers = loopback.never_accepting(address)
    for x in [s] + fillers:
        keep(x)
    return s.getsockname()[1]


def probe(kind, port, address="127.0.0.1", **kw):
    return checks.probe_for(Check(kind=kind, timeout=kw.pop("timeout", 1.0), **kw), Dest(address, port))


def test_probes_end_by_their_deadline_whatever_the_server_does(servers, tmp_path):
    plugin = tmp_path / "check_hang"
    plugin.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path}/child\nwait\n")
    plugin.chmod(0o755)
    probes = {
        "good": probe("http", servers("good"), body="^ok$"),
        "headers trickled": probe("http", servers("trickle-head")),
        "body trickled": probe("http", servers("trickle-body"), body="^ok$"),
        "silent": probe("http", servers("silent")),
        "silent tls": probe("https", servers("silent"), verify=False),
        "banner trickled": probe("ssh", servers("trickle-line")),
        "never accepting": probe("http", never_accepting(servers.keep)),
        "never accepting tcp": probe("tcp", never_accepting(servers.keep)),
        "plugin hangs": probe("external", 80, command=(str(plugin),)),
        "short timeout": probe("http", servers("trickle-head"), timeout=0.3),
    }
    servers.start()
    results = within(lambda: checks.run(probes.values()), 2.0)
    got = {name: (results[p].status, results[p].reason) for name, p in probes.items()}
    assert got.pop("good") == (UP, "HTTP 200")
    assert got.pop("plugin hangs") == (DOWN, "check_hang killed after 1s")
    assert got.pop("short timeout") == (DOWN, "timeout after 0.3s")
    assert got == dict.fromkeys(got, (DOWN, "timeout after 1s"))
    # nothing is left running: the cut exchanges' threads end, the plugin's child is killed
    wait_for(lambda: not exchange_threads(), what="end of the cut exchanges' threads")
    child = int((tmp_path / "child").read_text())
    wait_for(lambda: gone(child), what=f"end of the plugin's child {child}")


def test_rounds_after_rounds_leave_no_thread_behind(servers):
    port = servers("trickle-head")
    servers.start()
    p = probe("http", port, timeout=0.3)
    for _ in range(5):
        r = within(lambda: checks.run([p]), 1.3)
        assert (r[p].status, r[p].reason) == (DOWN, "timeout after 0.3s")
        wait_for(lambda: not exchange_threads(), what="end of the cut exchange's thread")


def test_agent_polls_end_by_the_deadline(servers):
    targets = {"trickles": ("127.0.0.1", servers("trickle-line")),
               "silent": ("127.0.0.1", servers("silent")),
               "never accepts": ("127.0.0.1", never_accepting(servers.keep))}
    servers.start()
    got = within(lambda: agentpoll.poll(targets, timeout=0.5), 1.5)
    assert got == dict.fromkeys(targets, "timeout")


# --- check-real, the script ----------------------------------------------------------------

def two_services(tmp_path, servers, extra=""):
    """web: http against a trickler of headers, one of the body, a silent one; other: tcp,
    a good server and a dead one.  Each server its own address and port (forward = nat)."""
    web = {"127.0.0.11": servers("trickle-head", "127.0.0.11"),
           "127.0.0.12": servers("trickle-body", "127.0.0.12"),
           "127.0.0.13": servers("silent", "127.0.0.13")}
    good = servers("good", "127.0.0.14")
    dead = loopback.refused("127.0.0.15")
    servers.keep(dead)
    servers.start()
    text = f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[service web]
address = 10.0.0.1
port = 80
forward = nat
check = http
check_body = ^ok$
check_timeout = 1
check_interval = 0.5
check_fall = 1
{"".join(f"real.{a} = port={p}{chr(10)}" for a, p in web.items())}
[service other]
address = 10.0.0.2
port = 80
forward = nat
check = tcp
check_timeout = 0.5
check_interval = 0.5
check_fall = 1
real.127.0.0.14 = port={good}
real.127.0.0.15 = port={dead.getsockname()[1]}
{extra}"""
    path = tmp_path / "lvskit.ini"
    path.write_text(text)
    return str(path)


def check_real(*args, timeout=20):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "check-real"), *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def test_check_real_round_ends_and_finds_the_dead_server(tmp_path, servers):
    path = two_services(tmp_path, servers)
    r = check_real("-c", path, "--no-kernel")
    assert r.returncode == 2, r.stderr
    line = r.stdout.splitlines()[0]
    assert "other 127.0.0.15 down: connection refused" in line
    for a in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
        assert f"web {a} down: timeout after 1s" in line
    took = float(line.split(" time=")[1].split("s")[0])
    assert took < 2.0, line            # the largest check_timeout plus one second


def test_check_real_every_keeps_going_and_stops(tmp_path, servers):
    path = two_services(tmp_path, servers)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bin", "check-real"), "-c", path,
                             "--no-kernel", "--every", "0.2"], env=ENV, stderr=subprocess.PIPE)
    state = tmp_path / "state" / "health.json"
    seen, tasks = set(), []

    def rounds():
        tasks.append(len(os.listdir(f"/proc/{proc.pid}/task")))
        try:
            data = json.loads(state.read_text())
        except (FileNotFoundError, ValueError):
            return False
        seen.add(data["checked"]["web"])
        return len(seen) >= 5
    try:
        wait_for(rounds, timeout=15, what="five rounds of web")
        data = json.loads(state.read_text())["services"]
        assert [v["up"] for e, v in data["other"].items() if e.startswith("127.0.0.15:")] == [False]
        # the cut exchanges end: threads do not pile up round after round
        assert max(tasks) <= 12, tasks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()


# --- reweight, the script -------------------------------------------------------------------

# bin/reweight as it is, its kernel the fake one: this host has no IPVS to lend it
REWEIGHT = f"""
import runpy, sys
sys.path[:0] = [{os.path.join(ROOT, 'lib')!r}, {os.path.join(ROOT, 'tests', 'unit')!r}]
from fakekernel import FakeKernel
from lvskit import sync
sync.open_kernel = FakeKernel
sys.argv = [{os.path.join(ROOT, 'bin', 'reweight')!r}] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def reweight_config(tmp_path, servers):
    ports = {"a": servers("trickle-head", "127.0.0.21"), "b": servers("trickle-body", "127.0.0.22"),
             "c": servers("silent", "127.0.0.23"), "d": never_accepting(servers.keep, "127.0.0.24")}
    servers.start()
    text = f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[reweight]
timeout = 0.5
http_url = http://{{address}}:{{agent_port}}/load
{"".join(f"[server {n}]{chr(10)}address = 127.0.0.{21 + i}{chr(10)}agent_port = {ports[n]}{chr(10)}"
         for i, n in enumerate("abcd"))}
[service web]
address = 10.0.0.1
port = 80
reweight = http
real.a = weight=1
real.b = weight=1
real.c = weight=1
real.d = weight=1
"""
    path = tmp_path / "lvskit.ini"
    path.write_text(text)
    return str(path), ports


def test_reweight_http_against_tricklers_exits_and_frees_its_lock(tmp_path, servers):
    path, ports = reweight_config(tmp_path, servers)
    argv = [sys.executable, "-c", REWEIGHT, "-c", path]
    for _ in range(2):              # the second run finds the lock free (75 otherwise)
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=20)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 < 8
    web = json.loads((tmp_path / "state" / "weights.json").read_text())["services"]["web"]
    assert {e: s["error"] for e, s in web.items()} == {
        f"127.0.0.{21 + i}:80": f"http http://127.0.0.{21 + i}:{ports[n]}/load: timeout"
        for i, n in enumerate("abcd")}


def test_reweight_every_stops_on_sigterm(tmp_path, servers):
    path, _ = reweight_config(tmp_path, servers)
    proc = subprocess.Popen([sys.executable, "-c", REWEIGHT, "-c", path, "--every", "0.3"], env=ENV,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (tmp_path / "state" / "weights.json").exists(), timeout=15,
                 what="weights.json")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()


# --- a thousand at once ---------------------------------------------------------------------

def test_a_thousand_servers_round_ends_by_its_deadline(tmp_path):
    """1,000 real servers on 127.0.x.y, served by a process of their own: behind http 100 good
    and 150 slow ones, behind ssh 100 good and 200 slow (a banner trickled, or none), behind
    tcp 430 good and 10 never accepting, and 10 dead.

    Each http(s) check costs the prober real CPU (requests), all on one
    interpreter: hundreds of them in one round spend much of a short timeout computing,
    which is a capacity to know (README), not a deadline to test here."""
    addresses = iter(f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in range(1000))
    web, ssh, tcp, dead, keep = {}, {}, {}, {}, []
    served = []
    for group, mix in ((web, ["good"] * 100 + ["trickle-head"] * 50 + ["trickle-body"] * 50 + ["silent"] * 50),
                       (ssh, ["banner"] * 100 + ["trickle-line"] * 100 + ["silent"] * 100)):
        for behaviour in mix:
            a = next(addresses)
            s = loopback.listener(a)
            served.append((s, behaviour))
            group[a] = (s.getsockname()[1], "good" if behaviour == "banner" else behaviour)
    for _ in range(430):
        a = next(addresses)
        s = loopback.listener(a)
        served.append((s, "silent"))
        tcp[a] = (s.getsockname()[1], "good")
    for _ in range(10):
        a = next(addresses)
        tcp[a] = (never_accepting(keep.append, a), "never")
    for _ in range(10):
        a = next(addresses)
        s = loopback.refused(a)
        keep.append(s)
        dead[a] = (s.getsockname()[1], "dead")
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "loopback.py")]
                              + [f"{s.fileno()}={b}" for s, b in served],
                              pass_fds=[s.fileno() for s, _ in served], stdout=subprocess.PIPE, text=True)
    try:
        for s, _ in served:
            s.close()
        assert server.stdout.readline() == "serving\n"

        def reals(group):
            return "".join(f"real.{a} = port={p}\n" for a, (p, _) in group.items())
        text = f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[service web]
address = 10.0.0.1
port = 80
forward = nat
check = http
check_body = ^ok$
check_timeout = 1
check_fall = 1
{reals(web)}
[service tcp]
address = 10.0.0.2
port = 80
forward = nat
check = tcp
check_timeout = 1
check_fall = 1
{reals(tcp)}
[service ssh]
address = 10.0.0.4
port = 22
forward = nat
check = ssh
check_timeout = 1
check_fall = 1
{reals(ssh)}
[service gone]
address = 10.0.0.3
port = 80
forward = nat
check = tcp
check_timeout = 0.5
check_fall = 1
{reals(dead)}"""
        cfg = config.parse(text, "thousand.ini")
        rnd, _, _ = within(lambda: checkreal.run_round(cfg, {}, {}), 2.0)
        assert rnd.probes == 1000
        state = {r.real.dest.address: (r.after.state, r.after.reason) for r in rnd.rows}
        for group in (web, ssh, tcp, dead):
            for a, (_, behaviour) in group.items():
                s, reason = state[a]
                if behaviour == "good":
                    assert s == "up", (a, behaviour, reason)
                elif behaviour == "dead":
                    assert (s, reason) == ("down", "connection refused"), (a, reason)
                else:
                    assert (s, reason) == ("down", "timeout after 1s"), (a, behaviour, reason)
        wait_for(lambda: not exchange_threads(), what="end of the cut exchanges' threads")
    finally:
        server.kill()
        server.wait()
        for s in keep:
            s.close()
