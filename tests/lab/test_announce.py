"""ipvs-sync with [announce] mode = bgp against the guest's real IPVS and a real BIRD 2.

In one namespace of ours: the mh services with their flags, read back by
ipvsadm; the sysctls that bgp mode turns on, read back from the
namespace's /proc; and BIRD's include file, taken by a BIRD started in the
same namespace (tests/netns/birdns.py), whose routes are the table's VIPs
once enabled.
"""
import os
import shutil
import sys

import pytest
from conftest import ROOT, ipvsadm_ln, script

sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
from birdns import Bird  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                                reason="BIRD 2 not installed (bird2: make apt-deps)")

SERVICES = """\
[service www]
address = 10.45.0.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
real.10.45.1.13 = weight=2
real.10.45.1.43 = weight=1
[service ssh]
address = 10.45.0.26
port = 22
scheduler = mh
real.10.45.1.13 = weight=1
[service www6]
address = fd00:45::26
port = 443
scheduler = mh
sched_flags = mh-fallback
real.fd00:45::13 = weight=1
"""

SYSCTLS = ("sloppy_tcp", "schedule_icmp", "expire_nodest_conn")


def sysctls(netns):
    return {name: netns.run(["cat", f"/proc/sys/net/ipv4/vs/{name}"]).stdout.strip() for name in SYSCTLS}


def test_bgp_mode_makes_mh_table_sysctls_and_the_bird_file(netns, tmp_path):
    (tmp_path / "bird").mkdir()
    (tmp_path / "etc-bird").mkdir()
    b = Bird(tmp_path / "bird", tmp_path / "etc-bird" / "lvskit-vips.conf", netns=netns.name)
    try:
        cfg = tmp_path / "lvskit.ini"
        cfg.write_text(b.lvskit_config(tmp_path, SERVICES))
        netns.run(["modprobe", "ip_vs_mh"])
        assert sysctls(netns) == {"sloppy_tcp": "0", "schedule_icmp": "0", "expire_nodest_conn": "0"}
        dry = script(netns.run, "ipvs-sync", "-c", str(cfg), "-n")
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert [l for l in lines if l.startswith("sysctl")] == [
            f"sysctl -w net.ipv4.vs.{name}=1" for name in
            ("expire_nodest_conn", "expire_quiescent_template", "sloppy_tcp", "schedule_icmp")]
        assert "ipvsadm -A -t 10.45.0.26:80 -s mh -b flag-1,flag-2" in lines
        assert lines[-1] == f"{b.birdc_command()} configure"
        assert ipvsadm_ln(netns.run) == {} and not os.path.exists(b.include)     # a dry run
        r = script(netns.run, "ipvs-sync", "-c", str(cfg))
        assert r.returncode == 1            # BIRD is not running yet: the table is made all the same
        assert r.stderr.splitlines() == [f"ipvs-sync: {b.birdc_command()} configure: BIRD did not take "
                                         f"{b.include}: Unable to connect to server control socket "
                                         f"({b.ctl}): No such file or directory"]
        # the flags went through lvskit's own netlink codec; ipvsadm reads them back by name
        assert ipvsadm_ln(netns.run) == {
            "TCP 10.45.0.26:80": ("mh", "(mh-fallback,mh-port)", {"10.45.1.13:80": ("Route", 2),
                                                                  "10.45.1.43:80": ("Route", 1)}),
            "TCP 10.45.0.26:22": ("mh", "", {"10.45.1.13:22": ("Route", 1)}),
            "TCP [fd00:45::26]:443": ("mh", "(mh-fallback)", {"[fd00:45::13]:443": ("Route", 1)}),
        }
        assert sysctls(netns) == {"sloppy_tcp": "1", "schedule_icmp": "1", "expire_nodest_conn": "1"}
        assert b.parse() == (0, "")
        b.start()
        r = script(netns.run, "ipvs-sync", "-c", str(cfg))
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert b.states() == {"device1": "up", "lvskit_vip": "down", "lvskit_vip_v6": "down"}
        check = script(netns.run, "ipvs-sync", "-c", str(cfg), "--check")
        assert check.returncode == 0 and check.stdout.startswith("IPVS_SYNC OK"), check.stdout
        assert script(netns.run, "ipvs-sync", "-c", str(cfg), "-n").stdout == ""     # nothing left to do
        b.birdc("enable", "lvskit_vip")
        b.birdc("enable", "lvskit_vip_v6")
        assert b.routes("lvskit_vip") == ["10.45.0.26/32"]
        assert b.routes("lvskit_vip_v6") == ["fd00:45::26/128"]
    finally:
        b.close()
