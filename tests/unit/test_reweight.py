"""reweight rounds against the fake table, with real agents on loopback sockets."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import loopback
from lvskit import agentpoll, config, reweight, sync
from fakekernel import FakeKernel
from lvskit.plan import EDIT_DEST

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Agents:
    """TCP listeners on 127.0.0.x:port, each answering what self.say[addr] holds.

    None means accept and never answer (a hung agent); a missing address has
    no listener at all (connection refused: the port stays ours on every address).
    """

    def __init__(self, addrs):
        self.say = {}
        self.socks = {}
        self.stop = False
        self.holder = loopback.shared_port()
        self.port = self.holder.getsockname()[1]
        for a in addrs:
            srv = loopback.on_port(a, self.port)
            srv.settimeout(0.1)
            self.socks[a] = srv
            threading.Thread(target=self._serve, args=(a, srv), daemon=True).start()
        self.hung = []

    def _serve(self, addr, srv):
        while not self.stop:
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            data = self.say.get(addr)
            if data is None:
                self.hung.append(conn)
                continue
            with conn:
                conn.sendall(data)

    def close(self):
        self.stop = True
        for s in list(self.socks.values()) + self.hung + [self.holder]:
            s.close()


@pytest.fixture
def agents():
    a = Agents(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    yield a
    a.close()


CFG = """
[global]
state_dir = {state}
run_dir = {state}
[reweight]
agent_port = {port}
timeout = 0.5
slow_start = 0
[server a]
address = 127.0.0.2
[server b]
address = 127.0.0.3
[server c]
address = 127.0.0.4
[service web]
address = 10.0.0.100
port = 80
reweight = agent
real.a = weight=2
real.b = weight=2
real.c = weight=2
[service mail]
address = 10.0.0.100
port = 25
real.a = weight=1
real.b = weight=1
"""


def make(tmp_path, agents, text=CFG):
    cfg = config.parse(text.format(state=tmp_path, port=agents.port))
    k = FakeKernel()
    sync.reconcile(cfg, k)          # ipvs-sync's first run
    return cfg, k


def weights(k, cfg, name="web"):
    return {d.address: d.weight for d in k.table[cfg.service(name).key].dests.values()}


def saved(tmp_path):
    return json.loads((tmp_path / "weights.json").read_text())["services"]


def test_poll_tells_answers_refusals_and_silence_apart(agents):
    agents.say = {"127.0.0.2": b"up 40%\n", "127.0.0.3": None}
    t0 = time.monotonic()
    got = agentpoll.poll({"a": ("127.0.0.2", agents.port), "b": ("127.0.0.3", agents.port),
                          "c": ("127.0.0.5", agents.port)}, timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert got == {"a": b"up 40%\n", "b": "timeout", "c": "connection refused"}


def test_round_sets_weights_from_capacity_only_by_weight_edits(tmp_path, agents):
    cfg, k = make(tmp_path, agents)
    agents.say = {"127.0.0.2": b"up 100%\n", "127.0.0.3": b"up 20%\n", "127.0.0.4": b"up 60%\n"}
    k.writes.clear()
    for i in range(40):
        out = reweight.round_(cfg, k, now=1000 + i)
        assert all(op.kind == EDIT_DEST for op in out.ops) and out.failed == []
    w = weights(k, cfg)
    assert w["127.0.0.2"] == 200
    assert abs(w["127.0.0.3"] - 40) <= 10 and abs(w["127.0.0.4"] - 120) <= 10
    assert weights(k, cfg, "mail") == {"127.0.0.2": 1, "127.0.0.3": 1}      # not reweighted
    assert set(saved(tmp_path)) == {"web"}
    # ipvs-sync agrees with what reweight decided: nothing to do
    assert sync.reconcile(cfg, k).ops == []
    # settled: a further round sends nothing to the kernel
    n = len(k.writes)
    reweight.round_(cfg, k, now=2000)
    assert len(k.writes) == n


def test_dry_run_changes_nothing(tmp_path, agents):
    cfg, k = make(tmp_path, agents)
    agents.say = dict.fromkeys(agents.socks, b"up 10%\n")
    out = reweight.round_(cfg, k, dry_run=True, now=1)
    assert out.ops and all(op.ipvsadm().startswith("ipvsadm -e -t 10.0.0.100:80 -r 127.0.0.") for op in out.ops)
    assert not (tmp_path / "weights.json").exists()
    assert weights(k, cfg) == {"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2}


def test_bad_answers_change_nothing_and_are_logged_once(tmp_path, agents, capsys):
    cfg, k = make(tmp_path, agents)
    agents.say = dict.fromkeys(agents.socks, b"up 50%\n")
    for i in range(30):
        reweight.round_(cfg, k, now=i)
    before = weights(k, cfg)
    capsys.readouterr()
    agents.say = {"127.0.0.2": b"up 12.5%\n", "127.0.0.3": b"<html>busy</html>\n", "127.0.0.4": None}
    for i in range(3):
        out = reweight.round_(cfg, k, now=100 + i)
        assert out.ops == []
    assert weights(k, cfg) == before
    err = capsys.readouterr().err
    assert err.count("127.0.0.2:80") == 1 and "bad weight '12.5%'" in err
    assert err.count("127.0.0.3:80") == 1 and "unknown word" in err
    assert err.count("127.0.0.4:80") == 1 and "timeout" in err
    agents.socks.pop("127.0.0.4").close()         # now refused: a new problem, one new line
    reweight.round_(cfg, k, now=200)
    assert "127.0.0.4:80: agent 127.0.0.4" in capsys.readouterr().err
    agents.say = {"127.0.0.2": b"up 50%\n", "127.0.0.3": b"up 50%\n"}
    reweight.round_(cfg, k, now=300)
    assert "answers again" in capsys.readouterr().err


def test_haproxy_lines_with_health_and_admin_words(tmp_path, agents):
    """lvs-agent's lines ("up ready 40%", "up drain 40%", ...) and HAProxy's >100%:
    drain, maint and down take a server to weight 0, ready brings it back."""
    text = CFG.replace("[reweight]", "[reweight]\nalpha = 1\nmax_step = 1")
    cfg, k = make(tmp_path, agents, text)
    agents.say = {"127.0.0.2": b"up ready 40%\n", "127.0.0.3": b"up ready 150%\n",
                  "127.0.0.4": b"up drain 40%\n"}
    reweight.round_(cfg, k, now=1)
    assert weights(k, cfg) == {"127.0.0.2": 80, "127.0.0.3": 200, "127.0.0.4": 0}
    agents.say = {"127.0.0.2": b"up maint 40%\n", "127.0.0.3": b"down ready 90%\n",
                  "127.0.0.4": b"up ready 40%\n"}
    reweight.round_(cfg, k, now=2)
    assert weights(k, cfg) == {"127.0.0.2": 0, "127.0.0.3": 0, "127.0.0.4": 80}
    assert saved(tmp_path)["web"]["127.0.0.2:80"]["answer"] == "up maint 40%"


def test_never_drains_every_server_and_check_real_wins(tmp_path, agents):
    cfg, k = make(tmp_path, agents)
    (tmp_path / "health.json").write_text(json.dumps({"services": {"web": {"127.0.0.4:80": {"up": False}}}}))
    agents.say = dict.fromkeys(agents.socks, b"drain\n")
    reweight.round_(cfg, k, now=1)
    w = weights(k, cfg)
    assert w["127.0.0.4"] == 0                        # quiesced by check-real, and stays so
    assert sorted([w["127.0.0.2"], w["127.0.0.3"]]) == [0, 10]     # one kept at the floor
    agents.say["127.0.0.2"] = b"up 80%\n"
    reweight.round_(cfg, k, now=2)
    w = weights(k, cfg)
    assert w["127.0.0.2"] > 0 and w["127.0.0.3"] == 0 and w["127.0.0.4"] == 0


def test_http_and_external_methods(tmp_path, agents):
    """The controller is tested elsewhere: alpha 1 and max step 1 make one answer one weight."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"up 30%\n" if self.path == "/load" else b"nope"
            self.send_response(200 if self.path == "/load" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    # on a port that is ours on 127.0.0.3 too, where nothing listens
    holder = loopback.shared_port()
    port = holder.getsockname()[1]
    srv = HTTPServer(("127.0.0.2", port), H, bind_and_activate=False)
    srv.socket.close()
    srv.socket = loopback.on_port("127.0.0.2", port)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        text = CFG.replace("reweight = agent", "reweight = http").replace(
            "slow_start = 0", f"slow_start = 0\nalpha = 1\nmax_step = 1\nhttp_url = http://{{{{address}}}}:{port}/load")
        cfg, k = make(tmp_path, agents, text)
        for i in range(2):
            reweight.round_(cfg, k, now=i)
        w = weights(k, cfg)
        assert abs(w["127.0.0.2"] - 60) <= 10
        assert w["127.0.0.3"] == 200                  # no web server there: nothing changed
        assert "connection" in saved(tmp_path)["web"]["127.0.0.3:80"]["error"].lower()
    finally:
        srv.shutdown()
        srv.server_close()
        holder.close()
    text = CFG.replace("reweight = agent", "reweight = external").replace(
        "slow_start = 0", "slow_start = 0\nalpha = 1\nmax_step = 1\ncommand = sh -c 'case {{address}} in *.2) echo up 25%;; "
                          "*.3) echo garbage;; *) exit 3;; esac'")
    for f in tmp_path.iterdir():
        f.unlink()
    cfg, k = make(tmp_path, agents, text)
    for i in range(2):
        reweight.round_(cfg, k, now=i)
    w = weights(k, cfg)
    assert abs(w["127.0.0.2"] - 50) <= 10 and w["127.0.0.3"] == 200 and w["127.0.0.4"] == 200
    errs = {a: s.get("error", "") for a, s in saved(tmp_path)["web"].items()}
    assert "unknown word" in errs["127.0.0.3:80"] and "exit 3" in errs["127.0.0.4:80"]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(config.ConfigError, match=r":3: \[reweight\] alpha: 2 out of range"):
        config.parse("[reweight]\n\nalpha = 2\n", "x.ini")
    with pytest.raises(config.ConfigError, match=r"\[service s\] reweight: 'load' is not one of"):
        config.parse("[service s]\naddress = 10.0.0.1\nport = 80\nreweight = load\n")
    with pytest.raises(config.ConfigError, match=r"\[server a\] agent_port: 70000 out of range"):
        config.parse("[server a]\naddress = 10.0.0.1\nagent_port = 70000\n")
    with pytest.raises(config.ConfigError, match=r"\[reweight\] command: bad template"):
        config.parse("[reweight]\ncommand = ssh {host} lvs-agent\n")
    with pytest.raises(config.ConfigError, match=r"\[agent\] listen: 'x:y' is not"):
        config.parse("[agent]\nlisten = x:y\n")


def script(*args):
    env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", "reweight")] + list(args),
                          capture_output=True, text=True, env=env, timeout=30)


def test_script_help_and_errors(tmp_path):
    r = script("--help")
    assert r.returncode == 0 and "exit codes" in r.stdout and "--every" in r.stdout
    bad = tmp_path / "bad.ini"
    bad.write_text("[reweight]\nfloor = -1\n")
    r = script("-c", str(bad))
    assert r.returncode == 6 and r.stderr.count("\n") == 1 and "floor" in r.stderr
    assert script("--every", "x").returncode == 2


def test_seed_config_reweights_the_desktops():
    cfg = config.load(os.path.join(ROOT, "conf", "lvskit.ini"))
    assert {vs.name: vs.reweight for vs in cfg.services} == {"www": "none", "ssh": "none", "xdmcp": "agent"}
    assert cfg.agent.max_sessions == 40 and cfg.reweight.scale == 100
