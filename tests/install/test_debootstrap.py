"""Installed into a fresh Debian 12 root (debootstrap minbase: Debian's python3,
python3-requests, python3-sh, iproute2 and nothing else), lvskit runs there.

The root is built once per machine (`make bookworm-root`, build/bookworm) and
reused; each run removes the previous lvskit install from it first.  The
--dry-run step needs IPVS, which the host kernel lacks, so it runs the chroot
inside the QEMU guest (lab/guest-run), which sees the host's files."""
import os
import shutil
import subprocess

import pytest

from installtools import LIBDIR, ROOT, SBINDIR, make

CHROOT = os.path.join(ROOT, "build", "bookworm")
CONFIG = "/etc/lvskit/lvskit.ini"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")


@pytest.fixture(scope="module")
def root():
    make("bookworm-root", timeout=900)
    # Start from Debian's root, not from the last run's lvskit.
    make("uninstall", f"DESTDIR={CHROOT}")
    for leftover in ("etc/lvskit", "var/lib/lvskit", "run/lvskit", "etc/cron.d/lvskit"):
        path = os.path.join(CHROOT, leftover)
        shutil.rmtree(path) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))
    make("install", f"DESTDIR={CHROOT}")
    return CHROOT


def chroot(*argv, timeout=120):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LVSKIT_NO_SYSLOG": "1", "LC_ALL": "C.UTF-8"}
    return subprocess.run(["chroot", CHROOT, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_root_is_debians_and_has_no_pyroute2_of_its_own(root):
    res = chroot("/usr/bin/python3", "-c", "import sys, sh, requests; print(sys.version_info[:2], "
                 "sh.__version__.split('.')[0], requests.__version__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("(3, 11) 1 ")         # Debian 12: Python 3.11, sh 1.14
    assert chroot("/usr/bin/python3", "-c", "import pyroute2").returncode != 0
    assert chroot("dpkg-query", "-W", "python3-requests", "python3-sh").returncode == 0


def test_check_config_in_the_chroot(root):
    cache = os.path.join(root, "var/cache/lvskit")
    for f in os.listdir(cache):
        os.remove(os.path.join(cache, f))
    for _ in range(2):      # a parse that fills the cache, then a run that reads it
        res = chroot(SBINDIR + "/ipvs-sync", "--check-config")
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert os.listdir(cache) == ["config_etc_lvskit_lvskit.ini.pickle"]
    with open(os.path.join(root, "etc/lvskit/bad.ini"), "w") as f:
        f.write("[service www]\naddress = 192.168.45.26\nport = 80\nscheduler = fastest\n")
    res = chroot(SBINDIR + "/ipvs-sync", "--check-config", "-c", "/etc/lvskit/bad.ini")
    assert res.returncode == 6
    assert res.stderr.startswith("ipvs-sync: /etc/lvskit/bad.ini:4: [service www] scheduler")
    assert len(os.listdir(cache)) == 1      # a bad config is never cached


def test_the_vendored_pyroute2_imports_with_debians_python(root):
    res = chroot("/usr/bin/python3", "-c", f"import sys; sys.path.insert(0, '{LIBDIR}/lib'); "
                 "import lvskit, pyroute2.iproute; print(pyroute2.__file__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{LIBDIR}/lib/vendor/pyroute2/__init__.py"


def test_dry_run_in_the_chroot_inside_the_ipvs_guest(root):
    res = subprocess.run([os.path.join(ROOT, "lab", "guest-run"), "--", "chroot", root,
                          SBINDIR + "/ipvs-sync", "--dry-run", "-c", CONFIG],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    # The seed's table, as a fresh kernel needs it, in ipvsadm syntax.
    for want in ("ipvsadm -A -t 192.168.45.26:80 -s wlc",
                 "ipvsadm -a -t 192.168.45.26:80 -r 192.168.45.13:80 -g -w 2",
                 "ipvsadm -a -t 192.168.45.26:80 -r 192.168.45.43:80 -g -w 1",
                 "ipvsadm -a -t 192.168.45.26:80 -r 192.168.45.31:80 -g -w 3",
                 "ipvsadm -A -t 192.168.45.26:22 -s rr",
                 "ipvsadm -A -u 192.168.45.26:177 -s wlc -p 3600",
                 "ipvsadm -a -u 192.168.45.26:177 -r 192.168.45.43:177 -g -w 7"):
        assert want in lines, f"{want!r} not in:\n{res.stdout}"
    assert len([l for l in lines if l.startswith("ipvsadm -A")]) == 3
    assert len([l for l in lines if l.startswith("ipvsadm -a")]) == 9
