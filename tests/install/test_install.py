"""`make install DESTDIR=...`: the installed scripts run from their own library,
the admin's files survive, and the shipped cron/systemd/inetd files are valid."""
import os
import re
import shutil
import stat
import subprocess

import pytest

from installtools import (DATADIR, DOC_PAGES, LIBDIR, MANDIR, PREFIX, ROOT, SBINDIR, UNITDIR,
                          groff_warnings, make, man_w, run_installed, scripts)

CONFIG = "/etc/lvskit/lvskit.ini"
CRON_JOBS = {"ipvs-sync", "check-real", "reweight", "lvs-status"}


def test_every_script_is_a_link_into_the_private_libdir(destdir):
    d, _ = destdir
    assert scripts(), "bin/ is empty"
    for name in scripts():
        link = d + SBINDIR + "/" + name
        assert os.path.islink(link), link
        # Relative, so the tree works wherever DESTDIR puts it.
        assert os.readlink(link) == "../lib/lvskit/bin/" + name
        assert os.path.realpath(link) == d + LIBDIR + "/bin/" + name
        assert os.stat(link).st_mode & 0o111
    for module in os.listdir(os.path.join(ROOT, "lib", "lvskit")):
        if module.endswith(".py"):
            assert os.path.isfile(d + LIBDIR + "/lib/lvskit/" + module), module


def test_pinned_pyroute2_is_installed_and_nothing_else_from_vendor(destdir):
    d, _ = destdir
    vendor = d + LIBDIR + "/lib/vendor"
    assert sorted(os.listdir(vendor)) == ["pyroute2", "pyroute2-0.9.7.dist-info"]
    res = run_installed(["/usr/bin/python3", "-c",
                         "import sys; sys.path.insert(0, sys.argv[1]); import lvskit, pyroute2; "
                         "print(lvskit.__file__); print(pyroute2.__file__)", d + LIBDIR + "/lib"])
    assert res.returncode == 0, res.stderr
    lvskit_file, pyroute2_file = res.stdout.split()
    assert lvskit_file.startswith(d + LIBDIR + "/lib/lvskit/")
    assert pyroute2_file.startswith(vendor + "/pyroute2/")


@pytest.mark.parametrize("name", scripts())
def test_installed_help(destdir, name):
    d, _ = destdir
    res = run_installed([d + SBINDIR + "/" + name, "--help"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: " + name)
    assert "examples:" in res.stdout and "exit codes:" in res.stdout


def test_man_pages_are_installed_clean_and_found(destdir):
    """A page per script, lvskit.ini(5) and lvskit(7), each clean under groff -ww, each
    found by man(1) under the installed MANDIR, and --version agrees with the footer."""
    d, _ = destdir
    pages = sorted(os.path.relpath(os.path.join(dp, f), d + MANDIR)
                   for dp, _, files in os.walk(d + MANDIR) for f in files)
    assert pages == sorted(DOC_PAGES + [f"man8/{s}.8" for s in scripts()])
    version = run_installed([d + SBINDIR + "/ipvs-sync", "--version"]).stdout.split()[-1]
    for page in pages:
        path = d + MANDIR + "/" + page
        assert groff_warnings(path) == "", page
        assert f'"lvskit {version}"' in open(path).readline(), page
        name, section = os.path.basename(page).rsplit(".", 1)
        assert man_w(d + MANDIR, section, name) == path


def test_installed_ipvs_sync_uses_the_installed_library(destdir):
    d, _ = destdir
    res = run_installed(["/usr/bin/python3", "-v", d + SBINDIR + "/ipvs-sync", "--check-config",
                         "-c", d + CONFIG])
    assert res.returncode == 0, res.stderr[-2000:]
    # "# code object from PATH" or "# PYC matches PATH", one per module loaded.
    paths = {os.path.normpath(p) for p in re.findall(r"(/\S*/lvskit/[a-z_]+\.py)$", res.stderr, re.M)}
    assert paths, "no lvskit module seen in python -v output"
    assert all(p.startswith(d + LIBDIR + "/lib/lvskit/") for p in paths), paths


def test_installed_config_validates_and_a_bad_one_exits_6(destdir, tmp_path):
    d, _ = destdir
    good = run_installed([d + SBINDIR + "/ipvs-sync", "--check-config", "-c", d + CONFIG])
    assert (good.returncode, good.stdout, good.stderr) == (0, "", "")
    bad = tmp_path / "bad.ini"
    text = open(d + CONFIG).read().replace("real.kama = weight=1", "real.kama = weight=70000")
    bad.write_text(text)
    res = run_installed([d + SBINDIR + "/ipvs-sync", "--check-config", "-c", str(bad)])
    assert res.returncode == 6
    assert res.stderr.startswith(f"ipvs-sync: {bad}:") and "[service www] real.kama" in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_directories_and_the_key(destdir):
    d, _ = destdir
    for path in ("/var/lib/lvskit", "/run/lvskit", "/etc/lvskit"):
        assert os.path.isdir(d + path), path
    assert stat.S_IMODE(os.stat(d + "/var/cache/lvskit").st_mode) == 0o700  # the parsed-config cache
    key = d + "/etc/lvskit/hb.key"
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert st.st_uid == 0
    assert re.fullmatch(r"[0-9a-f]{64}\n", open(key).read())
    assert open(d + CONFIG).read() == open(os.path.join(ROOT, "conf", "lvskit.ini")).read()


def test_second_install_keeps_config_cron_and_key(tmp_path):
    d = str(tmp_path)
    make("install", f"DESTDIR={d}")
    key = open(d + "/etc/lvskit/hb.key").read()
    with open(d + CONFIG, "a") as f:
        f.write("# the admin's edit\n")
    cron = d + "/etc/cron.d/lvskit"
    edited_cron = open(cron).read().replace("#*/5 * * * * root", "*/5 * * * * root")
    open(cron, "w").write(edited_cron)
    res = make("install", f"DESTDIR={d}")
    assert open(d + CONFIG).read().endswith("# the admin's edit\n")
    assert open(cron).read() == edited_cron
    assert open(d + "/etc/lvskit/hb.key").read() == key
    assert f"kept {d}/etc/lvskit/lvskit.ini" in res.stdout
    # A fresh copy of the shipped example stays available next to the library.
    assert open(d + DATADIR + "/lvskit.ini").read() == open(os.path.join(ROOT, "conf/lvskit.ini")).read()


def test_uninstall_removes_what_it_installed_and_keeps_the_admins_files(tmp_path):
    d = str(tmp_path)
    make("install", f"DESTDIR={d}")
    make("uninstall", f"DESTDIR={d}")
    left = sorted(os.path.relpath(os.path.join(dp, f), d)
                  for dp, _, files in os.walk(d) for f in files)
    assert left == ["etc/lvskit/hb.key", "etc/lvskit/lvskit.ini"]
    assert os.listdir(d + SBINDIR) == [] and not os.path.exists(d + UNITDIR)
    assert empty_dirs_of_ours(d) == []

    # An edited cron file is the admin's now: kept.
    make("install", f"DESTDIR={d}")
    with open(d + "/etc/cron.d/lvskit", "a") as f:
        f.write("# mine\n")
    res = make("uninstall", f"DESTDIR={d}")
    assert os.path.exists(d + "/etc/cron.d/lvskit") and "(edited)" in res.stdout
    assert not os.path.exists(d + LIBDIR)


def empty_dirs_of_ours(d):
    """Empty directories left under d that lvskit made (the system's SBINDIR, cron.d... aside)."""
    return sorted(os.path.relpath(dp, d) for dp, dirs, files in os.walk(d)
                  if not dirs and not files and ("lvskit" in dp or "systemd" in dp))


# --- cron.d -----------------------------------------------------------------

_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_NAMES = [None, None, None,
          "jan feb mar apr may jun jul aug sep oct nov dec".split(),
          "sun mon tue wed thu fri sat".split()]


def _cron_field_ok(text, lo, hi, names):
    def value(v):
        if names and v.lower() in names:
            return True
        return v.isdigit() and lo <= int(v) <= hi

    for item in text.split(","):
        rng, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if rng == "*":
            continue
        a, dash, b = rng.partition("-")
        if not value(a) or (dash and not value(b)):
            return False
        if step and not dash:
            return False
    return True


def parse_cron_job(line):
    """(user, argv) of a system crontab line; AssertionError when malformed."""
    fields = line.split()
    if fields[0].startswith("@"):
        assert fields[0] in ("@reboot", "@hourly", "@daily", "@weekly", "@monthly", "@yearly",
                             "@annually", "@midnight"), line
        rest = fields[1:]
    else:
        assert len(fields) >= 7, f"want 5 time fields, a user and a command: {line!r}"
        for text, (lo, hi), names in zip(fields[:5], _CRON_RANGES, _NAMES):
            assert _cron_field_ok(text, lo, hi, names), f"bad time field {text!r}: {line!r}"
        rest = fields[5:]
    assert re.fullmatch(r"[a-z_][a-z0-9_-]*", rest[0]), f"bad user: {line!r}"
    assert "%" not in line, f"unescaped % (cron makes it a newline): {line!r}"
    return rest[0], rest[1:]


def test_parse_cron_job_rejects_bad_lines():
    for bad in ("* * * * root /bin/true", "61 * * * * root /bin/true", "* * * 13 * root x",
                "*/0 * * * * root x", "* * * * * Root x", "1-/2 * * * * root x"):
        with pytest.raises(AssertionError):
            parse_cron_job(bad)
    assert parse_cron_job("*/5 1-3,7 * jan-mar mon root /x -c y") == ("root", ["/x", "-c", "y"])


def test_cron_file(destdir):
    d, _ = destdir
    assert os.listdir(d + "/etc/cron.d") == ["lvskit"]          # no dot: run-parts would skip it
    jobs = {}
    for n, line in enumerate(open(d + "/etc/cron.d/lvskit"), 1):
        line = line.strip()
        if not line or line.startswith("# ") or line == "#":
            continue
        if re.fullmatch(r"[A-Z_]+=\S+", line):
            continue
        # Shipped jobs are disabled with a "#" glued to the first time field.
        assert line.startswith("#"), f"line {n} is an active job: shipped jobs must be disabled"
        user, argv = parse_cron_job(line[1:])
        assert user == "root"
        prog = argv[0]
        assert prog.startswith(SBINDIR + "/"), prog
        name = os.path.basename(prog)
        assert argv[1:3] == ["-c", CONFIG]
        if name in scripts():
            assert os.path.islink(d + prog)
        jobs[name] = argv
    assert set(jobs) == CRON_JOBS


# --- inetd.conf ---------------------------------------------------------------

def test_inetd_lines(destdir):
    d, _ = destdir
    entries = {}
    for line in open(d + DATADIR + "/inetd.conf"):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        service, socktype, proto, wait, user, program, argv0 = f[:7]
        assert (socktype, proto) in (("stream", "tcp"), ("dgram", "udp")), line
        assert wait in ("wait", "nowait") and re.fullmatch(r"[a-z]+", user)
        assert service.isdigit() and 0 < int(service) < 65536
        assert program == SBINDIR + "/" + argv0
        entries[argv0] = f
    assert entries["lvs-agent"][1:5] == ["stream", "tcp", "nowait", "nobody"]
    # A datagram service must be "wait": the program owns the socket.
    assert entries["hb-listen"][1:5] == ["dgram", "udp", "wait", "root"]
    assert "--inetd" in entries["hb-listen"][7:]


# --- systemd units ------------------------------------------------------------

_SECTIONS = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires"},
    "Service": {"Type", "ExecStart", "ExecStop", "ExecStopPost", "Restart", "RestartSec", "RemainAfterExit",
                "SuccessExitStatus", "StandardInput", "StandardOutput", "StandardError", "DynamicUser",
                "NotifyAccess", "WatchdogSec"},
    "Timer": {"OnBootSec", "OnUnitActiveSec", "OnCalendar", "AccuracySec", "Persistent"},
    "Socket": {"ListenStream", "Accept"},
    "Install": {"WantedBy"},
}
_TIMESPAN = r"\d+(ms|s|min|h|d)?"
_VALUES = {
    "Type": r"simple|oneshot|exec|notify", "NotifyAccess": r"main|exec|all|none", "Restart": r"always|on-failure|no",
    "RemainAfterExit": r"yes|no", "SuccessExitStatus": r"\d+( \d+)*",
    "RestartSec": _TIMESPAN, "WatchdogSec": _TIMESPAN, "OnBootSec": _TIMESPAN, "OnUnitActiveSec": _TIMESPAN,
    "AccuracySec": _TIMESPAN, "WantedBy": r"[a-z.-]+\.target",
    "Documentation": r"(file|man|https?):\S+( (file|man|https?):\S+)*", "After": r"[\w.@-]+( [\w.@-]+)*",
    "StandardInput": r"socket", "StandardOutput": r"socket|journal", "StandardError": r"journal",
    "DynamicUser": r"yes|no", "ListenStream": r"\d+", "Accept": r"yes|no",
    "Before": r"[\w.@-]+( [\w.@-]+)*", "Wants": r"[\w.@-]+( [\w.@-]+)*",
}


def parse_unit(path):
    """{section: {key: value}}; AssertionError on anything systemd would warn about."""
    sections, current = {}, None
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        where = f"{os.path.basename(path)}:{n}"
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            assert m.group(1) in _SECTIONS, f"{where}: unknown section {line}"
            assert m.group(1) not in sections, f"{where}: section twice"
            current = sections.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r"([A-Za-z]+)=(.*)", line)
        assert m and current is not None, f"{where}: not Key=Value in a section: {line!r}"
        key, value = m.groups()
        section = [s for s, v in sections.items() if v is current][0]
        assert key in _SECTIONS[section], f"{where}: unknown key {key} in [{section}]"
        assert key not in current, f"{where}: {key} twice"
        if key in _VALUES:
            assert re.fullmatch(_VALUES[key], value), f"{where}: bad value {key}={value}"
        current[key] = value
    return sections


def test_parse_unit_rejects_mistakes(tmp_path):
    for text in ("[Service]\nExecStart=/bin/true\nBogus=1\n", "[Unitt]\n", "ExecStart=/x\n",
                 "[Service]\nRestart=sometimes\n", "[Timer]\nOnBootSec=5 minutes\n"):
        p = tmp_path / "x.service"
        p.write_text(text)
        with pytest.raises(AssertionError):
            parse_unit(str(p))


def _units(d):
    return sorted(os.listdir(d + UNITDIR))


def test_units_are_strictly_valid(destdir):
    d, _ = destdir
    units = _units(d)
    assert {"hb-send.service", "hb-listen.service", "lvs-agent.socket", "lvs-agent@.service"} <= set(units)
    assert {f"{j}.timer" for j in CRON_JOBS} <= set(units)
    for unit in units:
        u = parse_unit(d + UNITDIR + "/" + unit)
        assert u["Unit"]["Description"]
        program = unit.rsplit(".", 1)[0].rstrip("@")
        assert u["Unit"]["Documentation"].split() == [f"man:{program}(8)", "man:lvskit.ini(5)"]
        if unit.endswith(".timer"):
            assert set(u) == {"Unit", "Timer", "Install"}
            assert u["Install"]["WantedBy"] == "timers.target"
            svc = unit[:-len(".timer")] + ".service"
            assert svc in units, f"{unit} has no {svc}"
            s = parse_unit(d + UNITDIR + "/" + svc)
            assert s["Service"]["Type"] == "oneshot" and "Install" not in s
            continue
        if unit.endswith(".socket"):
            # inetd-style: Accept=yes starts NAME@.service per connection, the connection on stdin
            assert set(u) == {"Unit", "Socket", "Install"}
            assert u["Install"]["WantedBy"] == "sockets.target" and u["Socket"]["Accept"] == "yes"
            svc = unit[:-len(".socket")] + "@.service"
            assert svc in units, f"{unit} has no {svc}"
            s = parse_unit(d + UNITDIR + "/" + svc)
            assert (s["Service"]["StandardInput"], s["Service"]["StandardOutput"]) == ("socket", "socket")
            assert "Install" not in s
            continue
        argv = u["Service"]["ExecStart"].split()
        assert argv[0] == SBINDIR + "/" + unit[:-len(".service")].rstrip("@")
        assert argv[1:3] == ["-c", CONFIG]
        if unit in ("hb-send.service", "hb-listen.service", "lvs-announce.service"):
            assert u["Service"]["Restart"] == "always"
            # they say READY=1 and ping the watchdog themselves (lvskit.sdnotify); only they may
            assert (u["Service"]["Type"], u["Service"]["NotifyAccess"]) == ("notify", "main")
            assert u["Service"]["WatchdogSec"]
            assert u["Install"]["WantedBy"] == "multi-user.target"
        if unit == "lvs-announce.service":
            # withdrawn however the gate ended, a kill included
            assert u["Service"]["ExecStopPost"].split() == [SBINDIR + "/lvs-announce", "-c", CONFIG,
                                                             "--withdraw"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(destdir, tmp_path):
    """systemd's own parser.  ExecStart must exist, so the units are pointed at the
    DESTDIR copy; units whose program is not in bin/ yet are left to the strict check."""
    d, _ = destdir
    checked = []
    for unit in _units(d):
        prog = unit.rsplit(".", 1)[0].rstrip("@")
        if prog not in scripts():
            continue
        text = open(d + UNITDIR + "/" + unit).read().replace(SBINDIR + "/", d + SBINDIR + "/")
        (tmp_path / unit).write_text(text)
        checked.append(str(tmp_path / unit))
    assert checked
    # verify looks up each Documentation=man: page with man(1): the installed ones, alone
    res = subprocess.run(["systemd-analyze", "verify", *checked], capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path), env=dict(os.environ, MANPATH=d + MANDIR))
    # verify only warns (exit 0) about unknown keys or sections: any output is a defect.
    assert (res.returncode, res.stdout + res.stderr) == (0, ""), res.stderr


def test_install_honours_prefix_and_sysconfdir(tmp_path):
    d = str(tmp_path)
    make("install", f"DESTDIR={d}", "PREFIX=/opt/lvs", "SYSCONFDIR=/etc/alt")
    assert os.path.islink(d + "/opt/lvs/sbin/ipvs-sync")
    unit = open(d + "/opt/lvs/lib/systemd/system/hb-send.service").read()
    assert "ExecStart=/opt/lvs/sbin/hb-send -c /etc/alt/lvskit/lvskit.ini" in unit
    assert "@" not in open(d + "/etc/alt/cron.d/lvskit").read()
    res = run_installed([d + "/opt/lvs/sbin/ipvs-sync", "--check-config",
                         "-c", d + "/etc/alt/lvskit/lvskit.ini"])
    assert res.returncode == 0, res.stderr


# --- monitoring examples --------------------------------------------------------

def test_monitoring_examples_name_the_installed_checks(tmp_path):
    """sudoers.lvskit parses (visudo) and allows exactly the three checks as installed;
    nrpe.lvskit.cfg runs the same command lines through sudo -n."""
    d = str(tmp_path)
    make("install", f"DESTDIR={d}")
    sudoers, nrpe = (open(d + DATADIR + f).read() for f in ("/sudoers.lvskit", "/nrpe.lvskit.cfg"))
    checks = [f"{SBINDIR}/{name} --check -c /etc/lvskit/lvskit.ini" for name in ("check-real", "ipvs-sync", "lvs-status")]
    assert "@" not in sudoers + nrpe            # every placeholder filled in
    allowed = re.search(r"Cmnd_Alias LVSKIT_CHECKS = (.*?)\n\n", sudoers, re.S).group(1)
    assert [c.strip() for c in allowed.replace("\\\n", "").split(",")] == checks
    assert re.findall(r"^command\[\w+\]=/usr/bin/sudo -n (.*)$", nrpe, re.M) == checks
    for script in checks:
        assert os.access(d + script.split()[0], os.X_OK)
    if shutil.which("visudo"):
        r = subprocess.run(["visudo", "-cf", d + DATADIR + "/sudoers.lvskit"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
