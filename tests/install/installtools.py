"""Helpers of the install tests: make in the checkout, installed scripts in a bare env,
a throwaway Debian 12 root and commands run in it."""
import contextlib
import os
import shutil
import subprocess
import tempfile

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


def chroot(root, *argv, timeout=120, **kw):
    """argv in the root, in mount and PID namespaces of its own with a /proc (and with
    net=True a network namespace of its own too)."""
    net = ["--net"] if kw.pop("net", False) else []
    env = {"PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LVSKIT_NO_SYSLOG": "1",
           "LC_ALL": "C.UTF-8"}
    if "stdout" not in kw:
        kw.update(capture_output=True)
    return subprocess.run(["unshare", "--mount", "--pid", "--fork", *net, f"--mount-proc={root}/proc",
                           "chroot", root, *argv], text="stdin" not in kw, env=env, timeout=timeout, **kw)


# What a `make install` into the shared root leaves after `make uninstall` (the admin's files)
LEFTOVERS = ("etc/lvskit", "var/lib/lvskit", "var/cache/lvskit", "run/lvskit", "etc/cron.d/lvskit")


@contextlib.contextmanager
def overlay_root(prefix, purge):
    """A writable overlay on the debootstrapped Debian 12 root (build/bookworm, made by
    `make bookworm-root`; only read), thrown away afterwards: the director's install a
    run may have left is removed and the packages `purge` names are purged first."""
    make("bookworm-root", timeout=900)
    work = tempfile.mkdtemp(prefix=prefix)
    upper, scratch, merged = (os.path.join(work, d) for d in ("upper", "work", "root"))
    for d in (upper, scratch, merged):
        os.mkdir(d)
    base = os.path.join(ROOT, "build", "bookworm")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base},upperdir={upper},workdir={scratch}", merged], check=True)
    try:
        make("uninstall", f"DESTDIR={merged}")
        for leftover in LEFTOVERS:
            path = os.path.join(merged, leftover)
            shutil.rmtree(path) if os.path.isdir(path) else (os.path.exists(path) and os.remove(path))
        res = chroot(merged, "dpkg", "--purge", *purge)
        assert res.returncode == 0, res.stderr
        yield merged
    finally:
        subprocess.run(["umount", merged], check=True)
        shutil.rmtree(work)
