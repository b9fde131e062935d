"""The one --every loop (lvskit.every): rounds, events, the reload rule, the end.

The signals are sent by the round itself (os.kill of our own pid), so every
event arrives at a known point and no test waits on a clock.
"""
import os
import signal

import pytest

from lvskit import config, every, log

TEXT = "[global]\nstate_dir = {d}\nrun_dir = {d}\n[service web]\naddress = 10.0.0.1\nport = 80\nreal.10.0.1.{n} =\n"


class Refused(Exception):
    pass


@pytest.fixture
def ini(tmp_path):
    path = tmp_path / "lvskit.ini"

    def write(n):
        tmp = tmp_path / "new"
        tmp.write_text(TEXT.format(d=tmp_path, n=n))
        os.replace(tmp, path)           # a new inode: another version, whatever the clock's grain
        return str(path)
    write(1)
    return write


def real(cfg):
    return cfg.services[0].reals[0].dest.address if cfg.services else None


def loop(path, script, **kw):
    """Run the loop; script[i](cfg, why) is round i; returns [(real server, why)] of each round."""
    seen = []

    def round_(cfg, why):
        seen.append((real(cfg), why))
        script[len(seen) - 1](cfg, why)
    assert every.run(path, config.load(path), 60, round_, **kw) == 0
    return seen


def stop(*_):
    os.kill(os.getpid(), signal.SIGTERM)


def test_sighup_reloads_and_sigterm_ends_between_rounds(ini):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def edit_and_hup(cfg, why):
        ini(2)
        os.kill(os.getpid(), signal.SIGHUP)
    path = ini(1)
    assert loop(path, [edit_and_hup, stop], settle=3600) == [("10.0.1.1", every.TIMER), ("10.0.1.2", every.SIGNAL)]
    assert {s: signal.getsignal(s) for s in before} == before       # the caller's handlers are back


def test_sigint_ends_it_too(ini):
    assert loop(ini(1), [lambda cfg, why: os.kill(os.getpid(), signal.SIGINT)]) == [("10.0.1.1", every.TIMER)]


def test_an_edited_config_is_read_once_settled_in_an_early_round(ini):
    path = ini(1)
    assert loop(path, [lambda cfg, why: ini(3), stop], settle=0) == [("10.0.1.1", every.TIMER), ("10.0.1.3", every.EDIT)]


def test_an_invalid_config_is_logged_and_the_previous_one_kept(ini, tmp_path, capsys):
    path = ini(1)
    log.setup("every", verbose=True, use_syslog=False)

    def garble(cfg, why):
        (tmp_path / "lvskit.ini").write_text("[service web]\nport = x\n")
        os.kill(os.getpid(), signal.SIGHUP)
    assert loop(path, [garble, stop]) == [("10.0.1.1", every.TIMER), ("10.0.1.1", every.SIGNAL)]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:" in err and err.endswith(" (keeping the previous config)\n")


def test_a_refused_config_gives_way_to_the_previous_one(ini, capsys):
    path = ini(1)
    log.setup("every", verbose=True, use_syslog=False)

    def refuse_2(cfg, why):
        if real(cfg) == "10.0.1.2":
            raise Refused("no, not .2")

    def edit_and_hup(cfg, why):
        ini(2)
        os.kill(os.getpid(), signal.SIGHUP)

    def refused_then_stop(cfg, why):
        stop()
        refuse_2(cfg, why)
    seen = loop(path, [edit_and_hup, refused_then_stop, stop], refused=Refused)
    assert seen == [("10.0.1.1", every.TIMER), ("10.0.1.2", every.SIGNAL), ("10.0.1.1", every.TIMER)]
    assert "no, not .2 (keeping the previous config)" in capsys.readouterr().err


def test_a_refused_first_config_is_said_once_and_tried_at_each_timed_round(ini, tmp_path, capsys):
    """No previous config to keep: the loop waits for a better one, saying why once."""
    path = ini(1)
    log.setup("every", verbose=True, use_syslog=False)
    rounds = []

    def refuse(cfg, why):
        rounds.append(why)
        if len(rounds) == 3:
            stop()
        raise Refused("no")
    assert every.run(path, config.load(path), 1e-9, refuse, refused=Refused) == 0
    assert rounds == [every.TIMER] * 3
    assert capsys.readouterr().err.count(": no\n") == 1


def test_a_watched_file_calls_an_early_round(ini, tmp_path):
    watched = tmp_path / "health.json"

    def touch(cfg, why):
        watched.write_text("{}")
    seen = loop(ini(1), [touch, stop], watch=lambda cfg: [str(watched)])
    assert seen == [("10.0.1.1", every.TIMER), ("10.0.1.1", every.WATCHED)]
