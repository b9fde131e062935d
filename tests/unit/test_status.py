"""lvs-status against a prepared director: config, state files, role and peers view, and
a MemoryTable standing in for the kernel; text, JSON and Prometheus textfile (parsed back)."""
import glob
import json
import os
import re
import shutil
import subprocess
import time
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvskit import config, errors, hbnet, state, status
from lvskit.heartbeat import Beat
from fakekernel import FakeKernel as MemoryTable
from lvskit.model import Dest, Service, ServiceKey, AF_INET, FORWARD

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NOW = 1_700_000_000.0

CONFIG = """
[global]
director = midas
state_dir = {d}/state
run_dir = {d}/run
[server hades]
address = 10.0.0.13
[server kama]
address = 10.0.0.43
[service www]
address = 10.0.0.26
port = 80
scheduler = wlc
check = tcp
real.hades = weight=2
real.kama = weight=1
[service xdmcp]
address = 10.0.0.26
port = 177
protocol = udp
reweight = agent
real.hades = weight=10
real.kama = weight=7
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lo
vips = 10.0.0.26/32
deadtime = 100ms
[node midas]
priority = 200
path.lan = 127.0.0.1
path.cross = 127.0.0.2
[node estepe]
priority = 100
path.lan = 127.0.0.3
path.cross = 127.0.0.4
"""

WWW = ServiceKey(AF_INET, 6, "10.0.0.26", 80)
XDMCP = ServiceKey(AF_INET, 17, "10.0.0.26", 177)
FOREIGN = ServiceKey(AF_INET, 6, "10.9.9.9", 443)


def kernel_table():
    dr = FORWARD["dr"]
    return MemoryTable([
        Service(WWW, "wlc", dests={
            ("10.0.0.13", 80): Dest("10.0.0.13", 80, dr, 2, active=12, inactive=3),
            ("10.0.0.43", 80): Dest("10.0.0.43", 80, dr, 0, active=1, inactive=40),
            ("10.0.0.99", 80): Dest("10.0.0.99", 80, dr, 0, active=2, inactive=0)}),   # draining
        Service(XDMCP, "wlc", dests={
            ("10.0.0.13", 177): Dest("10.0.0.13", 177, dr, 730, active=0, inactive=5),
            ("10.0.0.43", 177): Dest("10.0.0.43", 177, dr, 700, active=0, inactive=2)}),
        Service(FOREIGN, "rr", dests={("10.9.9.1", 443): Dest("10.9.9.1", 443, 0, 1, active=7)}),
    ])


@pytest.fixture
def director(tmp_path):
    path = tmp_path / "lvskit.ini"
    path.write_text(CONFIG.format(d=tmp_path))
    cfg = config.load(str(path))
    state.save(os.path.join(cfg.state_dir, "health.json"), {
        "services": {"www": {
            "10.0.0.13:80": {"up": True, "state": "up", "reason": "connected in 1 ms", "since": NOW - 3600},
            "10.0.0.43:80": {"up": False, "state": "down", "reason": "connection refused",
                             "since": NOT_SO_LONG_AGO}}},
        "checked": {"www": NOW - 2}})
    state.save(os.path.join(cfg.state_dir, "weights.json"), {
        "services": {"xdmcp": {"10.0.0.13:177": {"weight": 730, "smooth": 0.73},
                               "10.0.0.43:177": {"weight": 650, "smooth": 0.65}}}})
    state.save(os.path.join(cfg.run_dir, "takeover.json"), {"role": "active"})
    state.save(os.path.join(cfg.run_dir, "hb-peers.json"), {
        "written": NOW - 0.5,
        "peers": {"estepe": {"state": "standby", "alive": True, "priority": 100, "heard": NOW - 0.52,
                             "paths": {"lan": NOW - 0.52, "cross": NOW - 30}}}})
    return cfg, str(path)


NOT_SO_LONG_AGO = NOW - 60


def gather(cfg, kernel=None):
    return status.gather(cfg, kernel=kernel or kernel_table(), node_name="midas", now=NOW)


def real(st, service, server):
    svc = next(s for s in st["services"] if s["name"] == service)
    return next(r for r in svc["reals"] if r["server"] == server)


def test_gather_joins_config_kernel_health_weights_and_peers(director):
    cfg, _ = director
    st, code = gather(cfg)
    assert code == errors.OK and st["schema"] == 1 and st["ipvs"] == {"available": True, "error": None}
    assert st["node"] == {"name": "midas", "role": "active", "priority": 200}
    assert st["heartbeat"] == {"view_age": 0.5, "deadtime": 0.1}
    assert st["peers"] == [{"name": "estepe", "state": "standby", "alive": True, "priority": 100,
                            "heard_age": 0.52, "paths": {"cross": 30.0, "lan": 0.52}}]
    hades = real(st, "www", "hades")
    assert (hades["configured_weight"], hades["kernel_weight"], hades["wanted_weight"]) == (2, 2, 2)
    assert (hades["active"], hades["inactive"], hades["health"], hades["up"]) == (12, 3, "up", True)
    kama = real(st, "www", "kama")
    # down and quiesced: the kernel weight 0 is what ipvs-sync wants
    assert (kama["health"], kama["reason"], kama["kernel_weight"], kama["wanted_weight"]) == \
        ("down", "connection refused", 0, 0)
    assert kama["since_age"] == 60.0
    leaving = real(st, "www", None)
    assert (leaving["entry"], leaving["configured"], leaving["active"]) == ("10.0.0.99:80", False, 2)
    # reweight's weight is shown next to the kernel's; this one has not reached the kernel yet
    x = real(st, "xdmcp", "kama")
    assert (x["configured_weight"], x["load_weight"], x["wanted_weight"], x["kernel_weight"]) == \
        (7, 650, 650, 700)
    assert x["health"] is None          # xdmcp has no check
    www = st["services"][0]
    assert (www["key"], www["in_kernel"], www["checked_age"]) == ("tcp 10.0.0.26:80", True, 2.0)
    assert st["foreign"] == [{"key": "tcp 10.9.9.9:443", "scheduler": "rr", "reals": [
        {"entry": "10.9.9.1:443", "weight": 1, "active": 7, "inactive": 0}]}]
    json.dumps(st)      # the whole thing is JSON as it is


def test_no_state_files_and_no_kernel_still_show_the_config(director, tmp_path):
    cfg, _ = director
    for f in ("state/health.json", "state/weights.json", "run/takeover.json", "run/hb-peers.json"):
        os.unlink(tmp_path / f)

    class NoIPVS:
        def read(self):
            raise errors.Fatal("this kernel has no IPVS", errors.NOT_INSTALLED)
    st, code = gather(cfg, NoIPVS())
    assert code == errors.NOT_INSTALLED
    assert st["ipvs"] == {"available": False, "error": "this kernel has no IPVS"}
    assert st["node"]["role"] is None and st["heartbeat"]["view_age"] is None
    assert st["peers"][0]["paths"] == {"cross": None, "lan": None}
    r = real(st, "www", "kama")
    assert (r["health"], r["kernel_weight"], r["in_kernel"], r["wanted_weight"]) == ("unknown", None, False, 1)
    assert st["services"][0]["in_kernel"] is None       # unknown, not "missing"
    text = status.text(st)
    assert "IPVS: this kernel has no IPVS" in text and "hb-listen not running" in text
    assert "NOT IN THE KERNEL" not in text


def test_text_is_a_table_with_role_on_top(director):
    cfg, _ = director
    lines = status.text(gather(cfg)[0]).splitlines()
    assert lines[0] == "node midas: active, priority 200"
    assert lines[1] == "  peer estepe: standby, priority 100; heartbeat age cross 30.0s, lan 520ms"
    head = next(i for i, l in enumerate(lines) if l.startswith("  -> SERVER"))
    assert lines[head + 1] == "tcp 10.0.0.26:80 wlc  [www]"
    rows = {re.split(r"\s{2,}", l.strip())[0] + " " + l.split()[2]: l.split() for l in lines
            if l.startswith("  -> ") and l is not lines[head]}
    assert rows["-> hades 10.0.0.13:80"][3:10] == ["dr", "2", "-", "2", "12", "3", "up"]
    assert lines[head + 3].split()[3:10] == ["dr", "1", "-", "0", "1", "40", "down"]
    assert lines[head + 3].endswith("connection refused")
    assert lines[head + 4].split()[1:] == ["-", "10.0.0.99:80", "dr", "-", "-", "0", "2", "0", "leaving"]
    x = next(l for l in lines if l.startswith("  -> kama") and ":177" in l)
    assert "700 (want 650)" in x
    # columns line up: every row's ADDRESS starts where the header's does
    col = lines[head].index("ADDRESS")
    table = lines[head + 1:-2]
    assert all(l[col - 2:col] == "  " and l[col] != " " for l in table if l.startswith("  -> "))
    assert lines[-2].startswith("tcp 10.9.9.9:443 rr  (foreign")


def test_textfile_parses_as_prometheus_text_format(director, tmp_path):
    cfg, _ = director
    body = status.prometheus(gather(cfg)[0])
    path = tmp_path / "prom" / "lvskit.prom"
    path.parent.mkdir()
    status.write_textfile(str(path), body)
    assert path.read_text() == body and os.listdir(path.parent) == ["lvskit.prom"]     # no temp left
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert all(f.documentation and f.type == "gauge" for f in families.values())

    def value(name, **labels):
        found = [s.value for s in families[name].samples if s.labels == labels]
        assert len(found) == 1, (name, labels, families[name].samples)
        return found[0]
    www_hades = dict(service="www", server="hades", address="10.0.0.13:80")
    assert value("lvskit_real_server_up", **www_hades) == 1
    assert value("lvskit_real_server_up", service="www", server="kama", address="10.0.0.43:80") == 0
    assert value("lvskit_real_server_weight", **www_hades) == 2
    assert value("lvskit_real_server_active_connections", **www_hades) == 12
    assert value("lvskit_real_server_inactive_connections", **www_hades) == 3
    assert value("lvskit_real_server_load_weight", service="xdmcp", server="kama", address="10.0.0.43:177") == 650
    assert value("lvskit_director_active", node="midas") == 1
    assert value("lvskit_heartbeat_age_seconds", peer="estepe", path="cross") == 30.0
    assert value("lvskit_ipvs_available") == 1
    assert value("lvskit_service_in_kernel", service="www", key="tcp 10.0.0.26:80") == 1
    # address means one thing on every metric: a real server's ADDR:PORT
    addresses = {s.labels["address"] for f in families.values() for s in f.samples if "address" in s.labels}
    assert "10.0.0.13:80" in addresses and all(re.fullmatch(r"[0-9.]+:[0-9]+", a) for a in addresses)
    # no health, no sample (xdmcp has no check): absent, not a made-up 0 or 1
    assert not [s for s in families["lvskit_real_server_up"].samples if s.labels["service"] == "xdmcp"]
    # every family's HELP and TYPE come before its samples, and names are unique
    seen = []
    for line in body.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+)", line)
        if m:
            seen.append(m.group(2))
        else:
            assert re.match(r"(lvskit_\w+)[{ ]", line).group(1) == seen[-1], line
    assert len(set(seen)) * 2 == len(seen)


PROMTOOL = os.path.join(ROOT, "build", "tools", "promtool")


def promtool_check(body):
    assert os.access(PROMTOOL, os.X_OK), f"no {PROMTOOL}: `make tools` fetches Debian's"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_textfile_passes_promtool(director):
    """Prometheus's own linter (Debian's promtool) finds nothing wrong in the textfile,
    and it is not a linter that passes everything."""
    cfg, _ = director
    st = gather(cfg)[0]
    st["services"][0]["name"] = 'we"ird\\name\n'
    assert promtool_check(status.prometheus(st)) == (0, "")
    code, said = promtool_check("# TYPE lvskit_x gauge\nlvskit_x 1\n")
    assert code != 0 and "no help text" in said


def test_label_values_are_escaped(director):
    cfg, _ = director
    st = gather(cfg)[0]
    st["services"][0]["name"] = 'we"ird\\name\n'
    families = list(text_string_to_metric_families(status.prometheus(st)))
    names = {s.labels.get("service") for f in families for s in f.samples}
    assert 'we"ird\\name\n' in names


def test_check_mode(director):
    cfg, _ = director
    st = gather(cfg)[0]
    code, line = status.check(st)
    # kama down, and estepe's cross path silent for 30 s
    assert code == errors.CHECK_WARNING
    assert line.startswith("LVS_STATUS WARNING - 3/4 real servers up; active; www kama down: connection refused")
    assert "peer estepe path cross silent" in line and line.endswith("| up=3;;;0;4 active=15;;;0")
    table = kernel_table()
    for d in list(table.table[WWW].dests.values()):
        table.table[WWW].dests[d.key] = Dest(d.address, d.port, d.forward, 0)
    code, line = status.check(gather(cfg, table)[0])
    assert code == errors.CHECK_CRITICAL and "www has no real server with weight" in line
    del table.table[XDMCP]
    assert "xdmcp not in the kernel" in status.check(gather(cfg, table)[0])[1]


def test_hb_listen_publishes_ages_per_path(director):
    """hb-listen's side of the peers view: wall-clock times per path, rewritten once a second."""
    cfg, _ = director
    clock = [100.0]
    worker = types.SimpleNamespace(role="standby", pending=None)
    lis = hbnet.Listener(cfg, cfg.node("midas"), b"k" * 32, [], worker, clock=lambda: clock[0])
    lan, cross = "lan", "cross"
    lis.heard(Beat("estepe", "standby", 100, cross, 1, 1), 99.5)
    lis.heard(Beat("estepe", "standby", 100, lan, 1, 2), 100.0)
    before = time.time()
    lis._publish(100.0)
    view = state.load(os.path.join(cfg.run_dir, "hb-peers.json"))
    p = view["peers"]["estepe"]
    assert (p["state"], p["alive"], p["priority"]) == ("standby", True, 100)
    assert abs(p["paths"]["cross"] - (view["written"] - 0.5)) < 0.01
    assert abs(p["paths"]["lan"] - view["written"]) < 0.01 and view["written"] >= before - 0.01
    peers = os.path.join(cfg.run_dir, "hb-peers.json")
    lis._publish(100.05)        # nothing changed, less than a second: not rewritten
    assert state.load(peers) == view
    lis._publish(100.5)         # silent past deadtime: rewritten at once
    assert state.load(peers)["peers"]["estepe"]["alive"] is False
    os.unlink(peers)
    lis._publish(101.6)         # no change, but a second since: rewritten (ages stay honest)
    assert state.load(peers)["peers"]["estepe"]["alive"] is False
    st, _ = status.gather(cfg, kernel=kernel_table(), node_name="midas")
    assert st["peers"][0]["paths"]["cross"] == pytest.approx(2.1, abs=0.3)
    assert st["peers"][0]["alive"] is False


def run(*args):
    return subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bin", "lvs-status")] + list(args),
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))


def test_script_without_ipvs_shows_the_rest_and_exits_5_or_4(director, tmp_path):
    cfg, path = director
    now = time.time()
    state.save(os.path.join(cfg.run_dir, "hb-peers.json"), {"written": now, "peers": {"estepe": {
        "state": "standby", "alive": True, "priority": 100, "heard": now, "paths": {"lan": now}}}})
    r = run("-c", path, "--node", "midas")
    # the host kernel has no IPVS (5); a host with IPVS, not root: 4
    assert r.returncode in (errors.NOT_INSTALLED, errors.PERMISSION), r.stderr
    assert r.stdout.startswith("node midas: active, priority 200\n") and "[www]" in r.stdout
    j = run("-c", path, "--node", "midas", "--json")
    st = json.loads(j.stdout)
    assert st["ipvs"]["available"] is False and real(st, "www", "kama")["health"] == "down"
    prom = tmp_path / "out.prom"
    t = run("-c", path, "--node", "midas", "--textfile", str(prom))
    assert (t.stdout, t.stderr) == ("", "")        # quiet: cron mails nothing
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert fams["lvskit_ipvs_available"].samples[0].value == 0
    assert "lvskit_real_server_weight" in fams and not fams["lvskit_real_server_weight"].samples
    c = run("-c", path, "--node", "midas", "--check")
    assert c.returncode == errors.CHECK_UNKNOWN and c.stdout.startswith("LVS_STATUS UNKNOWN")


def test_script_errors(director, tmp_path):
    _, path = director
    bad = tmp_path / "bad.ini"
    bad.write_text("[service x]\nport = 99999\n")
    r = run("-c", str(bad))
    assert r.returncode == errors.NOT_CONFIGURED and len(r.stderr.splitlines()) == 1
    r = run("-c", path, "--json", "--check")      # a check: UNKNOWN (3), never CRITICAL (2)
    assert r.returncode == errors.CHECK_UNKNOWN
    assert r.stdout.startswith("LVS_STATUS UNKNOWN - usage: argument --check: not allowed with argument --json")
    r = run("-c", path, "--json", "--bogus")
    assert r.returncode == errors.USAGE
    for args, why in (([str(bad)], f"{bad}:1: [service x] address: missing"), ([path, "--node", "nobody"], f"{path}: no [node nobody]")):
        r = run("--check", "-c", *args)
        assert r.returncode == errors.CHECK_UNKNOWN and r.stderr == f"lvs-status: {why}\n", r
        assert r.stdout.startswith(f"LVS_STATUS UNKNOWN - {why}") and r.stdout.count("\n") == 1, r.stdout
    r = run("-c", path, "--node", "nobody")
    assert r.returncode == errors.NOT_CONFIGURED and "no [node nobody]" in r.stderr
    r = run("-c", path, "--node", "midas", "--textfile", str(tmp_path / "no" / "such" / "dir.prom"))
    assert r.returncode == errors.ERROR and "dir.prom" in r.stderr


# --- [announce] mode = bgp: the gate's verdict (RUN_DIR/announce.json) ----------------

BGP = """
[global]
director = midas
state_dir = {d}/state
run_dir = {d}/run
[announce]
mode = bgp
birdc = {birdc}
[server hades]
address = 10.0.0.13
[server kama]
address = 10.0.0.43
[service www]
address = 10.0.0.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
real.hades = weight=1
real.kama = weight=1
"""


def bgp_table(weight=1):
    dr = FORWARD["dr"]
    return MemoryTable([Service(WWW, "mh", dests={
        ("10.0.0.13", 80): Dest("10.0.0.13", 80, dr, weight, active=5),
        ("10.0.0.43", 80): Dest("10.0.0.43", 80, dr, weight, active=6)})])


BIRD_DATA = os.path.join(HERE, "data", "bird")


def bird_moment(tmp_path, moment):
    """fakebirdc answers as the real BIRD did at that moment (tests/unit/data/bird/MOMENT, from
    its capture script: a director BIRD with one BGP session, router1, BFD on); None: from
    protocols.json only (static protocols, no BGP session)."""
    where = os.path.join(str(tmp_path), "birdc")
    for f in glob.glob(os.path.join(where, "*.out")) + glob.glob(os.path.join(where, "*.rc")):
        os.unlink(f)
    if moment:
        for f in glob.glob(os.path.join(BIRD_DATA, moment, "*")):
            shutil.copy(f, where)


@pytest.fixture
def bgp(tmp_path):
    path = tmp_path / "lvskit.ini"
    birdc = tmp_path / "birdc"
    birdc.mkdir()
    (birdc / "protocols.json").write_text(json.dumps({"lvskit_vip": "up", "bgp_router": "up"}))
    bird_moment(tmp_path, "established")
    path.write_text(BGP.format(d=tmp_path, birdc=f"/usr/bin/python3 {HERE}/fakebirdc.py {birdc}"))
    cfg = config.load(str(path))
    up = {"up": True, "state": "up", "reason": "connected", "since": NOW - 600}
    state.save(state.health_path(cfg), {"services": {"www": {"10.0.0.13:80": up, "10.0.0.43:80": up}},
                                        "checked": {"www": NOW - 1}})
    return cfg, str(path)


def verdict_file(cfg, announced=True, key="ok", reason="1 services in line with the config",
                 since=NOW - 120, checked=NOW - 0.4, **more):
    state.save(state.announce_path(cfg), {"announced": announced, "key": key, "reason": reason,
                                          "since": since, "checked": checked, **more}, indent=None)


ROUTER1 = {"name": "router1", "neighbor": "10.255.0.1", "state": "up", "bgp_state": "Established",
           "established": True, "since": "06:20:11.622", "error": None, "bfd": "Up", "exported": ["10.0.0.26/32"]}


def cfg_dir(cfg):
    return os.path.dirname(cfg.path)


def bgp_status(cfg, table=None):
    st, code = status.gather(cfg, kernel=table or bgp_table(), now=NOW)
    assert code == errors.OK
    return st


def families(st):
    return {f.name: f for f in text_string_to_metric_families(status.prometheus(st))}


def test_mode_none_has_no_announce_part(director):
    cfg, _ = director
    st = gather(cfg)[0]
    assert "announce" not in st and "announce" not in status.text(st)
    assert "lvskit_announce" not in status.prometheus(st)
    assert " announced" not in status.check(st)[1]


def test_bgp_announced_shows_verdict_in_text_json_metrics_and_check(bgp):
    cfg, _ = bgp
    verdict_file(cfg)
    st = bgp_status(cfg)
    assert st["announce"] == {"mode": "bgp", "file": state.announce_path(cfg), "gate": "ok", "announced": True,
                              "key": "ok", "reason": "1 services in line with the config", "since_age": 120.0,
                              "checked_age": 0.4, "stale_after": status.STALE_AFTER,
                              "bird": {"answered": True, "error": None, "protocols": {"lvskit_vip": "up"},
                                       "sessions": [ROUTER1]}}
    json.dumps(st)
    lines = status.text(st).splitlines()
    assert lines[1] == ("announce bgp: announced for 2min: 1 services in line with the config; "
                        "last round 400ms ago")
    assert lines[2] == "  BIRD: lvskit_vip up"
    assert lines[3] == "  BGP router1 10.255.0.1: Established since 06:20:11.622, BFD Up; exports 10.0.0.26/32"
    fams = families(st)
    assert [(s.labels, s.value) for s in fams["lvskit_announced"].samples] == [({"key": "ok"}, 1)]
    assert [s.value for s in fams["lvskit_announce_round_age_seconds"].samples] == [0.4]
    assert promtool_check(status.prometheus(st)) == (0, "")
    code, line = status.check(st)
    assert (code, line) == (errors.CHECK_OK, "LVS_STATUS OK - 2/2 real servers up; announced; BGP 1/1 up "
                                             "| up=2;;;0;2 active=11;;;0 bgp_up=1;;;0;1")


def test_bgp_announced_with_a_wrong_table_is_critical(bgp):
    cfg, _ = bgp
    verdict_file(cfg)
    code, line = status.check(bgp_status(cfg, bgp_table(weight=0)))
    assert code == errors.CHECK_CRITICAL
    assert line.startswith("LVS_STATUS CRITICAL - 2/2 real servers up; announced; BGP 1/1 up; "
                           "ANNOUNCED with a wrong table (www has no real server with weight)"), line
    # the same table withdrawn: still CRITICAL for the table, but no announcing of it
    bird_moment(cfg_dir(cfg), "withdrawn")
    verdict_file(cfg, announced=False, key="empty", reason="www has no real server with weight > 0")
    code, line = status.check(bgp_status(cfg, bgp_table(weight=0)))
    assert code == errors.CHECK_CRITICAL and "ANNOUNCED" not in line
    # a stale verdict that said announced: the gate may have died leaving BIRD announcing
    verdict_file(cfg, checked=NOW - 60)
    code, line = status.check(bgp_status(cfg, MemoryTable([])))
    assert code == errors.CHECK_CRITICAL and "ANNOUNCED with a wrong table (www not in the kernel)" in line
    assert "lvs-announce's last round 1min ago (not running?)" in line


def test_bgp_withdrawn_is_a_warning_but_a_drain_is_ok(bgp):
    cfg, _ = bgp
    bird_moment(cfg_dir(cfg), "withdrawn")
    verdict_file(cfg, announced=False, key="health", reason="www last checked 30s ago", since=NOW - 5)
    st = bgp_status(cfg)
    assert (st["announce"]["announced"], st["announce"]["key"], st["announce"]["since_age"]) == \
        (False, "health", 5.0)
    assert status.text(st).splitlines()[1] == \
        "announce bgp: WITHDRAWN for 5.0s: www last checked 30s ago; last round 400ms ago"
    assert status.check(st) == (errors.CHECK_WARNING, "LVS_STATUS WARNING - 2/2 real servers up; "
                                "withdrawn: www last checked 30s ago; BGP 1/1 up "
                                "| up=2;;;0;2 active=11;;;0 bgp_up=1;;;0;1")
    fams = families(st)
    assert [(s.labels, s.value) for s in fams["lvskit_announced"].samples] == [({"key": "health"}, 0)]
    verdict_file(cfg, announced=False, key="stopped", reason="lvs-announce stopped")
    assert status.check(bgp_status(cfg))[0] == errors.CHECK_WARNING
    verdict_file(cfg, announced=False, key="drain", reason="drained (/x/announce-drain: upgrade)")
    assert status.check(bgp_status(cfg)) == (errors.CHECK_OK, "LVS_STATUS OK - 2/2 real servers up; "
                                             "withdrawn: drained (/x/announce-drain: upgrade); BGP 1/1 up "
                                             "| up=2;;;0;2 active=11;;;0 bgp_up=1;;;0;1")


def test_bgp_a_slower_gate_is_stale_after_three_of_its_rounds(bgp):
    cfg, _ = bgp
    verdict_file(cfg, checked=NOW - 25, every=10)               # --every 10: stale after 30 s
    assert bgp_status(cfg)["announce"]["gate"] == "ok"
    verdict_file(cfg, checked=NOW - 31, every=10)
    st = bgp_status(cfg)
    assert (st["announce"]["gate"], st["announce"]["stale_after"]) == ("stale", 30)
    verdict_file(cfg, checked=NOW - 11, every=1)                # --every 1: the unit's watchdog bound
    assert bgp_status(cfg)["announce"]["gate"] == "stale"
    verdict_file(cfg, checked=NOW - 11, every=-1)               # not the gate's: no verdict
    assert bgp_status(cfg)["announce"]["gate"] == "malformed"


def test_bgp_stale_verdict_is_a_warning(bgp):
    cfg, _ = bgp
    verdict_file(cfg, checked=NOW - status.STALE_AFTER)        # at the bound: still fresh
    assert status.check(bgp_status(cfg))[0] == errors.CHECK_OK
    verdict_file(cfg, checked=NOW - status.STALE_AFTER - 1)
    st = bgp_status(cfg)
    assert (st["announce"]["gate"], st["announce"]["announced"]) == ("stale", True)
    assert status.text(st).splitlines()[1].endswith(
        "last round 11.0s ago, STALE (over 10.0s: lvs-announce not running?)")
    code, line = status.check(st)
    assert code == errors.CHECK_WARNING and "lvs-announce's last round 11.0s ago (not running?)" in line
    # a stale verdict still gives its samples: the age is what an alert looks at
    assert [s.value for s in families(st)["lvskit_announce_round_age_seconds"].samples] == [11.0]


@pytest.mark.parametrize("body, gate", [
    (None, "missing"),
    (b"{\"announced\": true, \"key\": \"ok\", \"reason\": \"x\", \"since\": 1, \"chec", "malformed"),
    (b"{\"announced\": \"yes\", \"key\": \"ok\", \"reason\": \"x\", \"since\": 1, \"checked\": 2}",
     "malformed"),
    (b"{\"announced\": true, \"key\": \"ok\", \"reason\": \"x\", \"since\": null}", "malformed"),
    (b"[]", "malformed"),
])
def test_bgp_missing_or_malformed_verdict_is_one_line_and_a_warning(bgp, body, gate, capfd):
    cfg, _ = bgp
    if body is not None:
        os.makedirs(cfg.run_dir, exist_ok=True)
        with open(state.announce_path(cfg), "wb") as f:
            f.write(body)
    st = bgp_status(cfg)
    a = st["announce"]
    assert (a["gate"], a["announced"], a["key"], a["checked_age"]) == (gate, None, None, None)
    line = status.text(st).splitlines()[1]
    assert line.startswith(f"announce bgp: no verdict, {state.announce_path(cfg)} ")
    assert line.endswith("lvs-announce not running?)")
    code, said = status.check(st)
    assert code == errors.CHECK_WARNING and "; no announce verdict; BGP 1/1 up; lvs-announce gives no verdict" \
        in said, said
    fams = families(st)
    assert not fams["lvskit_announced"].samples and not fams["lvskit_announce_round_age_seconds"].samples
    assert promtool_check(status.prometheus(st)) == (0, "")
    warned = capfd.readouterr().err
    assert ("ignoring this state file" in warned) == (gate == "malformed")


def test_bgp_script_shows_the_verdict_without_ipvs(bgp):
    """bin/lvs-status in bgp mode on this host (no IPVS or not root): the verdict line, no traceback."""
    cfg, path = bgp
    verdict_file(cfg, checked=time.time(), since=time.time() - 600)
    r = run("-c", path)
    assert r.returncode in (errors.NOT_INSTALLED, errors.PERMISSION), r.stderr
    assert r.stdout.splitlines()[1].startswith("announce bgp: announced for 10min: ")
    st = json.loads(run("-c", path, "--json").stdout)
    assert (st["announce"]["gate"], st["announce"]["announced"]) == ("ok", True)
    with open(state.announce_path(cfg), "w") as f:
        f.write("not json")
    r = run("-c", path)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and "announce.json" in r.stderr
    assert "is not lvs-announce's" in r.stdout


def test_bgp_shows_birds_own_view_or_that_it_does_not_answer(bgp, tmp_path):
    """BIRD's view is shown beside the gate's; BIRD's silence is not judged by --check
    (the gate judges BIRD and withdraws), what it answers is (see the session tests)."""
    cfg, _ = bgp
    verdict_file(cfg)
    bird_moment(tmp_path, None)                         # static protocols only, no BGP session
    (tmp_path / "birdc" / "protocols.json").write_text(json.dumps({"bgp_router": "up"}))
    st = bgp_status(cfg)
    assert st["announce"]["bird"]["protocols"] == {"lvskit_vip": None}
    assert st["announce"]["bird"]["sessions"] == []
    assert status.text(st).splitlines()[2] == "  BIRD: lvskit_vip MISSING (not in bird.conf?)"
    assert status.check(st) == (errors.CHECK_WARNING, "LVS_STATUS WARNING - 2/2 real servers up; announced; "
                                "announced to nobody: no BGP session Established | up=2;;;0;2 active=11;;;0")
    (tmp_path / "birdc" / "refuse").write_text("")
    st = bgp_status(cfg)
    b = st["announce"]["bird"]
    assert (b["answered"], b["protocols"], b["sessions"]) == (False, {"lvskit_vip": None}, [])
    line = status.text(st).splitlines()[2]
    assert line.startswith("  BIRD does not answer: ") and "Unable to connect" in line, line
    assert status.check(st) == (errors.CHECK_OK, "LVS_STATUS OK - 2/2 real servers up; announced "
                                "| up=2;;;0;2 active=11;;;0")
    fams = families(st)
    assert [s.value for s in fams["lvskit_bird_available"].samples] == [0]
    assert not fams["lvskit_bgp_session_up"].samples
    # no verdict file: BIRD is still asked
    os.unlink(state.announce_path(cfg))
    os.unlink(tmp_path / "birdc" / "refuse")
    st = bgp_status(cfg)
    assert st["announce"]["gate"] == "missing" and st["announce"]["bird"]["answered"] is True


# --- what BIRD tells the routers: BGP sessions, BFD, exported VIPs (birdc as BIRD 2.0.12 said it)

def bgp_check(cfg, moment, table=None, **verdict):
    bird_moment(cfg_dir(cfg), moment)
    if verdict.get("announced") is not None:
        verdict_file(cfg, **verdict)
    st = bgp_status(cfg, table)
    return st, status.check(st)


def test_bgp_sessions_in_text_json_and_metrics(bgp):
    cfg, _ = bgp
    verdict_file(cfg)
    bird_moment(cfg_dir(cfg), "two-routers")
    st = bgp_status(cfg)
    assert st["announce"]["bird"]["sessions"] == [
        dict(ROUTER1, since="06:20:23.991"),
        {"name": "router2", "neighbor": "10.255.0.9", "state": "start", "bgp_state": "Idle", "established": False,
         "since": "06:20:19.471", "error": None, "bfd": None, "exported": []}]
    assert status.text(st).splitlines()[3:5] == [
        "  BGP router1 10.255.0.1: Established since 06:20:23.991, BFD Up; exports 10.0.0.26/32",
        "  BGP router2 10.255.0.9: Idle since 06:20:19.471, no BFD; exports no VIP"]
    fams = families(st)
    r1, r2 = {"session": "router1", "neighbor": "10.255.0.1"}, {"session": "router2", "neighbor": "10.255.0.9"}
    assert [s.value for s in fams["lvskit_bird_available"].samples] == [1]
    assert [(s.labels, s.value) for s in fams["lvskit_bgp_session_up"].samples] == [(r1, 1), (r2, 0)]
    assert [(s.labels, s.value) for s in fams["lvskit_bgp_session_bfd_up"].samples] == [(r1, 1)]
    assert [(s.labels, s.value) for s in fams["lvskit_bgp_session_exported_vips"].samples] == [(r1, 1), (r2, 0)]
    assert promtool_check(status.prometheus(st)) == (0, "")
    # one router lost of two: a WARNING naming it, the other still carries the announcement
    assert status.check(st) == (errors.CHECK_WARNING, "LVS_STATUS WARNING - 2/2 real servers up; announced; "
                                "BGP 1/2 up; BGP router2 Idle | up=2;;;0;2 active=11;;;0 bgp_up=1;;;0;2")


def test_bgp_announced_to_nobody_is_a_warning(bgp):
    cfg, _ = bgp
    st, (code, line) = bgp_check(cfg, "router-stopped", announced=True)
    assert status.text(st).splitlines()[3] == ("  BGP router1 10.255.0.1: Active since 06:20:11.672 "
                                               "(Received: Administrative shutdown), BFD Down; exports no VIP")
    assert (code, line) == (errors.CHECK_WARNING, "LVS_STATUS WARNING - 2/2 real servers up; announced; BGP 0/1 up; "
                            "announced to nobody: no BGP session Established; "
                            "BGP router1 Active (Received: Administrative shutdown) "
                            "| up=2;;;0;2 active=11;;;0 bgp_up=0;;;0;1")
    fams = families(st)
    assert [s.value for s in fams["lvskit_bgp_session_up"].samples] == [0]
    assert [s.value for s in fams["lvskit_bgp_session_bfd_up"].samples] == [0]
    # withdrawn with the router gone: the gate's warning and the session's, nothing critical
    _, (code, line) = bgp_check(cfg, "router-stopped", announced=False, key="health", reason="stale")
    assert code == errors.CHECK_WARNING and "nobody" not in line and "BGP router1 Active" in line


def test_bgp_announced_but_exported_nowhere_is_a_warning(bgp):
    """The session is up, the gate says announced, BIRD sends nothing: the protocols were
    disabled behind the gate's back, or bird.conf's export filter lets no VIP through."""
    cfg, _ = bgp
    _, (code, line) = bgp_check(cfg, "withdrawn", announced=True)
    assert code == errors.CHECK_WARNING
    assert "; announced but no BGP session exports a VIP (bird.conf's export filter?) |" in line, line


def test_bgp_exported_while_the_gate_says_withdrawn_is_critical(bgp):
    """The blackhole risk: the router sends flows the gate decided this director must not get."""
    cfg, _ = bgp
    for key, reason in (("health", "www last checked 30s ago"), ("drain", "drained (x: upgrade)"),
                        ("stopped", "lvs-announce stopped")):
        _, (code, line) = bgp_check(cfg, "established", announced=False, key=key, reason=reason)
        assert code == errors.CHECK_CRITICAL, (key, line)
        assert f"withdrawn: {reason}; BGP 1/1 up; VIPs EXPORTED to router1 while lvs-announce says " \
               "withdrawn" in line, line
    # no verdict at all: exporting is critical only with a table that cannot serve
    os.unlink(state.announce_path(cfg))
    _, (code, line) = bgp_check(cfg, "established")
    assert code == errors.CHECK_WARNING and "EXPORTED" not in line
    _, (code, line) = bgp_check(cfg, "established", bgp_table(weight=0))
    assert code == errors.CHECK_CRITICAL
    assert "VIPs EXPORTED to router1 with a wrong table (www has no real server with weight)" in line, line


def test_bgp_established_without_bfd_up_is_a_warning(bgp):
    """The router runs no BFD: BGP is up but a dead director is seen only by the hold timer."""
    cfg, _ = bgp
    st, (code, line) = bgp_check(cfg, "nobfd-peer", announced=True)
    assert status.text(st).splitlines()[3].endswith(", BFD Down; exports 10.0.0.26/32")
    assert (code, line) == (errors.CHECK_WARNING, "LVS_STATUS WARNING - 2/2 real servers up; announced; "
                            "BGP 1/1 up; BGP router1 BFD Down | up=2;;;0;2 active=11;;;0 bgp_up=1;;;0;1")
    assert [s.value for s in families(st)["lvskit_bgp_session_bfd_up"].samples] == [0]


def test_bgp_a_birdc_call_that_fails_after_the_first_is_one_line_and_unknown_parts(bgp):
    cfg, _ = bgp
    verdict_file(cfg)
    where = os.path.join(cfg_dir(cfg), "birdc")
    with open(os.path.join(where, "show_route_export_router1.out"), "w") as f:
        f.write("BIRD 2.0.12 ready.\nsomething else\n")
    st = bgp_status(cfg)
    s, = st["announce"]["bird"]["sessions"]
    assert (s["established"], s["bfd"], s["exported"]) == (True, "Up", None)
    lines = status.text(st).splitlines()
    assert lines[3].endswith("BFD Up; exports: unknown")
    assert lines[4].startswith("  BIRD did not say all: ") and \
        lines[4].endswith("show route export router1: not a route row: 'something else'"), lines[4]
    assert not families(st)["lvskit_bgp_session_exported_vips"].samples
    assert status.check(st)[0] == errors.CHECK_OK        # not known is not judged


def test_bgp_a_session_disabled_in_bird_is_shown_not_judged(bgp):
    """The admin's `disabled yes` (or birdc disable) on a BGP protocol is a choice, not a fault;
    a dynamic BGP listener (neighbor range) is no session at all."""
    cfg, _ = bgp
    bird_moment(cfg_dir(cfg), "listener")
    shutil.copy(os.path.join(BIRD_DATA, "nobfd", "show_bfd_sessions.out"), os.path.join(cfg_dir(cfg), "birdc"))
    verdict_file(cfg, announced=False, key="drain", reason="drained (x)")
    st = bgp_status(cfg)
    assert [(s["name"], s["state"], s["bfd"], s["exported"]) for s in st["announce"]["bird"]["sessions"]] == \
        [("r1", "down", None, [])]
    assert status.text(st).splitlines()[3] == "  BGP r1 10.255.0.1: Down (disabled) since 06:34:17.956, no BFD; " \
                                              "exports no VIP"
    assert status.check(st) == (errors.CHECK_OK, "LVS_STATUS OK - 2/2 real servers up; withdrawn: drained (x); "
                                "BGP 0/1 up | up=2;;;0;2 active=11;;;0 bgp_up=0;;;0;1")
