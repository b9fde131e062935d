"""lvs-announce on the guest's real IPVS table, steering a real BIRD 2 in the same namespace.

Real: the kernel's IPVS table (loaded by ipvs-sync, emptied by `ipvsadm -C`),
BIRD and birdc, lvs-announce as a resident process.  Written by the test:
check-real's health.json (a fresh "checked"; the checks' real servers do not
exist here).  tests/netns/test_announce_gate.py covers the rest of the gate
against BIRD on a host without IPVS.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import PY, ROOT, ipvsadm_ln, script

sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
sys.path.insert(0, os.path.join(ROOT, "lib"))
from birdns import Bird  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                                reason="BIRD 2 not installed (bird2: make apt-deps)")

EVERY = 0.5     # seconds between the gate's rounds (the guest is emulated: slow)
SERVICES = """\
[service www]
address = 10.45.0.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
check_interval = 60
real.10.45.1.13 = weight=1
real.10.45.1.43 = weight=1
"""


def until(what, timeout=60):
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < timeout, "not within the time"
        time.sleep(0.02)
    return time.monotonic() - start


def test_withdrawn_within_two_rounds_of_ipvsadm_C_and_back_after_ipvs_sync(netns, tmp_path):
    (tmp_path / "bird").mkdir()
    (tmp_path / "etc-bird").mkdir()
    b = Bird(tmp_path / "bird", tmp_path / "etc-bird" / "lvskit-vips.conf", netns=netns.name)
    gate = None
    try:
        cfg = tmp_path / "lvskit.ini"
        cfg.write_text(b.lvskit_config(tmp_path, SERVICES))
        netns.run(["modprobe", "ip_vs_mh"])
        script(netns.run, "ipvs-sync", "-c", str(cfg))         # the table, and the file BIRD starts with
        b.start()
        r = script(netns.run, "ipvs-sync", "-c", str(cfg))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        from lvskit import config, health
        health.save(config.load(str(cfg)), health.View(checked={"www": time.time()}))

        def announced():
            return b.states()["lvskit_vip"] == "up" and b.routes("lvskit_vip") == ["10.45.0.26/32"]

        def withdrawn():
            return b.states()["lvskit_vip"] == "down" and b.routes("lvskit_vip") == []

        def verdict():
            with open(tmp_path / "run" / "announce.json") as f:
                return json.load(f)

        assert withdrawn()
        gate = subprocess.Popen(["ip", "netns", "exec", netns.name, PY, os.path.join(ROOT, "bin", "lvs-announce"),
                                 "-c", str(cfg), "--every", str(EVERY)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
        until(announced)
        assert len(ipvsadm_ln(netns.run)["TCP 10.45.0.26:80"][2]) == 2
        assert netns.run(["ipvsadm", "-C"]).returncode == 0
        took = until(withdrawn)
        print(f"\nwithdrawn {took:.2f} s after ipvsadm -C (rounds every {EVERY} s)")
        assert took < 2 * EVERY + 2, took       # two rounds, and a round's own birdc calls
        assert (verdict()["announced"], verdict()["key"]) == (False, "empty")
        r = script(netns.run, "ipvs-sync", "-c", str(cfg))
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
        took = until(announced)
        print(f"announced {took:.2f} s after ipvs-sync")
        assert took < 2 * EVERY + 2, took
        gate.send_signal(signal.SIGTERM)
        out, err = gate.communicate(timeout=60)
        assert gate.returncode == 0, err
        assert err.splitlines() == ["lvs-announce: withdrawing 10.45.0.26: www (tcp 10.45.0.26:80) is not in "
                                    "the kernel's IPVS table"], err
        assert withdrawn()
    finally:
        if gate is not None and gate.poll() is None:
            gate.kill()
            gate.communicate()
        b.close()
