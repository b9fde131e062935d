"""lvs-announce's gate (gate.py): the verdict, the transitions, and the script.

The table is the fake kernel's (fakekernel.py), loaded by the same
sync.reconcile ipvs-sync uses; BIRD is fakebirdc.py, which answers as
birdc 2.0.12 does and logs every call.  The real BIRD is in
tests/netns/test_announce_gate.py, the real IPVS in tests/lab/test_announce_gate.py.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lvskit import config, gate, health, log, state, sync
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
address = 192.0.2.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
check_interval = 2
check_timeout = 1
real.198.51.100.13 = weight=1
real.198.51.100.43 = weight={weight}
[service www6]
address = 2001:db8::26
port = 80
scheduler = mh
real.2001:db8::13 = weight=1
"""

V4_ONLY = CONFIG.split("[service www6]")[0]


class Lab:
    """A config, a fake kernel loaded from it, fresh health, and a fake birdc with both protocols down."""

    def __init__(self, tmp, text=CONFIG, weight=1):
        self.tmp = tmp
        self.birdc_dir = tmp / "birdc"
        self.birdc_dir.mkdir()
        self.set_states(lvskit_vip="down", lvskit_vip_v6="down")
        self.path = tmp / "lvskit.ini"
        birdc = f"{sys.executable} {HERE}/fakebirdc.py {self.birdc_dir}"
        self.path.write_text(text.format(tmp=tmp, birdc=birdc, weight=weight))
        self.cfg = config.load(str(self.path))
        self.kernel = FakeKernel()
        sync.reconcile(self.cfg, self.kernel)
        self.checked(time.time())

    def checked(self, at):
        health.save(self.cfg, health.View(checked={"www": at}))

    def set_states(self, **states):
        (self.birdc_dir / "protocols.json").write_text(json.dumps(states))

    def states(self):
        return json.loads((self.birdc_dir / "protocols.json").read_text())

    def calls(self):
        """birdc's calls so far, then forgotten."""
        log_path = self.birdc_dir / "calls.log"
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        log_path.write_text("")
        return lines

    def saved(self):
        with open(state.announce_path(self.cfg)) as f:
            return json.load(f)


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path)


@pytest.fixture
def said(monkeypatch):
    """The log lines gate.py writes, as (level, line)."""
    lines = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(log, level, lambda m, level=level: lines.append((level, m)))
    return lines


# --- the verdict (judge: lvskit's side) ---------------------------------------------------

def test_all_hold_announces(lab):
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.announce, v.key) == (True, gate.OK), v


def test_a_drain_flag_withdraws_and_names_its_reason(lab):
    os.makedirs(lab.cfg.state_dir, exist_ok=True)
    with open(state.drain_path(lab.cfg), "w") as f:
        f.write("kernel upgrade\n")
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.announce, v.key) == (False, gate.DRAIN)
    assert "kernel upgrade" in v.why


def test_an_empty_table_withdraws_naming_the_first_missing_service(lab):
    lab.kernel.table.clear()
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.announce, v.key) == (False, gate.EMPTY)
    assert v.why == "www (tcp 192.0.2.26:80) is not in the kernel's IPVS table"


def test_a_missing_real_server_is_drift(lab):
    svc = next(s for s in lab.kernel.table.values() if s.key.address == "192.0.2.26")
    del svc.dests[next(iter(svc.dests))]
    v = gate.judge(lab.cfg, lab.kernel)
    assert v.key == gate.TABLE and "1 changes pending, first: ipvsadm -a" in v.why, v


def test_a_weight_changed_by_hand_withdraws(lab):
    svc = next(s for s in lab.kernel.table.values() if s.key.address == "192.0.2.26")
    key = next(iter(svc.dests))
    svc.dests[key] = svc.dests[key].replace(weight=7)
    v = gate.judge(lab.cfg, lab.kernel)
    assert v.key == gate.TABLE and "ipvsadm -e" in v.why, v


def test_a_table_that_cannot_be_read_withdraws(lab):
    def broken(keys=None):
        raise OSError(1, "Operation not permitted")
    lab.kernel.read = broken
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.key, v.why) == (gate.EMPTY, "cannot read the IPVS table: Operation not permitted")


def test_a_service_without_weight_in_the_kernel_withdraws(tmp_path):
    lab = Lab(tmp_path, text=CONFIG.replace("real.198.51.100.13 = weight=1", "real.198.51.100.13 = weight=0"),
              weight=0)
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.announce, v.key) == (False, gate.EMPTY)
    assert v.why.startswith("www (")


def test_health_fresh_for_three_check_rounds_and_a_timeout(lab):
    now = time.time()
    bound = gate.fresh_bound(lab.cfg.services[0])
    assert bound == 3 * 2 + 1
    lab.checked(now - bound + 0.5)
    assert gate.judge(lab.cfg, lab.kernel, now).announce
    lab.checked(now - bound - 0.5)
    v = gate.judge(lab.cfg, lab.kernel, now)
    assert (v.announce, v.key) == (False, gate.HEALTH)
    assert "last checked 8s ago" in v.why


def test_never_checked_withdraws(lab):
    os.unlink(state.health_path(lab.cfg))
    v = gate.judge(lab.cfg, lab.kernel)
    assert (v.key, v.why.split(" (")[0]) == (gate.HEALTH, "www never checked")


# --- rounds: BIRD made to agree, transitions -----------------------------------------------

def test_a_round_enables_both_protocols_then_the_next_only_looks(lab, said):
    g = gate.Gate(lab.kernel)
    assert g.round(lab.cfg).announce
    assert lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"}
    assert lab.calls() == ["show protocols", "enable lvskit_vip", "enable lvskit_vip_v6"]
    assert said == [("info", "announcing 192.0.2.26, 2001:db8::26: 2 services in line with the config, "
                             "each with a real server in, health fresh")]
    assert g.round(lab.cfg).announce
    assert lab.calls() == ["show protocols"]
    assert len(said) == 1
    s = lab.saved()
    assert (s["announced"], s["key"]) == (True, "ok") and s["since"] <= s["checked"]
    assert s["every"] is None                   # one round: lvs-status keeps its own bound
    g.every = 5.0
    g.round(lab.cfg)
    assert lab.saved()["every"] == 5.0          # resident: lvs-status allows three of its rounds


def test_no_ipv6_vip_leaves_the_v6_protocol_alone(tmp_path):
    lab = Lab(tmp_path, text=V4_ONLY)
    gate.Gate(lab.kernel).round(lab.cfg)
    assert lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "down"}


def test_a_configure_that_disabled_the_protocol_is_undone_next_round(lab, said):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    lab.set_states(lvskit_vip="down", lvskit_vip_v6="down")     # what `birdc configure` does
    lab.calls()
    assert g.round(lab.cfg).announce
    assert lab.calls() == ["show protocols", "enable lvskit_vip", "enable lvskit_vip_v6"]
    assert said[-1] == ("warning", "lvskit_vip, lvskit_vip_v6 found disabled in BIRD (a birdc configure "
                                   "or a restart): enabled again")


def test_an_emptied_table_withdraws_at_once_with_its_reason_and_a_repair_announces_again(lab, said):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    lab.kernel.table.clear()        # ipvsadm -C
    v = g.round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.EMPTY)
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert said[-1] == ("warning", "withdrawing 192.0.2.26, 2001:db8::26: www (tcp 192.0.2.26:80) is not "
                                   "in the kernel's IPVS table")
    g.round(lab.cfg)
    assert len(said) == 2, "one line per transition"
    assert (lab.saved()["announced"], lab.saved()["key"]) == (False, "empty")
    sync.reconcile(lab.cfg, lab.kernel)     # ipvs-sync
    assert g.round(lab.cfg).announce
    assert lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"}
    assert said[-1][1].startswith("announcing ")


def test_drift_withdraws_when_it_is_there_two_rounds_in_a_row(lab, said):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    svc = next(s for s in lab.kernel.table.values() if s.key.address == "192.0.2.26")
    key = next(iter(svc.dests))
    right = svc.dests[key]
    svc.dests[key] = right.replace(weight=0)    # check-real's kernel change, its health.json not yet
    assert g.round(lab.cfg).announce
    svc.dests[key] = right                      # ... and in line again by the next round
    assert g.round(lab.cfg).announce
    svc.dests[key] = right.replace(weight=0)    # a difference that stays
    assert g.round(lab.cfg).announce
    v = g.round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.TABLE) and "ipvsadm -e" in v.why
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert [level for level, _ in said] == ["info", "warning"]


def test_one_round_withdraws_on_drift_at_once(lab):
    svc = next(s for s in lab.kernel.table.values() if s.key.address == "192.0.2.26")
    key = next(iter(svc.dests))
    svc.dests[key] = svc.dests[key].replace(weight=0)
    assert gate.Gate(lab.kernel).round(lab.cfg).key == gate.TABLE


def test_a_protocol_enabled_by_hand_while_withdrawn_is_disabled_again(lab, said):
    lab.kernel.table.clear()
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    lab.set_states(lvskit_vip="up", lvskit_vip_v6="down")
    g.round(lab.cfg)
    assert lab.states()["lvskit_vip"] == "down"
    assert said[-1][0] == "warning" and said[-1][1].startswith("lvskit_vip found enabled in BIRD")


def test_bird_without_the_protocols_withdraws(lab):
    lab.set_states(lvskit_vip="down")
    v = gate.Gate(lab.kernel).round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.BIRD)
    assert v.why.startswith("BIRD has no protocol lvskit_vip_v6 (does bird.conf include")
    assert lab.states() == {"lvskit_vip": "down"}


def test_a_failed_enable_takes_back_the_other_protocol(lab):
    (lab.birdc_dir / "refuse-lvskit_vip_v6").write_text("")
    v = gate.Gate(lab.kernel).round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.BIRD)
    assert v.why.startswith("BIRD did not enable: ") and "enable lvskit_vip_v6: syntax error" in v.why
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}


def test_bird_not_answering_withdraws_as_far_as_it_can_say(lab):
    (lab.birdc_dir / "refuse").write_text("")
    v = gate.Gate(lab.kernel).round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.BIRD)
    assert v.why.endswith("show protocols: Unable to connect to server control socket (/run/bird/bird.ctl): "
                          "No such file or directory")


def test_a_hung_birdc_costs_the_round_its_timeout_only(lab):
    (lab.birdc_dir / "hang").write_text("")
    g = gate.Gate(lab.kernel, timeout=0.5)
    start = time.monotonic()
    v = g.round(lab.cfg)
    took = time.monotonic() - start
    assert (v.key, v.why.endswith("show protocols: timed out")) == (gate.BIRD, True)
    assert took < 10, took      # the fake sleeps 60 s: killed at the timeout


def test_the_drain_is_looked_at_again_just_before_enabling(lab, monkeypatch):
    looks = []

    def drained(cfg):       # no flag at the judging, a flag by the time BIRD is asked
        looks.append(1)
        return None if len(looks) == 1 else "came meanwhile"
    monkeypatch.setattr(gate, "drained", drained)
    v = gate.Gate(lab.kernel).round(lab.cfg)
    assert (v.announce, v.key) == (False, gate.DRAIN)
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}


def test_a_drain_during_an_enable_waits_for_it_and_withdraws_after(lab, monkeypatch):
    """A round has looked at the drain flag (none) and is enabling when --drain comes: the
    drain waits for the round's switch lock, so the enable never lands after its disable."""
    enabling, go, drain_waits = threading.Event(), threading.Event(), threading.Event()
    real_switch, real_switching = gate._switch, gate.switching

    def paused_switch(cfg, states, want, timeout):
        if any(on for _, on in want):
            enabling.set()
            assert go.wait(30)
        return real_switch(cfg, states, want, timeout)

    def switching(cfg, wait):
        if threading.current_thread().name == "drain":
            drain_waits.set()
        return real_switching(cfg, wait)
    monkeypatch.setattr(gate, "_switch", paused_switch)
    monkeypatch.setattr(gate, "switching", switching)
    g = gate.Gate(lab.kernel)
    drained = []
    enabling_round = threading.Thread(target=lambda: drained.append(g.round(lab.cfg)))
    enabling_round.start()
    assert enabling.wait(30)
    draining = threading.Thread(target=lambda: drained.append(gate.drain(lab.cfg, "upgrade")), name="drain")
    draining.start()
    assert drain_waits.wait(30)
    assert not os.path.exists(state.drain_path(lab.cfg))    # the flag is written under the lock
    go.set()
    enabling_round.join(30)
    draining.join(30)
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert open(state.drain_path(lab.cfg)).read() == "upgrade\n"
    assert lab.saved()["key"] == "drain"


def test_a_dry_run_says_what_it_would_run_and_runs_nothing_but_a_look(lab):
    v, commands = gate.Gate(lab.kernel).round(lab.cfg, dry_run=True)
    assert v.announce
    assert [c.split()[-2:] for c in commands] == [["enable", "lvskit_vip"], ["enable", "lvskit_vip_v6"]]
    assert lab.calls() == ["show protocols"]
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert not os.path.exists(state.announce_path(lab.cfg))


def test_withdraw_disables_both_and_says_so(lab, said):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    assert gate.withdraw(lab.cfg, "lvs-announce stopped", gate=g) is None
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert said[-1] == ("info", "withdrawing 192.0.2.26, 2001:db8::26: lvs-announce stopped")
    assert (lab.saved()["announced"], lab.saved()["reason"]) == (False, "lvs-announce stopped")


# --- the script ---------------------------------------------------------------------------

def script(lab, *args, fake_table=True, **kw):
    """bin/lvs-announce on a fake kernel: the config's table when fake_table, else an empty one."""
    prog = f"""
import runpy, sys, types
sys.path[:0] = [{HERE!r}, {os.path.join(ROOT, 'lib')!r}]
from fakekernel import FakeKernel
from lvskit import config, sync
def kernel():
    k = FakeKernel()
    if {fake_table!r}:
        sync.reconcile(config.load({str(lab.path)!r}), k, dry_run=False)
    return k
fake = types.ModuleType("lvskit.ipvs")
fake.Kernel = kernel
sys.modules["lvskit.ipvs"] = fake
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
    argv = [sys.executable, "-S", "-c", prog, os.path.join(ROOT, "bin", "lvs-announce"), "-c", str(lab.path),
            *args]
    env = {**os.environ, "LVSKIT_NO_SYSLOG": "1"}
    if kw.pop("background", False):
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def test_one_round_announced_is_quiet_and_exit_0(lab):
    r = script(lab)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"}


def test_one_round_withdrawn_says_why_and_exit_7(lab):
    r = script(lab, fake_table=False)
    assert r.returncode == 7, r
    assert r.stderr == "lvs-announce: not announcing: www (tcp 192.0.2.26:80) is not in the kernel's IPVS table\n"
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}


def test_bird_refusing_is_exit_1(lab):
    (lab.birdc_dir / "refuse").write_text("")
    r = script(lab)
    assert r.returncode == 1 and "BIRD does not answer" in r.stderr, r


def test_mode_none_is_exit_6_but_withdraw_is_harmless(tmp_path):
    lab = Lab(tmp_path, text=CONFIG.replace("mode = bgp", "mode = none"))
    r = script(lab)
    assert r.returncode == 6 and "[announce] mode is not bgp" in r.stderr, r
    r = script(lab, "--withdraw")
    assert (r.returncode, r.stderr) == (0, "")
    assert lab.calls() == []


def test_dry_run_prints_the_verdict_and_commands(lab):
    r = script(lab, "-n")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# announce: 2 services in line")
    assert [l.split()[-2:] for l in lines[1:]] == [["enable", "lvskit_vip"], ["enable", "lvskit_vip_v6"]]
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}


def test_drain_withdraws_at_once_and_keeps_it_until_undrain(lab):
    assert script(lab).returncode == 0
    r = script(lab, "--drain", "kernel upgrade")
    assert (r.returncode, r.stderr) == (0, ""), r
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert open(state.drain_path(lab.cfg)).read() == "kernel upgrade\n"
    # no resident gate here: the verdict says drain at once (lvs-status --check: OK, planned)
    with open(state.announce_path(lab.cfg)) as f:
        assert json.load(f)["key"] == "drain"
    r = script(lab)
    assert r.returncode == 7 and "drained" in r.stderr and "kernel upgrade" in r.stderr
    assert script(lab, "--undrain").returncode == 0
    assert not os.path.exists(state.drain_path(lab.cfg))
    assert script(lab).returncode == 0
    assert lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"}


def wait_for(what, timeout=30):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_resident_announces_and_sigterm_withdraws_with_exit_0(lab):
    p = script(lab, "--every", "0.2", background=True)
    try:
        wait_for(lambda: lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"})
        lab.set_states(lvskit_vip="down", lvskit_vip_v6="down")     # a birdc configure
        wait_for(lambda: lab.states() == {"lvskit_vip": "up", "lvskit_vip_v6": "up"})
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # quiet on success: the one line on stderr is the warning of the protocols found disabled
    assert (p.returncode, err) == (0, "lvs-announce: lvskit_vip, lvskit_vip_v6 found disabled in BIRD "
                                      "(a birdc configure or a restart): enabled again\n"), err
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
    assert (lab.saved()["announced"], lab.saved()["reason"]) == (False, "lvs-announce stopped")


def test_a_second_resident_is_busy(lab):
    p = script(lab, "--every", "0.2", background=True)
    try:
        wait_for(lambda: lab.states()["lvskit_vip"] == "up")
        r = script(lab)
        assert r.returncode == 75 and "another lvs-announce is running" in r.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)


def test_a_config_reloaded_to_mode_none_withdraws(lab):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    none = config.load(str(lab.path)).replace(announce=lab.cfg.announce.replace(mode="none"))
    v = g.round(none)
    assert (v.announce, v.key) == (False, gate.CONFIG)
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}


def test_bird_silent_while_withdrawn_keeps_the_first_reason_and_says_it_once(lab, said):
    lab.kernel.table.clear()
    (lab.birdc_dir / "refuse").write_text("")
    g = gate.Gate(lab.kernel)
    assert g.round(lab.cfg).key == gate.EMPTY
    assert g.round(lab.cfg).key == gate.EMPTY
    assert [line for level, line in said if level == "warning"] == [
        f"cannot tell BIRD to withdraw: {lab.cfg.announce.birdc} show protocols: Unable to connect to "
        "server control socket (/run/bird/bird.ctl): No such file or directory"]


def test_withdraw_after_the_gate_keeps_its_reason_and_after_a_kill_says_stopped(lab):
    g = gate.Gate(lab.kernel)
    g.round(lab.cfg)
    gate.withdraw(lab.cfg, "lvs-announce stopped", gate=g)         # SIGTERM: the gate's own
    assert gate.withdraw(lab.cfg, "lvs-announce --withdraw") is None  # then ExecStopPost: nothing to do
    assert lab.saved()["reason"] == "lvs-announce stopped"
    gate.Gate(lab.kernel).round(lab.cfg)                            # announced, then killed
    assert gate.withdraw(lab.cfg, "lvs-announce --withdraw") is None
    assert (lab.saved()["announced"], lab.saved()["reason"]) == (False, "lvs-announce --withdraw")
    assert lab.states() == {"lvskit_vip": "down", "lvskit_vip_v6": "down"}
