"""reweight in the lab: a loaded real server gets a smaller weight and fewer connections.

All real: two real servers in their own namespaces, each running lvs-agent
--listen; reweight on the director polls them over TCP and writes weights
into the guest kernel's IPVS table; the client makes real connections to the
VIP and counts who answered; the load is CPU burners.

Every namespace of the lab shares the guest's kernel and so its one load
average, so each real server is also a cgroup v2 (as on a real machine:
the slice where its services run) holding its responders, its agent and
its burners, and the agents read their own cgroup (`[agent] cgroup`).
hades staying at full weight while kama burns is what shows the figure is
per server.

`ip netns exec` mounts a fresh /sys, without /sys/fs/cgroup, so the test
mounts the cgroup v2 hierarchy a second time, under tmp_path, where every
namespace's processes see it.
"""
import math
import os
import subprocess
import time

import pytest

from conftest import ROOT, ipvsadm_ln, script

PY = "/usr/bin/python3"
AGENT_PORT = 7766
MIN_BATCH = 60                  # connections per measured share, at least


@pytest.mark.parametrize("mode", ["dr"])
def test_loaded_server_gets_less_weight_and_fewer_connections(mode, tmp_path):
    from topo import Lab, remove_cgroup, unique_prefix
    mount = tmp_path / "cgroup2"
    mount.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(mount)], check=True)
    cgroups = {}
    try:
        with Lab(prefix=unique_prefix("lr") + mode[0], mode=mode) as lab:
            run_test(lab, tmp_path, mount, cgroups)
    finally:
        for cg in cgroups.values():
            remove_cgroup(cg)
        subprocess.run(["umount", str(mount)], check=True)


def run_test(lab, tmp_path, mount, cgroups):
    from topo import in_cgroup
    lab.serve()
    hades, kama = lab.reals
    agents = {}
    for n in lab.reals:
        cgroups[n] = cg = str(mount / lab.ns[n])
        os.makedirs(cg, exist_ok=True)
        for pid in subprocess.run(["ip", "netns", "pids", lab.ns[n]], capture_output=True,
                                  text=True, check=True).stdout.split():
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:    # its responders
                f.write(pid)
        ini = tmp_path / f"agent-{n}.ini"
        ini.write_text(f"[agent]\nmemory = off\nmax_sessions = 0\nstate_file = {tmp_path}/none\n"
                       f"cgroup = {cg}\n")
        agents[n] = lab.popen(n, in_cgroup(cg, [
            PY, os.path.join(ROOT, "bin", "lvs-agent"), "-c", str(ini),
            "--listen", f"{lab.addr[n]}:{AGENT_PORT}"]), env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    forward = "nat" if lab.mode == "nat" else "dr"
    cfg = tmp_path / "lvskit.ini"
    cfg.write_text(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[reweight]
agent_port = {AGENT_PORT}
timeout = 5
alpha = 0.7
max_step = 0.5
slow_start = 0
[service web]
address = {lab.vip}
port = 80
scheduler = wrr
forward = {forward}
reweight = agent
real.{lab.addr[hades]} = weight=1
real.{lab.addr[kama]} = weight=1
""")
    director = lambda argv, **kw: lab.run("director", argv, **kw)   # noqa: E731
    r = script(director, "ipvs-sync", "-c", str(cfg))
    assert r.returncode == 0, r.stderr

    def weights():
        table = ipvsadm_ln(director)[f"TCP {lab.vip}:80"][2]
        return {n: table[f"{lab.addr[n]}:80"][1] for n in lab.reals}

    def rounds(until, limit=8):
        seen = []
        for _ in range(limit):
            r = script(director, "reweight", "-c", str(cfg))
            assert r.returncode == 0 and "agent" not in r.stderr, r.stderr    # both answered
            seen.append(weights())
            if until(seen[-1]):
                return seen
        raise AssertionError(f"weights did not get there: {seen}")

    def share():
        """New connections per server over whole wrr cycles, with the weights then.

        wrr serves in cycles of sum(weights)/gcd connections, and within one
        cycle in bursts (at 100:41 the first 59 go to the heavier server), so
        only whole cycles show the share the weights give."""
        w = weights()
        cycle = sum(w.values()) // math.gcd(*w.values())
        n = cycle * math.ceil(MIN_BATCH / cycle)
        got = lab.connect(80, n)
        assert got[None] == 0, got
        for name in lab.reals:
            assert abs(got[name] - n * w[name] / sum(w.values())) <= 2, (got, w)
        return got, w

    # idle: full weight, an even share
    start = rounds(lambda w: w[hades] == w[kama] == 100, limit=3)[-1]
    assert start == {hades: 100, kama: 100}
    even, _ = share()

    # two CPU burners (the guest has 2 CPUs) in kama's cgroup: its weight falls a step per round.
    # They get about 2/3 of the guest (the director's reweight runs take the rest), so kama's
    # capacity settles near 1/3 with cpu_full = 1: the test waits for half weight.
    burners = [lab.popen(kama, in_cgroup(cgroups[kama], [PY, "-c", "while True: pass"]))
               for _ in range(2)]
    seen = rounds(lambda w: w[kama] <= 50)
    steps = [w[kama] for w in seen]
    assert all(a > b for a, b in zip(steps, steps[1:])), steps     # monotone, no bounce
    assert all(w[hades] >= 90 for w in seen), seen                  # hades's load is its own
    loaded, w = share()
    frac = lambda c: c[kama] / sum(c.values())      # noqa: E731
    assert frac(loaded) <= frac(even) * 0.75, (loaded, w, even)

    # the burners end: kama's weight comes back, and so does its share
    for b in burners:
        b.kill()
        b.wait(10)
    back = rounds(lambda w: w[kama] >= 90)
    assert [w[kama] for w in back] == sorted(w[kama] for w in back), back
    again, _ = share()
    assert frac(again) >= 0.45, again
    print(f"\nweights idle {start}, burning {seen}, after {back}\n"
          f"new connections: idle {dict(even)}, kama burning {dict(loaded)}, after {dict(again)}")

    # a dead agent changes nothing: the weights stay where they are
    agents[kama].terminate()
    agents[kama].wait(10)
    before = weights()
    r = script(director, "reweight", "-c", str(cfg))
    assert r.returncode == 0 and f"agent {lab.addr[kama]}:{AGENT_PORT}: connection refused" in r.stderr, r.stderr
    assert weights() == before
