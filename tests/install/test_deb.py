"""`make deb`: the lvskit and lvskit-realserver packages, built with debhelper and
checked by lintian, installed with dpkg into a Debian 12 root and purged again.

The root is a writable overlay on the debootstrapped one (build/bookworm, see
test_debootstrap.py), made per run and thrown away.  In it the `make install`
test_debootstrap.py leaves is removed, and python3-requests, python3-sh and
iproute2 are purged: the root then has Debian's minbase and python3, and what
the packages need besides comes from their declared dependencies alone (`make
deb-deps`: the host's apt resolves them against the overlay's dpkg status and
downloads the rest; the root itself never reaches the network).  Without
systemd as PID 1 the maintainer scripts' systemctl calls are skipped (as in
any chroot); the units' own validity is test_install.py's.

The tests run in order, on one root: install, use, remove, purge; then the
real server's package the same way.
"""
import glob
import os
import re
import shutil
import socket
import stat
import subprocess

import pytest

from installtools import ROOT, chroot, make, man_w, overlay_root, scripts

OUT = os.path.join(ROOT, "build", "deb")
DEPS = os.path.join(ROOT, "build", "deb-deps")
VERSION = re.search(r'^__version__ = "(.*)"', open(os.path.join(ROOT, "lib", "lvskit", "__init__.py")).read(),
                    re.M).group(1)
DEB = f"lvskit_{VERSION}_all.deb"
RS_DEB = f"lvskit-realserver_{VERSION}_all.deb"
RS_SCRIPTS = ["lvs-agent", "lvs-realserver"]
CONFFILES = {"/etc/lvskit/lvskit.ini", "/etc/cron.d/lvskit"}
# Everything of lvskit's that must be gone after a purge (lvs-status's textfile included).
OURS = ["etc/lvskit", "etc/cron.d/lvskit", "usr/lib/lvskit", "usr/share/lvskit", "usr/share/doc/lvskit",
        "var/lib/lvskit", "var/cache/lvskit", "run/lvskit", "var/lib/prometheus/node-exporter/lvskit.prom",
        "usr/sbin/ipvs-sync", "lib/systemd/system/hb-send.service", "usr/share/man/man8/ipvs-sync.8.gz"]
VIP = "192.0.2.26"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dpkg in a chroot, overlay need root")


@pytest.fixture(scope="module")
def built():
    """make deb once: the .debs, and make's output (lintian's at its end)."""
    return make("deb", timeout=900)


@pytest.fixture(scope="module")
def root(built):
    with overlay_root("lvskit-deb-root-", ["python3-requests", "python3-sh", "iproute2"]) as merged:
        assert left_of_ours(merged) == []
        make("deb-deps", f"DEB_ROOT={merged}")
        for path in glob.glob(os.path.join(DEPS, "*", "*.deb")) + [os.path.join(OUT, DEB), os.path.join(OUT, RS_DEB)]:
            dest = os.path.join(merged, "tmp", os.path.relpath(path, ROOT))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(path, dest)
        yield merged


def left_of_ours(root):
    return [p for p in OURS if os.path.lexists(os.path.join(root, p))]


def in_tmp(path):
    """Where the root sees a file of the checkout's build/ copied into its /tmp."""
    return "/tmp/" + os.path.relpath(path, ROOT)


def dpkg(root, *args):
    res = chroot(root, "dpkg", *args, timeout=300)
    return res.returncode, res.stdout + res.stderr


def installed(root, package):
    res = chroot(root, "dpkg-query", "-W", "-f=${Status}", package)
    return res.stdout == "install ok installed"


# --- the build -------------------------------------------------------------------

def test_lintian_finds_nothing_from_warning_up(built):
    changes = os.path.join(OUT, f"lvskit_{VERSION}_amd64.changes")
    res = subprocess.run(["lintian", "--fail-on", "error,warning", changes], capture_output=True, text=True,
                         timeout=600)
    findings = [l for l in res.stdout.splitlines() if re.match(r"[EW]: ", l)]
    assert (res.returncode, findings) == (0, []), res.stdout + res.stderr
    # the overrides used are the ones debian/ explains, none stale
    assert "unused-override" not in res.stdout + res.stderr


def test_version_is_the_toolkits(built):
    changelog = subprocess.run(["dpkg-parsechangelog", "-l", os.path.join(ROOT, "debian", "changelog"),
                                "-S", "Version"], capture_output=True, text=True, check=True).stdout.strip()
    assert changelog == VERSION
    for deb in (DEB, RS_DEB):
        res = subprocess.run(["dpkg-deb", "-f", os.path.join(OUT, deb), "Version"], capture_output=True,
                             text=True, check=True)
        assert res.stdout.strip() == VERSION


def test_the_packages_carry_no_key_and_nothing_under_run(built):
    for deb in (DEB, RS_DEB):
        res = subprocess.run(["dpkg-deb", "-c", os.path.join(OUT, deb)], capture_output=True, text=True,
                             check=True)
        paths = [line.split()[5] for line in res.stdout.splitlines()]
        assert not [p for p in paths if p.startswith("./run/") or "hb.key" in p or "__pycache__" in p], deb


# --- lvskit, the director's package ------------------------------------------------

def test_dependencies_are_declared(root):
    """Alone, the package does not configure in this root: dpkg names what it lacks."""
    code, out = dpkg(root, "-i", in_tmp(os.path.join(OUT, DEB)))
    assert code != 0
    for dep in ("python3-requests", "python3-sh", "kmod"):
        assert f"depends on {dep}" in out, out
    assert dpkg(root, "--purge", "lvskit")[0] == 0


def test_install_with_its_dependencies(root):
    debs = sorted(glob.glob(os.path.join(DEPS, "lvskit", "*.deb")))
    assert {os.path.basename(d).split("_")[0] for d in debs} >= {"python3-requests", "python3-sh", "kmod"}
    code, out = dpkg(root, "-i", *map(in_tmp, debs), in_tmp(os.path.join(OUT, DEB)))
    assert code == 0, out
    assert "lvskit: made /etc/lvskit/hb.key" in out
    assert installed(root, "lvskit")
    # byte-code made by postinst (py3compile) for Debian's python3, before any script ran
    for pyc in ("lvskit/__pycache__/cli", "lvskit/config/__pycache__/__init__", "vendor/pyroute2/__pycache__/__init__"):
        assert os.path.exists(f"{root}/usr/lib/lvskit/lib/{pyc}.cpython-311.pyc"), pyc


def test_the_scripts_run_from_the_package(root):
    for name in scripts():
        res = chroot(root, f"/usr/sbin/{name}", "--version")
        assert (res.returncode, res.stdout.split()[-1:]) == (0, [VERSION]), (name, res.stderr)
    res = chroot(root, "ipvs-sync", "--check-config")          # the shipped example config
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert os.listdir(root + "/var/cache/lvskit") == ["config_etc_lvskit_lvskit.ini.pickle"]
    res = chroot(root, "python3", "-c", "import sys; sys.path.insert(0, '/usr/lib/lvskit/lib'); "
                 "import lvskit, pyroute2; print(pyroute2.__file__)")
    assert res.stdout.strip() == "/usr/lib/lvskit/lib/vendor/pyroute2/__init__.py", res.stderr
    # in a network namespace of its own: the VIP on lo, with the pinned pyroute2, and a
    # lock in /run/lvskit for the purge to remove
    res = chroot(root, "lvs-realserver", "up", VIP, net=True)
    assert (res.returncode, res.stderr) == (0, "")
    assert os.listdir(root + "/run/lvskit") == ["lvs-realserver.lock"]
    os.makedirs(root + "/var/lib/prometheus/node-exporter", exist_ok=True)
    # a /dev/pts of its own: sh gives the programs it runs (here modprobe ip_vs, from kmod) a pty
    res = chroot(root, "sh", "-c", "mount -t devpts devpts /dev/pts && "
                 "lvs-status --textfile /var/lib/prometheus/node-exporter/lvskit.prom")
    assert os.path.exists(root + "/var/lib/prometheus/node-exporter/lvskit.prom"), res.stderr


def test_conffiles_key_units_man_pages(root):
    res = chroot(root, "dpkg-query", "-W", "-f=${Conffiles}", "lvskit")
    assert {line.split()[0] for line in res.stdout.splitlines() if line.strip()} == CONFFILES
    key = root + "/etc/lvskit/hb.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", open(key).read())
    assert stat.S_IMODE(os.stat(root + "/var/cache/lvskit").st_mode) == 0o700
    # cron jobs shipped disabled
    jobs = [l for l in open(root + "/etc/cron.d/lvskit") if re.match(r"#?[*@0-9]", l)]
    assert jobs and all(l.startswith("#") for l in jobs)
    # units there, none enabled: no link to them anywhere under /etc/systemd
    listed = chroot(root, "dpkg", "-L", "lvskit").stdout.splitlines()
    units = sorted(os.path.basename(p) for p in listed if p.startswith("/lib/systemd/system/"))
    assert len(units) == len(os.listdir(os.path.join(ROOT, "conf", "systemd")))
    for unit in ("hb-send.service", "hb-listen.service", "ipvs-sync.timer", "lvs-agent.socket"):
        assert unit in units
    links = [os.path.join(dp, f) for dp, _, files in os.walk(root + "/etc/systemd") for f in files
             if f in units]
    assert links == []
    mandir = root + "/usr/share/man"
    for name in scripts():
        assert man_w(mandir, "8", name) == f"{mandir}/man8/{name}.8.gz"
    assert man_w(mandir, "5", "lvskit.ini") == f"{mandir}/man5/lvskit.ini.5.gz"
    assert man_w(mandir, "7", "lvskit") == f"{mandir}/man7/lvskit.7.gz"


def test_reinstall_keeps_the_admins_config_and_key(root):
    key = open(root + "/etc/lvskit/hb.key").read()
    with open(root + "/etc/lvskit/lvskit.ini", "a") as f:
        f.write("# the admin's edit\n")
    code, out = dpkg(root, "-i", in_tmp(os.path.join(OUT, DEB)))
    assert code == 0, out
    assert "made /etc/lvskit/hb.key" not in out
    assert open(root + "/etc/lvskit/hb.key").read() == key
    assert open(root + "/etc/lvskit/lvskit.ini").read().endswith("# the admin's edit\n")


def test_remove_keeps_config_purge_leaves_nothing(root):
    code, out = dpkg(root, "--remove", "lvskit")
    assert code == 0, out
    assert not os.path.exists(root + "/usr/lib/lvskit")          # py3clean took the byte-code too
    assert os.path.exists(root + "/etc/lvskit/lvskit.ini") and os.path.exists(root + "/etc/lvskit/hb.key")
    code, out = dpkg(root, "--purge", "lvskit")
    assert code == 0, out
    assert left_of_ours(root) == []
    assert chroot(root, "dpkg-query", "-W", "lvskit").returncode != 0


# --- lvskit-realserver -------------------------------------------------------------

def test_realserver_package_installs_runs_and_purges(root):
    debs = sorted(glob.glob(os.path.join(DEPS, "lvskit-realserver", "*.deb")))
    assert {os.path.basename(d).split("_")[0] for d in debs} >= {"python3-pyroute2"}
    code, out = dpkg(root, "-i", *map(in_tmp, debs), in_tmp(os.path.join(OUT, RS_DEB)))
    assert code == 0, out
    assert sorted(f for f in os.listdir(root + "/usr/sbin") if os.path.islink(root + "/usr/sbin/" + f)
                  and "lvskit" in os.readlink(root + "/usr/sbin/" + f)) == RS_SCRIPTS
    res = chroot(root, "dpkg-query", "-W", "-f=${Conffiles}", "lvskit-realserver")
    assert [line.split()[0] for line in res.stdout.splitlines() if line.strip()] == ["/etc/lvskit/lvskit.ini"]
    assert not os.path.exists(root + "/etc/lvskit/hb.key")
    client, server = socket.socketpair()        # lvs-agent inetd-style, as its socket unit runs it
    with client, server:
        res = chroot(root, "lvs-agent", stdin=server, stdout=server, stderr=server)
        server.close()
        client.settimeout(10)
        got = b"".join(iter(lambda: client.recv(4096), b""))
    assert res.returncode == 0 and got.startswith(b"up ready "), got
    # Debian's pyroute2 0.7.2 puts the VIP on lo: the kernel's local table has it then
    local = f"grep -c ' {VIP}$' /proc/net/fib_trie"
    res = chroot(root, "sh", "-c", f"{local}; lvs-realserver up {VIP} && {local}", net=True)
    assert (res.stdout.split()[0], res.returncode, res.stderr) == ("0", 0, ""), res.stdout
    assert int(res.stdout.split()[1]) > 0
    code, out = dpkg(root, "--purge", "lvskit-realserver")
    assert code == 0, out
    assert left_of_ours(root) == []
