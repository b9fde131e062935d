"""Helpers of the install tests: make in the checkout, installed scripts in a bare env."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "/usr/local"
SBINDIR = PREFIX + "/sbin"
LIBDIR = PREFIX + "/lib/lvskit"
DATADIR = PREFIX + "/share/lvskit"
UNITDIR = PREFIX + "/lib/systemd/system"
MANDIR = PREFIX + "/share/man"
DOC_PAGES = ["man5/lvskit.ini.5", "man7/lvskit.7"]


def make(*args, timeout=600):
    """Run make in the checkout; the CompletedProcess (text), asserting success."""
    res = subprocess.run(["make", "--no-print-directory", "-C", ROOT, *args],
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"make {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def run_installed(argv, cwd="/", **kw):
    """Run an installed script with a bare environment from a directory far from
    the checkout, so nothing but its own real path can lead it to a library."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LVSKIT_NO_SYSLOG": "1", "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def groff_warnings(path):
    """groff's complaints about an installed man page (-ww: every warning), '' when clean."""
    res = subprocess.run(["groff", "-ww", "-z", "-man", path], capture_output=True, text=True, timeout=60)
    return f"exit {res.returncode}: {res.stderr}" if res.returncode or res.stderr else ""


def man_w(mandir, section, name):
    """Where man(1) finds a page with MANPATH=mandir alone ('' when it does not)."""
    res = subprocess.run(["man", "-w", section, name], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "MANPATH": mandir, "LC_ALL": "C.UTF-8"})
    return res.stdout.strip() if res.returncode == 0 else ""


def scripts():
    return sorted(os.listdir(os.path.join(ROOT, "bin")))
