"""[announce] mode = bgp: BIRD's include file (bird.py) and ipvs-sync's part in it.

BIRD itself reads the file in tests/netns/test_bird.py; here: its text, when
it is written and birdc run, and what a failing birdc (the real one, with no
BIRD behind its socket) does to ipvs-sync's exit code and its table.
"""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from lvskit import bird, config, log, sync
from lvskit.errors import CHECK_CRITICAL, CHECK_OK
from fakekernel import FakeKernel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CONFIG = """\
[global]
state_dir = {tmp}/state
run_dir = {tmp}/run
[announce]
mode = bgp
include = {tmp}/bird/lvskit-vips.conf
birdc = {birdc}
[service www]
address = 192.168.45.26
port = 80
scheduler = mh
sched_flags = mh-port
real.192.168.45.13 = weight=1
[service ssh]
address = 192.168.45.26
port = 22
scheduler = mh
real.192.168.45.13 = weight=1
[service dns]
address = 10.0.0.53
port = 53
protocol = udp
scheduler = mh
real.10.0.1.53 = weight=1
[service www6]
address = 2001:db8::26
port = 80
scheduler = mh
real.2001:db8::13 = weight=1
"""

TEXT = """\
# Written by lvskit's ipvs-sync from its config's [service] addresses ([announce] mode = bgp).
# Do not edit: its next run writes it again.  Included by bird.conf; announced only while
# a protocol is enabled (birdc enable), which BIRD forgets at a restart or a configure.
protocol static lvskit_vip {
  ipv4;
  disabled yes;
  route 10.0.0.53/32 blackhole;
  route 192.168.45.26/32 blackhole;
}
protocol static lvskit_vip_v6 {
  ipv6;
  disabled yes;
  route 2001:db8::26/128 blackhole;
}
"""


def write_config(tmp_path, birdc="true", text=CONFIG):
    (tmp_path / "bird").mkdir(exist_ok=True)
    path = tmp_path / "lvskit.ini"
    path.write_text(text.format(tmp=tmp_path, birdc=birdc))
    return str(path)


def test_the_include_text_one_route_per_vip_each_family_its_protocol(tmp_path):
    cfg = config.load(write_config(tmp_path))
    assert bird.include_text(cfg) == TEXT
    assert bird.protocols(cfg.announce) == [("lvskit_vip", 2), ("lvskit_vip_v6", 10)]


def test_no_vip_of_a_family_still_names_its_protocol(tmp_path):
    text = CONFIG.split("[service www6]")[0].replace("mode = bgp", "mode = bgp\nprotocol = vips")
    cfg = config.load(write_config(tmp_path, text=text))
    assert "protocol static vips_v6 {\n  ipv6;\n  disabled yes;\n}\n" in bird.include_text(cfg)


def test_written_once_configured_once_and_a_dry_run_changes_nothing(tmp_path):
    cfg = config.load(write_config(tmp_path))
    include = tmp_path / "bird" / "lvskit-vips.conf"
    dry = bird.sync(cfg, dry_run=True)
    assert (dry.write, dry.configure, dry.error) == (True, True, None)
    assert dry.commands == (f"cat > {include} <<'EOF'",) + tuple(TEXT.splitlines()) + ("EOF", "true configure")
    assert not include.exists() and not os.path.exists(bird.record_path(cfg))
    got = bird.sync(cfg)
    assert (got.write, got.configure, got.error) == (True, True, None)
    assert include.read_text() == TEXT
    assert stat.S_IMODE(include.stat().st_mode) == 0o644          # BIRD runs as its own user
    assert [p.name for p in include.parent.iterdir()] == ["lvskit-vips.conf"]     # no temp file left
    assert bird.sync(cfg) == bird.Outcome()                        # nothing changed: neither again
    assert bird.sync(cfg, dry_run=True).commands == ()
    os.unlink(bird.record_path(cfg))                               # a lost record: one configure more
    again = bird.sync(cfg)
    assert (again.write, again.configure) == (False, True)


BIRDC = shutil.which("birdc")
needs_birdc = pytest.mark.skipif(not BIRDC, reason="birdc not installed (bird2: make apt-deps)")


@needs_birdc
def test_birdc_failing_is_one_line_and_retried_until_bird_takes_the_file(tmp_path):
    """The real birdc with no BIRD behind its socket: the file is written (BIRD reads it when it
    starts), the failure named, and the next run configures again without writing again."""
    path = write_config(tmp_path, birdc=f"birdc -s {tmp_path}/no-bird.ctl")
    cfg = config.load(path)
    got = bird.sync(cfg)
    assert got.write and got.configure
    assert got.error == (f"birdc -s {tmp_path}/no-bird.ctl configure: BIRD did not take "
                         f"{tmp_path}/bird/lvskit-vips.conf: Unable to connect to server control socket "
                         f"({tmp_path}/no-bird.ctl): No such file or directory")
    assert (tmp_path / "bird" / "lvskit-vips.conf").read_text() == TEXT
    again = bird.sync(cfg, dry_run=True)
    assert (again.write, again.configure, again.commands) == (False, True, (f"birdc -s {tmp_path}/no-bird.ctl configure",))


def test_a_resident_ipvs_sync_says_a_failing_birdc_once_until_it_heals(tmp_path, monkeypatch):
    """ipvs-sync --every calls sync every round in one process: the same failure is one line, not
    one per round; once BIRD took the file, a new failure is said again."""
    errors = []
    monkeypatch.setattr(log, "error", errors.append)
    failing = config.load(write_config(tmp_path, birdc="false"))
    for _ in range(3):
        assert bird.sync(failing).error
    assert errors == [f"false configure: BIRD did not take {tmp_path}/bird/lvskit-vips.conf: exit 1"]
    assert bird.sync(config.load(write_config(tmp_path, birdc="true"))).error is None
    os.unlink(bird.record_path(failing))             # BIRD must take the file again
    assert bird.sync(failing).error
    assert len(errors) == 2 and errors[1] == errors[0]


def test_check_counts_what_bird_has_not_taken_as_pending(tmp_path, capsys):
    """ipvs-sync --check in bgp mode: an include file that differs from the config, or one BIRD
    has not taken, is a drift (CRITICAL) like the table's."""
    cfg = config.load(write_config(tmp_path))
    k = FakeKernel()
    sync.reconcile(cfg, k)
    assert bird.sync(cfg).error is None
    assert sync.check(cfg, k) == CHECK_OK
    capsys.readouterr()
    include = tmp_path / "bird" / "lvskit-vips.conf"
    include.write_text(TEXT.replace("disabled yes", "disabled no"))
    assert sync.check(cfg, k) == CHECK_CRITICAL
    assert capsys.readouterr().out.startswith(
        f"IPVS_SYNC CRITICAL - 1 changes pending, first: {include}: BIRD's include file differs from the config")
    include.write_text(TEXT)
    os.unlink(bird.record_path(cfg))
    assert sync.check(cfg, k) == CHECK_CRITICAL
    assert f"first: true configure: BIRD has not taken {include}" in capsys.readouterr().out


def test_an_include_directory_that_is_missing_is_named(tmp_path):
    cfg = config.load(write_config(tmp_path))
    shutil.rmtree(tmp_path / "bird")
    got = bird.sync(cfg)
    assert got.error.startswith(f"{tmp_path}/bird/lvskit-vips.conf: cannot write BIRD's include file: ")
    assert not got.configure


def ipvs_sync(*args):
    """bin/ipvs-sync on the unit tests' fake kernel (fakekernel.py): its table is the process's."""
    return subprocess.run([sys.executable, "-S", os.path.join(HERE, "fakekernel.py"),
                           os.path.join(ROOT, "bin", "ipvs-sync"), *args],
                          capture_output=True, text=True, env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})


def test_ipvs_sync_dry_run_prints_table_then_file_then_birdc(tmp_path):
    path = write_config(tmp_path)
    r = ipvs_sync("-c", path, "-n")
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    first = lines.index(f"cat > {tmp_path}/bird/lvskit-vips.conf <<'EOF'")
    assert all(line.startswith("ipvsadm ") for line in lines[:first])     # the table's plan first
    assert len([line for line in lines[:first] if line.startswith("ipvsadm -A")]) == 4
    assert lines[first + 1:] == TEXT.splitlines() + ["EOF", "true configure"]
    assert not (tmp_path / "bird" / "lvskit-vips.conf").exists()


@needs_birdc
def test_ipvs_sync_makes_the_table_then_fails_on_birdc_exit_1(tmp_path):
    path = write_config(tmp_path, birdc=f"birdc -s {tmp_path}/no-bird.ctl")
    r = ipvs_sync("-c", path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"ipvs-sync: birdc -s {tmp_path}/no-bird.ctl configure: BIRD did not take "
                                     f"{tmp_path}/bird/lvskit-vips.conf: Unable to connect to server control "
                                     f"socket ({tmp_path}/no-bird.ctl): No such file or directory"]
    # the table came first: ipvs-sync recorded the four services it made
    with open(tmp_path / "state" / "ipvs-sync.json") as f:
        assert len(json.load(f)["services"]) == 4


# --- BGP sessions, BFD, exported VIPs (lvs-status): birdc's answers as BIRD 2.0.12 gave them
# (tests/unit/data/bird/capture: a director BIRD, BGP and BFD to a router BIRD)

DATA = os.path.join(HERE, "data", "bird")


def captured(moment, command):
    with open(os.path.join(DATA, moment, command.replace(" ", "_") + ".out")) as f:
        return f.read()


def sessions(moment):
    return bird.sessions_of(bird.parse_protocols(captured(moment, "show protocols all")))


def test_protocols_all_gives_every_protocol_and_its_bgp_details():
    ps = bird.parse_protocols(captured("established", "show protocols all"))
    assert [(p.name, p.proto, p.state) for p in ps] == [
        ("device1", "Device", "up"), ("lvskit_vip", "Static", "up"), ("lvskit_vip_v6", "Static", "up"),
        ("bfd1", "BFD", "up"), ("router1", "BGP", "up")]
    r1 = ps[-1]
    assert (r1.info, r1.details["BGP state"], r1.details["Neighbor address"], r1.details["Neighbor AS"]) == \
        ("Established", "Established", "10.255.0.1", "65000")
    assert "State" not in r1.details          # a channel's lines are the channel's, not the protocol's
    # the same table as the gate's `show protocols` reads it
    assert {p.name: p.state for p in ps} == {"device1": "up", "lvskit_vip": "up", "lvskit_vip_v6": "up",
                                             "bfd1": "up", "router1": "up"}


def test_bgp_sessions_as_captured():
    s, = sessions("established")
    assert (s.name, s.neighbor, s.state, s.bgp_state, s.established, s.error) == \
        ("router1", "10.255.0.1", "up", "Established", True, "")
    s, = sessions("router-stopped")             # the router's BIRD stopped
    assert (s.state, s.bgp_state, s.established, s.error) == \
        ("start", "Active", False, "Received: Administrative shutdown")
    assert [(s.name, s.bgp_state) for s in sessions("two-routers")] == [("router1", "Established"),
                                                                        ("router2", "Idle")]
    assert sessions("nobfd") == []


def test_bfd_sessions_as_captured():
    assert bird.parse_bfd(captured("established", "show bfd sessions")) == {"10.255.0.1": "Up"}
    assert bird.parse_bfd(captured("router-stopped", "show bfd sessions")) == {"10.255.0.1": "Down"}
    assert bird.parse_bfd(captured("nobfd-peer", "show bfd sessions")) == {"10.255.0.1": "Down"}
    assert bird.parse_bfd(captured("nobfd", "show bfd sessions")) == {}     # no BFD protocol


def test_exported_routes_as_captured():
    assert bird.parse_exported(captured("established", "show route export router1")) == \
        ["10.0.0.26/32", "2001:db8::26/128"]
    assert bird.parse_exported(captured("withdrawn", "show route export router1")) == []
    assert bird.parse_exported(captured("two-routers", "show route export router2")) == []   # No valid tables


def test_a_disabled_session_is_down_and_a_dynamic_listener_is_no_session():
    s, = sessions("listener")
    assert (s.name, s.state, s.bgp_state, s.established) == ("r1", "down", "Down", False)


def test_a_since_in_iso_long_time_format_is_one_field():
    text = ("BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n"
            "router1    BGP        ---        up     2026-12-05 06:20:11  Established\n")
    p, = bird.parse_protocols(text)
    assert (p.since, p.info) == ("2026-12-05 06:20:11", "Established")


@pytest.mark.parametrize("parse, text", [
    (bird.parse_protocols, "BIRD 2.0.12 ready.\nsyntax error, unexpected END\n"),
    (bird.parse_protocols, ""),
    (bird.parse_protocols, "Name Proto Table State Since Info\nx y\n"),
    (bird.parse_bfd, "BIRD 2.0.12 ready.\nsyntax error, unexpected CF_SYM_UNDEFINED, expecting END\n"),
    (bird.parse_exported, "BIRD 2.0.12 ready.\nsyntax error, unexpected CF_SYM_UNDEFINED\n"),
])
def test_garbage_is_a_value_error_naming_the_line(parse, text):
    with pytest.raises(ValueError) as e:
        parse(text)
    assert len(str(e.value).splitlines()) == 1


def fake(tmp_path, moment):
    where = tmp_path / "birdc"
    where.mkdir(exist_ok=True)
    (where / "protocols.json").write_text("{}")
    for f in os.listdir(os.path.join(DATA, moment)):
        shutil.copy(os.path.join(DATA, moment, f), where)
    path = write_config(tmp_path, birdc=f"{sys.executable} {HERE}/fakebirdc.py {where}")
    return config.load(path), where


def calls(where):
    return (where / "calls.log").read_text().splitlines()


def test_view_asks_bfd_and_exports_of_established_sessions_only(tmp_path):
    cfg, where = fake(tmp_path, "two-routers")
    v = bird.view(cfg.announce, ["10.0.0.26/32", "2001:0db8:0::26/128", "192.0.2.1/32"])
    assert v.error is None and v.protocols["lvskit_vip"] == "up"
    assert [(s.name, s.bfd, s.exported) for s in v.sessions] == [
        ("router1", "Up", ("10.0.0.26/32", "2001:db8::26/128")),   # VIPs compared in BIRD's spelling
        ("router2", None, ())]                                      # Idle: not asked, nothing sent
    assert calls(where) == ["show protocols all", "show bfd sessions", "show route export router1"]


def test_view_without_bgp_asks_once(tmp_path):
    cfg, where = fake(tmp_path, "nobfd")
    assert bird.view(cfg.announce, ["10.0.0.26/32"]) == bird.View({"device1": "up"}, ())
    assert calls(where) == ["show protocols all"]


def test_view_of_a_bird_that_is_down_hung_or_talks_garbage_is_one_line(tmp_path):
    cfg, where = fake(tmp_path, "established")
    (where / "refuse").write_text("")
    v = bird.view(cfg.announce, [])
    assert (v.protocols, v.sessions) == (None, ())
    assert v.error.endswith("show protocols all: Unable to connect to server control socket "
                            "(/run/bird/bird.ctl): No such file or directory"), v.error
    os.unlink(where / "refuse")
    (where / "hang").write_text("")
    v = bird.view(cfg.announce, [], timeout=0.5)
    assert v.protocols is None and v.error.endswith("show protocols all: timed out")
    os.unlink(where / "hang")
    (where / "show_bfd_sessions.out").write_text("BIRD 2.0.12 ready.\nwhat is this\n")
    (where / "show_route_export_router1.out").write_text("BIRD 2.0.12 ready.\n")
    v = bird.view(cfg.announce, ["10.0.0.26/32"])
    assert v.protocols is not None and [(s.bfd, s.exported) for s in v.sessions] == [(None, ())]
    assert v.error.endswith("show bfd sessions: not a BFD session row: 'what is this'"), v.error
    (where / "show_protocols_all.out").write_text("BIRD 2.0.12 ready.\n<html>\n")
    v = bird.view(cfg.announce, [])
    assert v.protocols is None and v.error.endswith("show protocols all: not BIRD's protocol table: '<html>'")
