"""The checks as Nagios runs them: an unprivileged user, through sudo and the shipped snippet.

conf/sudoers.lvskit, with its placeholders filled in as `make install` does,
is put into /etc/sudoers.d inside a private mount namespace (the host's stays
untouched); then user nobody runs each check with `sudo -n`, as
conf/nrpe.lvskit.cfg does, and a command line the snippet does not allow is
refused.  This host's kernel may have no IPVS: then the kernel part says
UNKNOWN, which is still the check's own status line, not sudo's refusal.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "bin")
PY = "/usr/bin/python3"

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces and runuser need root"),
              pytest.mark.skipif(not shutil.which("sudo") or not shutil.which("visudo"),
                                 reason="no sudo (make apt-deps installs it)")]


def snippet(etc):
    """conf/sudoers.lvskit as `make install` writes it, SBINDIR being the checkout's bin/."""
    text = open(os.path.join(ROOT, "conf", "sudoers.lvskit")).read()
    return (text.replace("@SBINDIR@", BIN).replace("@SYSCONFDIR@", etc)
            .replace("@DATADIR@", "/usr/share/lvskit").replace("nagios ALL", "nobody ALL"))


def as_nobody(sudoers, *argv):
    """argv run by user nobody in a mount namespace whose /etc/sudoers.d holds only sudoers."""
    script = ('mount -t tmpfs -o mode=0755 lvskit-test /etc/sudoers.d && '
              'cp "$0" /etc/sudoers.d/lvskit && chmod 0440 /etc/sudoers.d/lvskit && '
              'exec runuser -u nobody -- "$@"')
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, sudoers, *argv],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def director(tmp_path):
    etc = tmp_path / "etc"
    (etc / "lvskit").mkdir(parents=True)
    cfg = etc / "lvskit" / "lvskit.ini"
    cfg.write_text(f"[global]\nstate_dir = {tmp_path}/state\nrun_dir = {tmp_path}/run\n"
                   "[service web]\naddress = 10.0.0.100\nport = 9\ncheck = tcp\ncheck_timeout = 0.5\n"
                   "real.127.0.0.1 =\n")
    sudoers = tmp_path / "sudoers.lvskit"
    sudoers.write_text(snippet(str(etc)))
    r = subprocess.run(["visudo", "-cf", str(sudoers)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # the state a running check-real leaves (port 9 refuses: the server is down)
    subprocess.run([PY, os.path.join(BIN, "check-real"), "-c", str(cfg), "--no-kernel"], timeout=60,
                   capture_output=True, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    return str(cfg), str(sudoers)


def test_nobody_runs_the_checks_through_sudo_and_nothing_else(director):
    cfg, sudoers = director
    assert as_nobody(sudoers, "id", "-u").stdout.strip() == str(65534)
    for name, plugin in (("check-real", "CHECK_REAL"), ("ipvs-sync", "IPVS_SYNC"), ("lvs-status", "LVS_STATUS")):
        r = as_nobody(sudoers, "sudo", "-n", os.path.join(BIN, name), "--check", "-c", cfg)
        assert r.returncode in (0, 1, 2, 3), (name, r)
        lines = r.stdout.splitlines()
        assert lines and lines[0].startswith(f"{plugin} "), (name, r)
        assert "password" not in r.stderr, (name, r.stderr)
        if name == "check-real":        # the health the root run recorded, read through sudo
            assert lines[0].startswith("CHECK_REAL CRITICAL - 1/1 down; web ALL DOWN"), lines[0]
    # anything but the three fixed command lines is refused, before the program runs
    for argv in (["check-real", "-c", cfg], ["ipvs-sync", "-c", cfg], ["lvs-status", "--check", "-c", "/tmp/x"]):
        r = as_nobody(sudoers, "sudo", "-n", os.path.join(BIN, argv[0]), *argv[1:])
        assert r.returncode == 1 and r.stdout == "" and "password is required" in r.stderr, (argv, r)
