"""`make install-realserver` into a Debian 12 root that has Debian's python3 and nothing
else of Python's: lvs-agent answers there; with Debian's python3-pyroute2 (0.7.2, the
one package lvs-realserver needs) added, lvs-realserver puts a VIP on lo and takes it
off again, in a network namespace of its own.

The root is a writable overlay on the debootstrapped one (build/bookworm, see
test_debootstrap.py), made per run and thrown away: the shared root is only
read.  In the overlay the director's install (if a run left one) is removed
and python3-requests and python3-sh are purged first.  Nothing here needs
systemd as PID 1; the units are checked by test_install.py (systemd-analyze).
"""
import os
import shutil
import socket

import pytest

from installtools import ROOT, SBINDIR, chroot, make, overlay_root

DEBS = os.path.join(ROOT, "build", "debs")
VIP = "192.0.2.26"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, overlay and chroot need root")




@pytest.fixture(scope="module")
def root():
    with overlay_root("lvskit-rs-root-", ["python3-requests", "python3-sh"]) as merged:
        make("install-realserver", f"DESTDIR={merged}")
        yield merged


def test_the_root_has_no_python_package_but_debians_python3(root):
    for module in ("requests", "sh", "pyroute2"):
        assert chroot(root, "python3", "-c", f"import {module}").returncode != 0, module
    assert not os.path.exists(root + "/usr/local/lib/lvskit/lib/vendor")
    assert sorted(os.listdir(root + SBINDIR)) == ["lvs-agent", "lvs-realserver"]


def test_lvs_agent_answers_inetd_style(root):
    """The connection on stdin, stdout and stderr, and a line from the client first
    (HAProxy's agent-send): one answer line back, nothing else."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"hello agent\n")
        res = chroot(root, SBINDIR + "/lvs-agent", stdin=server, stdout=server, stderr=server)
        server.close()
        client.settimeout(10)
        got = b"".join(iter(lambda: client.recv(4096), b""))
    assert res.returncode == 0
    assert got.startswith(b"up ready ") and got.endswith(b"%\n") and got.count(b"\n") == 1, got
    # and from a shell, as an admin would try it
    res = chroot(root, SBINDIR + "/lvs-agent", "-v")
    assert res.returncode == 0 and res.stdout.startswith("up ready "), res.stderr
    assert "capacity" in res.stderr


def test_lvs_realserver_needs_pyroute2_and_says_so_in_one_line(root):
    res = chroot(root, SBINDIR + "/lvs-realserver", "status", VIP, net=True)
    assert res.returncode == 5, res.stderr
    assert res.stderr == "lvs-realserver: needs pyroute2: apt-get install python3-pyroute2\n"


def test_lvs_realserver_with_debians_pyroute2(root):
    make("realserver-debs")
    debs = sorted(f for f in os.listdir(DEBS) if f.endswith(".deb"))
    for deb in debs:
        shutil.copy(os.path.join(DEBS, deb), os.path.join(root, "tmp"))
    res = chroot(root, "dpkg", "-i", *("/tmp/" + deb for deb in debs))
    assert res.returncode == 0, res.stdout + res.stderr
    res = chroot(root, "python3", "-c", "import pyroute2; print(pyroute2.__file__)")
    assert res.stdout.strip() == "/usr/lib/python3/dist-packages/pyroute2/__init__.py", res.stderr
    # one network namespace for the whole story: plan, up, status, the address, down
    script = f"""
        rs={SBINDIR}/lvs-realserver
        $rs -n up {VIP}; echo "plan $?"
        $rs up {VIP}; echo "up $?"
        $rs status {VIP} >/dev/null; echo "status $?"
        ip -o -4 addr show dev lo | grep -c ' {VIP}/32 '
        $rs down {VIP}; echo "down $?"
        $rs status {VIP} >/dev/null; echo "status $?"
    """
    res = chroot(root, "sh", "-c", script, net=True)
    assert res.stderr == ""
    assert res.stdout.splitlines() == [
        "sysctl -w net.ipv4.conf.all.arp_ignore=1", "sysctl -w net.ipv4.conf.all.arp_announce=2",
        "sysctl -w net.ipv4.conf.lo.arp_ignore=1", "sysctl -w net.ipv4.conf.lo.arp_announce=2",
        "ip link set lo up", f"ip addr add {VIP}/32 dev lo", "plan 0",
        "up 0", "status 0", "1", "down 0", "status 7"]
