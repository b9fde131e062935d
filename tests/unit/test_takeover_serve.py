"""takeover --serve's answers, with an interface of plain sets (no kernel, no packets)."""
import io

import pytest

from lvskit import config, rolefile, state, takeover
from lvskit.errors import Fatal
from lvskit.heartbeat import ACTIVE, STANDBY


class FakeAddresses:
    def __init__(self, held=(), stuck=()):
        self.held, self.stuck = set(held), set(stuck)

    def list(self):
        return set(self.held)

    def holds(self, vip):
        return vip in self.held

    def add(self, vip, present=None):
        new = vip not in self.held
        self.held.add(vip)
        return new

    def delete(self, vip):
        if vip in self.stuck:
            raise Fatal(f"ip addr del {vip} dev nowhere0: Operation not permitted")
        found = vip in self.held
        self.held.discard(vip)
        return found


@pytest.fixture
def cfg(tmp_path):
    # an interface that does not exist: the ARP of the slow steps fails, sends nothing
    return config.parse(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lvsknone0
vips = 127.0.0.98/32, 127.0.0.99/32
arp_repeat = 0
[node a]
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
""", "t.ini")


def serve(cfg, addresses, commands):
    out = io.StringIO()
    takeover.serve(takeover.Director(cfg, addresses=addresses), io.StringIO(commands), out)
    return out.getvalue().splitlines()


def test_release_that_leaves_a_vip_is_an_error_and_keeps_saying_active(cfg):
    addrs = FakeAddresses(held=cfg.heartbeat.vips, stuck=["127.0.0.99/32"])
    assert serve(cfg, addrs, "release\n") == [
        "ready active", "error release failed, still holding 127.0.0.99/32"]
    assert rolefile.read_role(cfg) == ACTIVE        # what hb-send says: we still hold one


def test_release_that_worked_is_standby(cfg):
    addrs = FakeAddresses(held=cfg.heartbeat.vips)
    assert serve(cfg, addrs, "release\n") == ["ready active", "done standby"]
    assert rolefile.read_role(cfg) == STANDBY and not addrs.held


def _peers_file(cfg, written, role=ACTIVE, alive=True):
    import json
    import os
    os.makedirs(cfg.run_dir, exist_ok=True)
    with open(state.peers_path(cfg), "w") as f:
        json.dump({"written": written, "peers": {"b": {"state": role, "alive": alive, "priority": 100}}}, f)


@pytest.mark.parametrize("case", ["missing", "stale", "no active peer"])
def test_release_keeps_the_vips_when_no_live_peer_is_known(cfg, case):
    import time
    if case == "stale":     # hb-listen died long ago; its last word was "b active, alive"
        _peers_file(cfg, time.time() - cfg.heartbeat.deadtime - 5)
    elif case == "no active peer":
        _peers_file(cfg, time.time(), role=STANDBY)
    addrs = FakeAddresses(held=cfg.heartbeat.vips)
    d = takeover.Director(cfg, addresses=addrs)
    with pytest.raises(Fatal, match="keeping the VIPs .--force") as e:
        d.release(hold=True, wait=0.05)
    assert e.value.code == 1 and ("unknown" in str(e.value)) == (case != "no active peer")
    assert addrs.held == set(cfg.heartbeat.vips) and rolefile.read_role(cfg) == ACTIVE


def test_release_with_a_live_active_peer_or_forced(cfg):
    import time
    _peers_file(cfg, time.time())
    addrs = FakeAddresses(held=cfg.heartbeat.vips)
    assert takeover.Director(cfg, addresses=addrs).release(hold=True, wait=0.05)
    assert not addrs.held and rolefile.read_role(cfg) == "held"
    import os
    os.unlink(state.peers_path(cfg))
    addrs = FakeAddresses(held=cfg.heartbeat.vips)
    assert takeover.Director(cfg, addresses=addrs).release(hold=True, wait=0.05, force=True)
    assert not addrs.held


def test_a_run_dir_that_cannot_be_written_is_an_answer_not_a_crash(tmp_path):
    (tmp_path / "plainfile").write_text("")
    bad = config.parse(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/plainfile/run
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lvsknone0
vips = 127.0.0.99/32
arp_repeat = 0
[node a]
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
""", "t.ini")
    lines = serve(bad, FakeAddresses(), "acquire\n")
    assert lines[0] == "ready standby"
    assert lines[1].startswith("error ") and "plainfile/run/takeover.json: cannot write the role" in lines[1]
