"""hb-listen's loop and hb-send's role file without sockets: a fake worker, a config in tmp_path."""
import os

import pytest

from lvskit import config, hbnet, takeover
from lvskit.heartbeat import ACTIVE, STANDBY

KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def cfg(tmp_path):
    return config.parse(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lo
vips = 127.0.0.99/32
initdead = 0
[node a]
priority = 200
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
""", "t.ini")


class FakeWorker:
    def __init__(self, role):
        self.role, self.pending, self.sent = role, None, []

    def send(self, command):
        self.sent.append(command)
        self.pending = command


def test_deleted_role_file_keeps_the_last_role(cfg):
    takeover.write_role(cfg, ACTIVE)
    rf = hbnet.RoleFile(cfg, fallback=lambda: pytest.fail("file was there"))
    assert rf.get() == ACTIVE and not rf.lost
    os.unlink(takeover.role_path(cfg))
    assert rf.get() == ACTIVE and rf.lost          # not "standby" while we hold the VIPs
    with open(takeover.role_path(cfg), "w") as f:
        f.write("{garbage")
    assert rf.get() == ACTIVE and rf.lost
    takeover.write_role(cfg, STANDBY)
    assert rf.get() == STANDBY and not rf.lost


def test_no_role_file_at_start_asks_the_interface(cfg):
    assert hbnet.RoleFile(cfg, fallback=lambda: ACTIVE).get() == ACTIVE
    assert hbnet.RoleFile(cfg).get() == STANDBY


def test_listener_has_the_worker_rewrite_a_deleted_role_file(cfg):
    takeover.write_role(cfg, ACTIVE)
    worker = FakeWorker(ACTIVE)
    li = hbnet.Listener(cfg, cfg.node("a"), KEY, [], worker, clock=lambda: 100.0)
    li.step(100.0)
    assert worker.sent == []                        # active, nobody else: nothing to do
    os.unlink(takeover.role_path(cfg))
    li.step(100.1)
    assert worker.sent == ["status"] and li.role == ACTIVE
