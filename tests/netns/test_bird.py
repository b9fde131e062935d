"""ipvs-sync's BIRD include file ([announce] mode = bgp) read by a real BIRD 2 of our own.

The host has no IPVS: ipvs-sync runs on the unit tests' fake table
(tests/unit/fakekernel.py: the script unchanged, lvskit.ipvs replaced), and
everything on BIRD's side is real: the file it writes, `bird -p`, the
`birdc configure` it runs against a BIRD in a namespace of ours, and what
that BIRD then holds.  tests/lab/test_announce.py does the same with the
guest's real IPVS table.
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from birdns import Bird  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                       reason="BIRD 2 not installed (bird2: make apt-deps)"),
]

SERVICES = """\
[service www]
address = 192.0.2.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
real.198.51.100.13 = weight=1
real.198.51.100.43 = weight=1
[service www6]
address = 2001:db8::26
port = 80
scheduler = mh
sched_flags = mh-port
real.2001:db8::13 = weight=1
{more}"""

MORE = """\
[service dns]
address = 192.0.2.53
port = 53
protocol = udp
scheduler = mh
real.198.51.100.13 = weight=1
"""


def ipvs_sync(path, *args):
    return subprocess.run([sys.executable, "-S", os.path.join(ROOT, "tests", "unit", "fakekernel.py"),
                           os.path.join(ROOT, "bin", "ipvs-sync"), "-c", path, *args],
                          capture_output=True, text=True, env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})


@pytest.fixture
def bird(tmp_path):
    (tmp_path / "bird").mkdir()
    with Bird(tmp_path / "bird", tmp_path / "etc-bird" / "lvskit-vips.conf") as b:
        yield b


def write(tmp_path, bird, more=""):
    path = tmp_path / "lvskit.ini"
    path.write_text(bird.lvskit_config(tmp_path, SERVICES.format(more=more)))
    return str(path)


def test_bird_parses_takes_and_announces_what_ipvs_sync_wrote(tmp_path, bird):
    os.makedirs(os.path.dirname(bird.include))
    cfg = write(tmp_path, bird)
    # BIRD not running yet: the table is made, the file written, the failure one line, exit 1
    r = ipvs_sync(cfg)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"ipvs-sync: {bird.birdc_command()} configure: BIRD did not take "
                                     f"{bird.include}: Unable to connect to server control socket "
                                     f"({bird.ctl}): No such file or directory"]
    assert bird.parse() == (0, "")                       # bird -p: the file is BIRD's syntax
    bird.start()
    assert bird.states() == {"device1": "up", "lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert bird.birdc("show", "static", "lvskit_vip").split() == ["192.0.2.26/32", "blackhole"]
    before = bird.reconfigurations()
    # the text BIRD started with is not yet recorded as taken: one configure, then none
    r = ipvs_sync(cfg)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert bird.reconfigurations() == before + 1
    dry = ipvs_sync(cfg, "-n").stdout.splitlines()     # (the fake table is each process's own: empty)
    assert dry and all(line.startswith("ipvsadm ") for line in dry)   # nothing for BIRD to do
    r = ipvs_sync(cfg)
    assert (r.returncode, r.stderr) == (0, "") and bird.reconfigurations() == before + 1
    # a VIP more: written, configured, in BIRD's static protocol, still not announced
    cfg = write(tmp_path, bird, MORE)
    dry = ipvs_sync(cfg, "-n").stdout.splitlines()
    assert dry[-1] == f"{bird.birdc_command()} configure" and "  route 192.0.2.53/32 blackhole;" in dry
    assert bird.reconfigurations() == before + 1         # the dry run changed nothing
    r = ipvs_sync(cfg)
    assert (r.returncode, r.stderr) == (0, "") and bird.reconfigurations() == before + 2
    assert bird.birdc("show", "static", "lvskit_vip").split() == ["192.0.2.26/32", "blackhole",
                                                                  "192.0.2.53/32", "blackhole"]
    assert bird.states()["lvskit_vip"] == "down" and bird.routes("lvskit_vip") == []
    # enabled (what the gate will do): the VIPs are BIRD's routes, to export to the router
    bird.birdc("enable", "lvskit_vip")
    bird.birdc("enable", "lvskit_vip_v6")
    assert bird.states()["lvskit_vip"] == "up"
    assert bird.routes("lvskit_vip") == ["192.0.2.26/32", "192.0.2.53/32"]
    assert bird.routes("lvskit_vip_v6") == ["2001:db8::26/128"]


def test_a_configure_disables_what_was_enabled(tmp_path, bird):
    """BIRD restarts a protocol whose `disabled` differs from its state at run time
    (nest/proto.c, proto_reconfigure): a configure after `birdc enable` withdraws the
    VIPs.  The gate (a later step) has to live with that; ipvs-sync therefore runs
    configure only when BIRD has not taken the file's text yet."""
    os.makedirs(os.path.dirname(bird.include))
    cfg = write(tmp_path, bird)
    ipvs_sync(cfg)                                       # writes the file BIRD starts with
    bird.start()
    assert ipvs_sync(cfg).returncode == 0
    bird.birdc("enable", "lvskit_vip")
    assert bird.routes("lvskit_vip") == ["192.0.2.26/32"]
    assert ipvs_sync(cfg).returncode == 0                # unchanged: no configure, still announced
    assert bird.states()["lvskit_vip"] == "up"
    assert ipvs_sync(write(tmp_path, bird, MORE)).returncode == 0
    assert bird.states()["lvskit_vip"] == "down" and bird.routes("lvskit_vip") == []


def test_a_bird_conf_bird_refuses_is_named_and_retried(tmp_path, bird):
    os.makedirs(os.path.dirname(bird.include))
    cfg = write(tmp_path, bird)
    ipvs_sync(cfg)
    bird.start()
    good = open(bird.conf).read()
    with open(bird.conf, "a") as f:
        f.write("protocol static {\n")                   # the operator's half-edited bird.conf
    cfg = write(tmp_path, bird, MORE)
    r = ipvs_sync(cfg)
    assert r.returncode == 1
    said = r.stderr.splitlines()
    assert len(said) == 1 and said[0].startswith(f"ipvs-sync: {bird.birdc_command()} configure: BIRD did not "
                                                 f"take {bird.include}: {bird.conf}:"), said
    assert said[0].endswith(" syntax error, unexpected END"), said
    assert "route 192.0.2.53/32" in open(bird.include).read()      # written: BIRD reads it at its start
    assert bird.birdc("show", "static", "lvskit_vip").split() == ["192.0.2.26/32", "blackhole"]
    with open(bird.conf, "w") as f:
        f.write(good)
    r = ipvs_sync(cfg)                                   # the file is the same: configured again all the same
    assert (r.returncode, r.stderr) == (0, "")
    assert bird.birdc("show", "static", "lvskit_vip").split() == ["192.0.2.26/32", "blackhole",
                                                                  "192.0.2.53/32", "blackhole"]
