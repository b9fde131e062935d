"""takeover --serve's answers, with an interface of plain sets (no kernel, no packets)."""
import io

import pytest

from lvskit import config, takeover
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
    assert takeover.read_role(cfg) == ACTIVE        # what hb-send says: we still hold one


def test_release_that_worked_is_standby(cfg):
    addrs = FakeAddresses(held=cfg.heartbeat.vips)
    assert serve(cfg, addrs, "release\n") == ["ready active", "done standby"]
    assert takeover.read_role(cfg) == STANDBY and not addrs.held
