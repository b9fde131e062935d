"""reweight in the lab: a loaded real server gets a smaller weight and fewer connections.

Real: two real servers in their own namespaces, each running lvs-agent
--listen; reweight on the director polls them over TCP and writes weights
into the guest kernel's IPVS table; the client makes real connections to the
VIP and counts who answered.

Injected: the load figure.  loadavg is one number per kernel, and every
namespace of the lab shares the guest's kernel, so a CPU burner in one "real
server" raises the figure both agents read, and its 1-minute average takes
minutes to rise and fall.  So each agent gets its own /proc (lvs-agent
--proc-root, the documented test hook) and the test writes the loaded
server's loadavg the way a burner on its own machine would leave it.
"""
import os
import time

import pytest

from conftest import ROOT, ipvsadm_ln, script

PY = "/usr/bin/python3"
AGENT_PORT = 7766


def fake_proc(path, load):
    path.mkdir(exist_ok=True)
    (path / "stat").write_text("cpu  1 1 1 1\ncpu0 1 1 1 1\ncpu1 1 1 1 1\n")   # 2 CPUs
    tmp = path / ".loadavg"
    tmp.write_text(f"{load:.2f} {load:.2f} {load:.2f} 1/100 100\n")
    os.replace(tmp, path / "loadavg")


@pytest.mark.parametrize("mode", ["dr"])
def test_loaded_server_gets_less_weight_and_fewer_connections(mode, tmp_path):
    from topo import Lab, unique_prefix
    with Lab(prefix=unique_prefix("lr") + mode[0], mode=mode) as lab:
        lab.serve()
        hades, kama = lab.reals
        agent_ini = tmp_path / "agent.ini"
        agent_ini.write_text(f"[agent]\nmemory = off\nmax_sessions = 0\nstate_file = {tmp_path}/none\n")
        procs, agents = {n: tmp_path / f"proc-{n}" for n in lab.reals}, {}
        for n in lab.reals:
            fake_proc(procs[n], 0.0)
            agents[n] = lab.popen(n, [PY, os.path.join(ROOT, "bin", "lvs-agent"), "-c", str(agent_ini),
                          "--proc-root", str(procs[n]), "--listen", f"{lab.addr[n]}:{AGENT_PORT}"],
                      env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
        forward = "nat" if mode == "nat" else "dr"
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
                assert r.returncode == 0, r.stderr
                seen.append(weights())
                if until(seen[-1]):
                    return seen
            raise AssertionError(f"weights did not get there: {seen}")

        # the agents are reachable and idle: full weight, an even share
        start = rounds(lambda w: w[hades] == w[kama] == 100, limit=3)[-1]
        assert start == {hades: 100, kama: 100}
        even = lab.connect(80, 40)
        assert even[None] == 0 and abs(even[hades] - even[kama]) <= 2, even

        # hades is loaded (2 busy CPUs of 2): its weight falls a step per round
        fake_proc(procs[hades], 2.0)
        seen = rounds(lambda w: w[hades] <= 10)
        steps = [w[hades] for w in seen]
        assert all(a > b for a, b in zip(steps, steps[1:])), steps     # monotone, no bounce
        assert all(w[kama] == 100 for w in seen), seen
        loaded = lab.connect(80, 40)
        assert loaded[None] == 0, loaded
        assert loaded[hades] <= 6 and loaded[kama] >= 34, loaded         # ~ 9% at 10:100

        # the load ends: the weight comes back and so does hades's share
        fake_proc(procs[hades], 0.0)
        back = rounds(lambda w: w[hades] >= 90)
        assert [w[hades] for w in back] == sorted(w[hades] for w in back), back
        again = lab.connect(80, 40)
        assert again[None] == 0 and abs(again[hades] - again[kama]) <= 4, again

        # a dead agent changes nothing: the weights stay where they are
        agents[hades].terminate()
        agents[hades].wait(10)
        before = weights()
        r = script(director, "reweight", "-c", str(cfg))
        assert r.returncode == 0 and f"agent {lab.addr[hades]}:{AGENT_PORT}: connection refused" in r.stderr, r.stderr
        assert weights() == before
