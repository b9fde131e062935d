"""check-real over real packets between host network namespaces (no IPVS needed).

Timing-sensitive: a round of many probes lasts about one timeout, and the
loop notices a killed listener within fall x interval (+0.5 s).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
BIN = os.path.join(ROOT, "bin", "check-real")
PY = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def reals():
    from netns_reals import Reals
    r = Reals("crt")
    yield r
    r.close()


def write_cfg(tmp_path, addrs, port, extra=""):
    lines = ["[global]", f"state_dir = {tmp_path}/state", f"run_dir = {tmp_path}/run",
             "[service web]", "address = 10.200.0.100", f"port = {port}", "check = tcp"]
    lines += extra.splitlines() + [f"real.{a} =" for a in addrs]
    path = tmp_path / "lvskit.ini"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def check_real(reals, *args, **kw):
    return reals.in_dir([PY, BIN, *args], capture_output=True, text=True, timeout=60,
                        env=dict(os.environ, LVSKIT_NO_SYSLOG="1"), **kw)


def test_round_of_many_with_dead_servers_lasts_one_timeout(reals, tmp_path):
    from netns_reals import Reals
    live, dead = Reals.addresses(300), Reals.dead(5)
    reals.serve(live, 7001, "tcp")
    path = write_cfg(tmp_path, live + dead, 7001, "check_timeout = 0.8")
    t0 = time.monotonic()
    r = check_real(reals, "-c", path, "--no-kernel")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr     # 300 serve: degraded, WARNING
    assert r.stdout.startswith("CHECK_REAL WARNING - 5/305 down; web 10.203.0.1 down: timeout after 0.8s")
    assert "probes=305" in r.stdout
    # sequentially this would be 5 x 0.8 s of timeouts alone; startup included, about one timeout
    assert took < 0.8 + 1.5, took


def test_loop_takes_a_killed_server_out_within_fall_times_interval(reals, tmp_path):
    from netns_reals import Reals
    live = Reals.addresses(50, skip=400)
    reals.serve(live, 7002, "tcp")
    target = Reals.addresses(1, skip=450)[0]
    victim = reals.serve([target], 7002, "tcp")
    interval, fall = 0.5, 3
    path = write_cfg(tmp_path, live + [target], 7002,
                     f"check_interval = {interval}\ncheck_fall = {fall}\ncheck_rise = 2\ncheck_timeout = 0.4")
    health = tmp_path / "state" / "health.json"
    loop = subprocess.Popen(["ip", "netns", "exec", reals.dir, PY, BIN, "-c", path, "--no-kernel",
                             "--every", str(interval)], env=dict(os.environ, LVSKIT_NO_SYSLOG="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def state():
        try:
            return json.load(open(health))["services"]["web"][f"{target}:7002"]["state"]
        except (OSError, ValueError, KeyError):
            return None
    try:
        deadline = time.monotonic() + 10
        while state() != "up" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state() == "up"
        time.sleep(0.37)        # somewhere inside an interval
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        while state() == "up" and time.monotonic() - killed < 10:
            time.sleep(0.02)
        latency = time.monotonic() - killed
        assert state() == "down"
        assert latency <= fall * interval + 0.5, latency
        # it comes back after rise good checks
        reals.serve([target], 7002, "tcp")
        back = time.monotonic()
        while state() != "up" and time.monotonic() - back < 10:
            time.sleep(0.02)
        assert state() == "up" and time.monotonic() - back <= 2 * interval + 0.5
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=10)
    assert loop.returncode == 0, err
    assert out == ""        # a loop is quiet: changes go to syslog
