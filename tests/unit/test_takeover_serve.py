"""takeover --serve's answers, with an interface of plain sets (no kernel, no packets)."""
import io

import pytest

from lvskit import config, rolefile, state, takeover
from lvskit.errors import Fatal
from lvskit.heartbeat import ACTIVE, STANDBY


class FakeAddresses:
    def __init__(self, held=(), stuck=(), events=None, name="eth"):
        self.held, self.stuck = set(held), set(stuck)
        self.labels, self.events, self.name = {}, events if events is not None else [], name

    def list(self):
        return set(self.held)

    def holds(self, vip):
        return vip in self.held

    def add(self, vip, present=None, label=None):
        new = vip not in self.held
        self.held.add(vip)
        self.labels[vip] = label
        self.events.append(f"{self.name} add {vip}")
        return new

    def delete(self, vip):
        if vip in self.stuck:
            raise Fatal(f"ip addr del {vip} dev nowhere0: Operation not permitted")
        found = vip in self.held
        self.held.discard(vip)
        self.events.append(f"{self.name} del {vip}")
        return found

    def labelled(self, label):
        return {a for a in self.held if self.labels.get(a) == label}

    def close(self):
        pass


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


# --- the handover grace (nft stubbed: its text is tests/unit/test_nft.py's, the real thing tests/lab's) ---

GRACE_INI = """
[global]
state_dir = {tmp}/state
run_dir = {tmp}/run
[service web]
address = 10.0.0.100
port = 80
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lvsknone0
arp_repeat = 0
handover_grace = {grace}
[node a]
path.hb = 10.9.0.1
path.front = 10.0.0.2
[node b]
path.hb = 10.9.0.2
path.front = 10.0.0.3
"""


@pytest.fixture
def grace(tmp_path, monkeypatch):
    """(config with a 0.2 s grace, events: nft scripts and address changes in order)."""
    from lvskit import nft
    events = []
    monkeypatch.setattr(nft, "load", lambda text, what, missing_ok=False: events.append(text) or True)
    monkeypatch.setattr(takeover.Director, "_ipvs", lambda self, role, table=True: True)
    return config.parse(GRACE_INI.format(tmp=tmp_path, grace="200ms"), "t.ini"), events


def test_a_failback_forwards_to_the_previous_holder_from_before_the_vips_and_for_the_grace(grace):
    import time
    cfg, events = grace
    # own address 10.0.0.2/24 on the VIP's interface: the peer's front address is there
    addrs = FakeAddresses(held={"10.0.0.2/24"}, events=events)
    assert serve(cfg, addrs, "acquire b\n") == ["ready standby", "done active"]
    loads = [e for e in events if "lvskit_grace" in e]
    assert 'dup to 10.0.0.3 device "lvsknone0" drop' in loads[-1]
    assert events.index(loads[-1]) < events.index("eth add 10.0.0.100/32")      # before the VIP
    deadline = time.monotonic() + 5
    while not events[-1].startswith("table ip lvskit_grace {}\ndelete") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events[-1] == "table ip lvskit_grace {}\ndelete table ip lvskit_grace\n"    # the grace ended


def test_a_crash_takeover_has_no_grace(grace):
    cfg, events = grace
    assert serve(cfg, FakeAddresses(held={"10.0.0.2/24"}, events=events), "acquire\n") == [
        "ready standby", "done active"]
    assert not any("dup to" in e for e in events)


def test_the_previous_holder_keeps_the_vip_on_lo_without_arp_for_the_grace(grace):
    cfg, events = grace
    lo = FakeAddresses(events=events, name="lo")
    d = takeover.Director(cfg, addresses=FakeAddresses(held={"10.0.0.100/32"}, events=events),
                          loopback=lambda: lo)
    out = io.StringIO()
    takeover.serve(d, io.StringIO("release\n"), out)
    assert out.getvalue().splitlines() == ["ready active", "done standby"]
    silence = next(e for e in events if "arp saddr ip 10.0.0.100 drop" in e)
    # ARP silenced, then the VIP local on lo, then gone from the interface: never a moment without it
    assert events.index(silence) < events.index("lo add 10.0.0.100/32") < events.index("eth del 10.0.0.100/32")
    assert lo.labels["10.0.0.100/32"] == takeover.LABEL
    assert rolefile.read_role(cfg) == STANDBY
    d.grace.wait()
    assert "lo del 10.0.0.100/32" in events and not lo.held
    assert events[-1] == "table arp lvskit_grace {}\ndelete table arp lvskit_grace\n"


def test_a_grace_nft_refuses_is_a_plain_release(grace, monkeypatch):
    from lvskit import nft
    cfg, events = grace
    monkeypatch.setattr(nft, "load", lambda text, what, missing_ok=False: False)
    lo = FakeAddresses(events=events, name="lo")
    addrs = FakeAddresses(held={"10.0.0.100/32"}, events=events)
    d = takeover.Director(cfg, addresses=addrs, loopback=lambda: lo)
    assert d.release(grace=True)
    assert not addrs.held and not lo.held and d.grace.kind is None


def test_grace_zero_is_off(tmp_path, monkeypatch):
    from lvskit import nft
    called = []
    monkeypatch.setattr(nft, "load", lambda *a, **kw: called.append(a) or True)
    cfg = config.parse(GRACE_INI.format(tmp=tmp_path, grace="0"), "t.ini")
    d = takeover.Director(cfg, addresses=FakeAddresses(held={"10.0.0.100/32", "10.0.0.2/24"}),
                          loopback=lambda: FakeAddresses(name="lo"))
    d.start_forwarding("b")
    assert d.release(grace=True) and called == [] and d.grace.kind is None


def test_the_plans_show_the_grace_rules(grace):
    cfg, _ = grace
    d = takeover.Director(cfg, addresses=FakeAddresses(held={"10.0.0.2/24"}))
    acquire = "\n".join(d.plan(acquire=True, peer="b"))
    assert 'dup to 10.0.0.3 device "lvsknone0" drop' in acquire
    assert acquire.index("dup to") < acquire.index("ip addr add 10.0.0.100/32 dev lvsknone0")
    assert "dup to" not in "\n".join(d.plan(acquire=True))          # no peer: a crash takeover
    release = "\n".join(d.plan(acquire=False))
    assert "arp saddr ip 10.0.0.100 drop" in release
    assert release.index("ip addr add 10.0.0.100/32 dev lo label lo:lvskit") < release.index(
        "ip addr del 10.0.0.100/32 dev lvsknone0") < release.index("ip addr del 10.0.0.100/32 dev lo")
