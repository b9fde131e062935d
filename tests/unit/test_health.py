import json
import os

from lvskit import config, health
from lvskit.config import Check
from lvskit.health import DOWN, HELD, MAINT, UNKNOWN, UP, WARNING, Result, Track, advance

CHK = Check(kind="tcp", rise=2, fall=3, flap_changes=4, flap_window=600, hold_down=300)


def feed(statuses, track=None, check=CHK, t0=1000.0, dt=5.0):
    track = track or Track()
    states = []
    for i, s in enumerate(statuses):
        track = advance(track, Result(s, f"r{i}"), t0 + i * dt, check)
        states.append(track.state)
    return track, states


def test_first_definite_result_decides_at_once():
    assert feed([DOWN])[1] == [DOWN]
    assert feed([UP])[1] == [UP]
    assert feed([UNKNOWN, UNKNOWN, UP])[1] == [UNKNOWN, UNKNOWN, UP]


def test_goes_down_after_fall_failures_in_a_row_only():
    _, states = feed([UP, DOWN, DOWN, UP, DOWN, DOWN, DOWN])
    assert states == [UP, UP, UP, UP, UP, UP, DOWN]


def test_comes_back_after_rise_successes_in_a_row():
    _, states = feed([DOWN, UP, DOWN, UP, UP])
    assert states == [DOWN, DOWN, DOWN, DOWN, UP]
    t, _ = feed([DOWN, UP])
    assert t.reason.startswith("rising 1/2")


def test_unknown_keeps_the_state_and_the_counters():
    t, states = feed([UP, DOWN, DOWN, UNKNOWN, UNKNOWN, DOWN])
    assert states == [UP, UP, UP, UP, UP, DOWN]
    t, _ = feed([DOWN, UNKNOWN])
    assert t.state == DOWN and t.last == UNKNOWN


def test_warning_counts_as_up_and_is_not_a_flap():
    t, states = feed([UP, WARNING, UP, WARNING])
    assert states == [UP, WARNING, UP, WARNING]
    assert t.up is True and t.changes == ()


def test_maintenance_takes_out_at_once_then_needs_rise():
    _, states = feed([UP, MAINT, MAINT, UP, UP])
    assert states == [UP, MAINT, MAINT, MAINT, UP]


def test_flapping_server_is_held_down_for_hold_down():
    check = Check(kind="tcp", rise=1, fall=1, flap_changes=4, flap_window=600, hold_down=300)
    # up, down, up, down: 3 changes; the 4th (back up) trips the damper.
    t, states = feed([UP, DOWN, UP, DOWN, UP, UP, UP], check=check, dt=10)
    assert states[:4] == [UP, DOWN, UP, DOWN]
    assert states[4:] == [HELD, HELD, HELD]
    assert "flapping" in t.reason and t.held_until == 1000 + 40 + 300
    t = advance(t, Result(UP, "ok"), t.held_until + 1, check)
    assert t.state == UP


def test_slow_changes_are_not_flapping():
    check = Check(kind="tcp", rise=1, fall=1, flap_changes=3, flap_window=60, hold_down=300)
    _, states = feed([UP, DOWN, UP, DOWN, UP], check=check, dt=100)
    assert HELD not in states


def test_flap_damping_off_with_zero():
    check = Check(kind="tcp", rise=1, fall=1, flap_changes=0)
    _, states = feed([UP, DOWN] * 5, check=check, dt=1)
    assert HELD not in states


def test_keep_last_healthy_set():
    up, down = Track(state=UP), Track(state=DOWN)
    before = {"a": up, "b": down, "c": up}
    after = health.keep_last_healthy(before, {"a": down, "b": down, "c": down})
    assert {e for e, t in after.items() if t.kept} == {"a", "c"}
    # the next round keeps the same set even though none was up "before"
    again = health.keep_last_healthy(after, {e: t for e, t in after.items()})
    assert {e for e, t in again.items() if t.kept} == {"a", "c"}
    # one back up: nothing is kept any more
    back = health.keep_last_healthy(again, dict(again, b=Track(state=UP)))
    assert not any(t.kept for t in back.values())


def test_state_file_round_trip_and_garbage(tmp_path, capsys):
    cfg = config.parse(f"[global]\nstate_dir = {tmp_path}\n")
    path = str(tmp_path / "health.json")
    t = Track(state=HELD, ok=0, bad=2, reason="x", changes=(1.0, 2.0), held_until=9.0)
    health.save(cfg, health.View({"web": {"10.0.0.1:80": t}}, {"web": 5.0}))
    data = json.load(open(path))
    assert data["services"]["web"]["10.0.0.1:80"]["up"] is False
    assert health.read(cfg) == health.View({"web": {"10.0.0.1:80": t}}, {"web": 5.0})
    capsys.readouterr()
    # a file not of its shape is no file at all, with one warning that says where
    open(path, "w").write('{"services": {"web": {"a": {"state": "bogus"}, "b": 7, "c": {"ok": "x"}}}}')
    assert health.read(cfg) == health.View()
    assert health.read(cfg) == health.View()
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{__import__('lvskit').log.program()}: {path}: ignoring this state file: "
                   "services.web.a.state: want one of up, down, warning, unknown, maint, held, not 'bogus'"]
    open(path, "w").write("not json")
    assert health.read(cfg) == health.View()
    os.unlink(path)
    assert health.read(cfg) == health.View()


def test_a_hand_written_entry_says_up_or_down():
    """{"up": false} alone, as a sysadmin (or an older check-real) may write it, is a server down."""
    assert Track.from_json({"up": False}).up is False
    assert Track.from_json({"up": True}).state == UP
    assert Track.from_json({}).up is None
    assert Track.from_json({"up": True, "state": "down"}).state == DOWN     # the state, when there is one
