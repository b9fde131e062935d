"""Director and spare in host network namespaces: real heartbeats, real VIP moves, real ARP.

Timings are hbtopo's (interval 20 ms, deadtime 120 ms), or lvskit.ini(5)'s fast
setting (10 ms, 30 ms) where a test says so; the assertions
leave generous room (seconds) for a loaded machine, the benchmark
(bench/failover.py) measures the gap itself.
"""
import os
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hbtopo import VIP6, Pair, VIP  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")


@pytest.fixture
def pair_factory(tmp_path):
    made = []

    def make(**kw):
        p = Pair(f"hbt{os.getpid() % 10000}{len(made)}", str(tmp_path / str(len(made))), **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def up(p, first="director"):
    second = "spare" if first == "director" else "director"
    p.start(first)
    p.start(second)
    assert p.wait(lambda: p.holds_vip("director") and p.role("spare") == 7, 10), p.log("director")
    assert p.wait(lambda: p.ask() == "director", 5)
    # both listening: `takeover status` says standby before the spare's hb-listen runs at all
    assert p.wait(lambda: f"peer {first} alive" in p.log(second), 10), p.log(second)


def reboot(p, node):
    """What a reboot does to its state: no VIP, empty /run; then links up and the daemons."""
    p.revive(node, reboot=True)
    p.start(node)


def only_one_active(p):
    return [n for n in ("director", "spare") if p.holds_vip(n)]


@pytest.mark.parametrize("auto_failback", ["yes", "no"])
def test_machine_death_takeover_and_failback(pair_factory, auto_failback):
    p = pair_factory(extra=f"auto_failback = {auto_failback}\n")
    up(p)
    p.kill("director")
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")
    assert p.wait(lambda: p.ask() == "spare", 3)
    assert p.client_neigh_mac() == p.mac("spare")
    assert p.wait(lambda: "now active: peer director silent" in p.log("spare"), 3), p.log("spare")
    reboot(p, "director")
    if auto_failback == "yes":
        assert p.wait(lambda: only_one_active(p) == ["director"], 10), p.log("spare")
        assert p.wait(lambda: p.ask() == "director", 3)
        assert p.client_neigh_mac() == p.mac("director")
    else:
        time.sleep(2.5)     # initdead 1 s + plenty of heartbeats
        assert only_one_active(p) == ["spare"]
        assert p.ask() == "spare"
        assert p.role("director") == 7


def test_fast_setting_fails_over_and_back(pair_factory):
    """lvskit.ini(5)'s fast setting (beats every 10 ms, deadtime three of them), realtime on.

    Conditions with deadlines, not timings: the client is answered by the
    spare through the moved VIP, then by the director again after failback.
    """
    p = pair_factory(timings="interval = 10ms\ndeadtime = 30ms\ninitdead = 1s\n")
    up(p)
    assert ": now active" not in p.log("spare")     # no takeover before the kill
    p.kill("director")
    assert p.wait(lambda: p.ask() == "spare", 3), p.log("spare")
    assert p.client_neigh_mac() == p.mac("spare")
    assert "now active: peer director silent" in p.log("spare")
    reboot(p, "director")
    assert p.wait(lambda: only_one_active(p) == ["director"], 10), p.log("spare")
    assert p.wait(lambda: p.ask() == "director", 3)
    assert p.client_neigh_mac() == p.mac("director")


def test_sigkill_alone_is_death_too(pair_factory):
    p = pair_factory()
    up(p)
    p.killall("director")           # links stay up; the VIP stays on the dead director
    assert p.wait(lambda: p.holds_vip("spare"), 3)
    # the spare's ARP moved the client off the director's MAC although both hold the VIP
    assert p.wait(lambda: p.client_neigh_mac() == p.mac("spare"), 3)
    assert p.ask() == "spare"


def test_heartbeat_path_cut_and_healed_ends_with_one_active(pair_factory):
    p = pair_factory(paths=("hb",), extra="auto_failback = no\n")
    up(p)
    p.links("director", "down", devs=("eth1",))     # only the heartbeat link
    assert p.wait(lambda: p.holds_vip("spare"), 3)
    assert only_one_active(p) == ["director", "spare"]     # split brain, as expected
    time.sleep(0.5)
    p.links("director", "up", devs=("eth1",))
    assert p.wait(lambda: len(only_one_active(p)) == 1, 5), (p.log("director"), p.log("spare"))
    time.sleep(1.5)                 # and it stays that way, with the winner announced
    assert only_one_active(p) == ["director"]
    assert p.wait(lambda: p.client_neigh_mac() == p.mac("director"), 3)
    assert p.ask() == "director"
    # The spare heard the director again active: both held the VIP unheard.  (The
    # director may hear the spare only after it let go: it then announces quietly.)
    assert "now standby: split brain, peer director (priority 200) was active too" in p.log("spare")
    assert "failback" not in p.log("director") + p.log("spare")


def test_inetd_started_listener_takes_over(pair_factory):
    p = pair_factory()
    p.start("director")
    p.start("spare", inetd=True)
    assert p.wait(lambda: p.holds_vip("director") and "peer director alive" in p.log("spare"), 10), p.log("spare")
    p.kill("director")
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")
    assert p.wait(lambda: p.ask() == "spare", 3)


def test_ipv6_vip_moves_with_unsolicited_neighbour_advertisement(pair_factory):
    p = pair_factory(v6=True)
    up(p)
    assert p.wait(lambda: f"{VIP6}/128" in p.run("director", ["ip", "-6", "addr"]).stdout, 5)
    assert p.wait(lambda: p.ask(address=VIP6) == "director", 5)
    assert p.client_neigh_mac(VIP6) == p.mac("director")
    p.kill("director")
    assert p.wait(lambda: f"{VIP6}/128" in p.run("spare", ["ip", "-6", "addr"]).stdout, 3)
    # no traffic in between: only the spare's advertisement can have moved the entry
    assert p.wait(lambda: p.client_neigh_mac(VIP6) == p.mac("spare"), 3), \
        p.run("client", ["ip", "-6", "neigh"]).stdout
    assert p.ask(address=VIP6) == "spare"


def test_multicast_only_heartbeats(pair_factory):
    p = pair_factory(extra="multicast = 239.255.0.94\nunicast = no\n")
    up(p)
    assert p.wait(lambda: "peer director alive" in p.log("spare") and "peer spare alive" in p.log("director"), 5), \
        (p.log("spare"), p.log("director"))
    p.kill("director")
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")
    assert p.wait(lambda: "now active: peer director silent" in p.log("spare"), 3), p.log("spare")


@pytest.mark.parametrize("extra", ["", "multicast = ff02::94\nunicast = no\n"], ids=["unicast", "multicast"])
def test_ipv6_heartbeat_path(pair_factory, extra):
    p = pair_factory(paths=("front6",), v6=True, extra=extra)
    up(p)
    assert p.wait(lambda: "peer director alive" in p.log("spare") and "peer spare alive" in p.log("director"), 5), \
        (p.log("spare"), p.log("director"))
    p.kill("director")
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")


def test_one_dead_path_is_not_a_dead_peer(pair_factory):
    p = pair_factory()
    up(p)
    p.links("director", "down", devs=("eth1",))
    time.sleep(1.0)
    assert only_one_active(p) == ["director"]
    assert "path hb silent" in p.log("spare")


def test_planned_handover_and_rejoin(pair_factory):
    p = pair_factory(extra="auto_failback = yes\n")
    up(p)
    prober = p.popen("client", ["/usr/bin/python3", "-c", PROBE, VIP, "4.0"],
                     stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    r = p.run("director", p.tool("director", "takeover", "--release"))
    assert r.returncode == 0, r.stderr
    out = prober.communicate(timeout=20)[0].split()
    assert only_one_active(p) == ["spare"]
    assert p.role("director") == 7 and "held" in p.run("director", p.tool("director", "takeover", "status")).stdout
    lost = out.count("-")
    assert out[0] == "director" and out[-1] == "spare" and lost <= 3, out
    # held: the director stays out although auto_failback is on
    time.sleep(1.0)
    assert only_one_active(p) == ["spare"]
    assert p.run("director", p.tool("director", "takeover", "--rejoin")).returncode == 0
    ok = p.wait(lambda: only_one_active(p) == ["director"], 5)
    assert ok, p.log("director")[-3000:] + "\n----\n" + p.log("spare")[-2000:]


# A probe every 10 ms for SECONDS, 20 ms timeout; prints who answered or '-'.
PROBE = r"""
import socket, sys, time
vip, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.02)
end, out = time.monotonic() + seconds, []
while time.monotonic() < end:
    t = time.monotonic()
    s.sendto(b'?', (vip, 9000))
    try:
        out.append(s.recv(100).decode())
    except OSError:
        out.append('-')
    time.sleep(max(0, 0.01 - (time.monotonic() - t)))
print(' '.join(out))
"""


def test_stale_role_file_does_not_fake_an_active_node(pair_factory):
    p = pair_factory(extra="auto_failback = no\n")     # no failback to mend it by luck
    run = os.path.join(p.node_dir["spare"], "run")
    os.makedirs(run)
    with open(os.path.join(run, "takeover.json"), "w") as f:
        f.write('{"role": "active"}\n')        # left by a crash; the spare holds no VIP
    up(p)
    assert "said active, the interface says standby" in p.log("spare")


def test_deleting_the_active_nodes_role_file_is_harmless(pair_factory):
    # The active node is the lower-ranked spare: were its heartbeats to say
    # standby, the director would take the VIPs and the spare keep them.
    p = pair_factory(extra="auto_failback = no\n")
    up(p)
    p.kill("director")
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")
    reboot(p, "director")
    assert p.wait(lambda: "peer spare alive (active" in p.log("director"), 10), p.log("director")
    role_file = os.path.join(p.node_dir["spare"], "run", "takeover.json")
    os.unlink(role_file)
    time.sleep(1.5)
    assert only_one_active(p) == ["spare"], (p.log("director"), p.log("spare"))
    with open(role_file) as f:
        assert '"active"' in f.read()       # rewritten from the interface


def test_a_worker_crash_on_the_spare_is_no_takeover(pair_factory):
    import signal
    p = pair_factory()
    up(p)
    out = subprocess.run(["ip", "netns", "pids", p.ns["spare"]], text=True, capture_output=True).stdout
    workers = []
    for pid in out.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"--serve" in f.read().split(b"\0"):
                    workers.append(int(pid))
        except OSError:
            pass
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    assert p.wait(lambda: "takeover worker ready, standby" in p.log("spare").split("worker died")[-1], 10), p.log("spare")
    time.sleep(0.5)
    assert only_one_active(p) == ["director"], p.log("spare")
    assert ": now active" not in p.log("spare")


def _pids(p, node, word):
    """The pids in node's namespace whose command line has the argument word."""
    out = subprocess.run(["ip", "netns", "pids", p.ns[node]], text=True, capture_output=True).stdout
    found = []
    for pid in out.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a == word.encode() or a.endswith(b"/" + word.encode()) for a in argv):
            found.append(int(pid))
    return found


@pytest.mark.parametrize("reboot", [True, False], ids=["reboot", "crash"])
def test_the_director_back_loses_no_probe(pair_factory, reboot):
    """Killed as a machine, then back: after a reboot (RUN_DIR emptied) or a crash
    without one (RUN_DIR kept: its role file still says active); no VIP either way.

    A client probing every 10 ms loses nothing while the director takes the
    VIP back (make-before-break), and each node says so in one line.
    """
    p = pair_factory(extra="auto_failback = yes\n")
    up(p)
    p.kill("director")
    assert p.wait(lambda: p.ask() == "spare" and "now active: peer director silent" in p.log("spare"), 5), \
        p.log("spare")
    mark = {n: len(p.log(n)) for n in ("director", "spare")}
    prober = p.popen("client", ["chrt", "-f", "10", "/usr/bin/python3", "-c", PROBE, VIP, "5.0"],
                     stdout=subprocess.PIPE, text=True)
    assert p.wait(lambda: p.ask() == "spare", 2)        # the probe runs
    p.revive("director", reboot=reboot)
    p.start("director")
    assert p.wait(lambda: only_one_active(p) == ["director"], 4), (p.log("director"), p.log("spare"))
    # the heartbeat loops alone run real-time: the worker started normal
    listeners, workers = _pids(p, "director", "hb-listen"), _pids(p, "director", "--serve")
    assert [os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK for pid in listeners] == [os.SCHED_FIFO]
    assert [os.sched_getscheduler(pid) for pid in workers] == [os.SCHED_OTHER]
    out = prober.communicate(timeout=20)[0].split()
    assert out[-1] == "director" and "spare" in out, out
    assert out.count("-") == 0, out
    director, spare = (p.log(n)[mark[n]:] for n in ("director", "spare"))
    assert [line for line in director.splitlines() if ": now " in line] == [
        "hb-listen: now active: failback, peer spare (priority 100) was active"], director
    assert [line for line in spare.splitlines() if ": now " in line] == [
        "hb-listen: now standby: failback, peer director (priority 200) took the VIPs"], spare
    assert "split brain" not in director + spare
    if not reboot:
        assert "said active, the interface says standby" in director
