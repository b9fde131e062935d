"""lvs-realserver in a network namespace of its own: VIPs on lo, the ARP
sysctls, idempotence, --dry-run, status and down, against the real kernel."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bin", "lvs-realserver")
CONFIG = os.path.join(ROOT, "conf", "lvskit.ini")
VIP = "10.200.45.26"
VIP6 = "fd00:200::26"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def ns():
    name = f"lvskit-rs-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def inside(ns, *argv):
    env = {**os.environ, "LVSKIT_NO_SYSLOG": "1"}
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def rs(ns, *args):
    return inside(ns, "/usr/bin/python3", SCRIPT, *args)


def lo_addresses(ns):
    info = json.loads(inside(ns, "ip", "-j", "addr", "show", "dev", "lo").stdout)[0]
    return {a["local"] for a in info["addr_info"]}


def sysctls(ns):
    out = {}
    for dev in ("all", "lo"):
        for name in ("arp_ignore", "arp_announce"):
            out[f"{dev}.{name}"] = int(inside(ns, "cat", f"/proc/sys/net/ipv4/conf/{dev}/{name}").stdout)
    return out


def test_up_sets_sysctls_before_the_address_and_is_idempotent(ns):
    plan = rs(ns, "-n", "up", VIP, VIP6)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "sysctl -w net.ipv4.conf.all.arp_ignore=1", "sysctl -w net.ipv4.conf.all.arp_announce=2",
        "sysctl -w net.ipv4.conf.lo.arp_ignore=1", "sysctl -w net.ipv4.conf.lo.arp_announce=2",
        "ip link set lo up", f"ip addr add {VIP}/32 dev lo", f"ip addr add {VIP6}/128 dev lo"]
    assert VIP not in lo_addresses(ns)                       # dry run changed nothing
    assert set(sysctls(ns).values()) == {0}

    st = rs(ns, "status", VIP)
    assert st.returncode == 7 and f"{VIP}/32 on lo: no" in st.stdout

    up = rs(ns, "up", VIP, VIP6)
    assert (up.returncode, up.stdout, up.stderr) == (0, "", "")
    assert {VIP, VIP6} <= lo_addresses(ns)
    assert sysctls(ns) == {"all.arp_ignore": 1, "all.arp_announce": 2,
                           "lo.arp_ignore": 1, "lo.arp_announce": 2}
    assert rs(ns, "-n", "up", VIP, VIP6).stdout == ""        # nothing left to do
    again = rs(ns, "up", VIP, VIP6)
    assert (again.returncode, again.stderr) == (0, "")
    st = rs(ns, "status", VIP, VIP6)
    assert st.returncode == 0, st.stdout

    down = rs(ns, "down", VIP, VIP6)
    assert down.returncode == 0, down.stderr
    assert not {VIP, VIP6} & lo_addresses(ns)
    assert sysctls(ns)["all.arp_ignore"] == 1                # left in place on purpose
    assert rs(ns, "down", VIP).returncode == 0               # already down: fine


def test_a_stricter_arp_ignore_is_left_alone(ns):
    inside(ns, "sh", "-c", "echo 2 > /proc/sys/net/ipv4/conf/all/arp_ignore")
    plan = rs(ns, "-n", "up", VIP).stdout.splitlines()
    assert "sysctl -w net.ipv4.conf.all.arp_ignore=1" not in plan
    assert "sysctl -w net.ipv4.conf.lo.arp_ignore=1" in plan


def test_ipv6_only_needs_no_sysctl(ns):
    plan = rs(ns, "-n", "up", VIP6).stdout.splitlines()
    assert plan == ["ip link set lo up", f"ip addr add {VIP6}/128 dev lo"]


def test_vips_from_the_config_are_its_dr_services(ns):
    plan = rs(ns, "-n", "-c", CONFIG, "up")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[-1] == "ip addr add 192.168.45.26/32 dev lo"
    assert rs(ns, "up", "not-an-address").returncode == 2
