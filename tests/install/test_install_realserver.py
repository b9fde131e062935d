"""`make install-realserver DESTDIR=...`: lvs-agent and lvs-realserver with just the
library modules they import, their units, nothing from pip; `make uninstall` takes
it all back.  tests/install/test_debootstrap.py runs it in a Debian 12 root."""
import modulefinder
import os
import socket
import subprocess

import pytest

from installtools import (DATADIR, DOC_PAGES, LIBDIR, MANDIR, ROOT, SBINDIR, UNITDIR, groff_warnings, make,
                          run_installed)
from test_install import empty_dirs_of_ours

SCRIPTS = ["lvs-agent", "lvs-realserver"]
UNITS = ["lvs-agent.socket", "lvs-agent@.service", "lvs-realserver.service"]


@pytest.fixture(scope="module")
def rs_destdir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rs"))
    make("install-realserver", f"DESTDIR={d}")
    return d


def imported_lvskit_modules(script, lib):
    """Every lvskit module the script can import, lazy imports included (modulefinder reads
    each import statement, run or not), as paths under lib."""
    finder = modulefinder.ModuleFinder(path=[lib], excludes=["pyroute2"])
    finder.run_script(script)
    return sorted(os.path.relpath(m.__file__, lib) for name, m in finder.modules.items()
                  if name.split(".")[0] == "lvskit")


def test_just_the_two_scripts_their_modules_and_units(rs_destdir):
    d = rs_destdir
    assert sorted(os.listdir(d + SBINDIR)) == SCRIPTS
    for name in SCRIPTS:
        assert os.readlink(d + SBINDIR + "/" + name) == "../lib/lvskit/bin/" + name
    assert sorted(os.listdir(d + LIBDIR)) == ["bin", "lib"]
    assert sorted(os.listdir(d + LIBDIR + "/lib")) == ["lvskit"]           # no vendor/: no pyroute2 of ours
    lib = d + LIBDIR + "/lib"
    installed = sorted(os.path.relpath(os.path.join(dp, f), lib) for dp, _, files in os.walk(lib)
                       for f in files if f.endswith(".py"))
    needed = sorted({m for s in SCRIPTS for m in imported_lvskit_modules(d + LIBDIR + "/bin/" + s, lib)})
    assert installed == needed
    assert sorted(os.listdir(d + UNITDIR)) == sorted(UNITS)
    assert sorted(os.listdir(d + DATADIR)) == ["README.md", "inetd.conf", "lvskit.ini"]
    assert sorted(os.listdir(d + "/etc/lvskit")) == ["lvskit.ini"]          # no heartbeat key here
    assert not os.path.exists(d + "/etc/cron.d")
    socket_unit = open(d + UNITDIR + "/lvs-agent.socket").read()
    assert "ListenStream=7766\n" in socket_unit and "Accept=yes\n" in socket_unit
    assert f"ExecStart={SBINDIR}/lvs-agent -c /etc/lvskit/lvskit.ini\n" in \
        open(d + UNITDIR + "/lvs-agent@.service").read()


def test_the_two_scripts_man_pages(rs_destdir):
    d = rs_destdir
    pages = sorted(os.path.relpath(os.path.join(dp, f), d + MANDIR) for dp, _, files in os.walk(d + MANDIR)
                   for f in files)
    assert pages == sorted(DOC_PAGES + [f"man8/{s}.8" for s in SCRIPTS])
    for page in pages:
        assert groff_warnings(d + MANDIR + "/" + page) == "", page


def test_the_installed_agent_answers_inetd_style(rs_destdir):
    client, server = socket.socketpair()
    with client, server:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LVSKIT_NO_SYSLOG": "1", "LC_ALL": "C.UTF-8"}
        res = subprocess.run([rs_destdir + SBINDIR + "/lvs-agent", "-c", rs_destdir + "/etc/lvskit/lvskit.ini"],
                             stdin=server, stdout=server, stderr=server, env=env, cwd="/", timeout=60)
        server.close()
        client.settimeout(10)
        got = b"".join(iter(lambda: client.recv(4096), b""))
    assert res.returncode == 0
    assert got.startswith(b"up ready ") and got.endswith(b"%\n"), got


def test_installed_help(rs_destdir):
    for name in SCRIPTS:
        res = run_installed([rs_destdir + SBINDIR + "/" + name, "--help"])
        assert res.returncode == 0 and res.stdout.startswith("usage: " + name), res.stderr


def test_uninstall_takes_it_all_back(tmp_path):
    d = str(tmp_path)
    make("install-realserver", f"DESTDIR={d}")
    make("uninstall", f"DESTDIR={d}")
    left = sorted(os.path.relpath(os.path.join(dp, f), d) for dp, _, files in os.walk(d) for f in files)
    assert left == ["etc/lvskit/lvskit.ini"]                                 # the admin's
    assert empty_dirs_of_ours(d) == []


def test_it_stays_off_a_full_install(tmp_path):
    """The full install has both scripts already; the real server's part must not replace
    its library (a director's modules would go)."""
    d = str(tmp_path)
    make("install", f"DESTDIR={d}")
    res = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install-realserver", f"DESTDIR={d}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "update it with make install" in res.stderr
    assert os.path.exists(d + LIBDIR + "/lib/lvskit/sync.py")
