"""HAProxy agent-check lines: what we send, what we accept, what we refuse."""
import pytest

from lvskit.agentproto import AgentError, Answer, format_answer, parse


@pytest.mark.parametrize("line, state, cap", [
    (b"up 73%\n", "up", 0.73),
    (b"73%\n", "up", 0.73),
    (b"up,73%\r\n", "up", 0.73),
    (b"ready\t100%", "up", 1.0),
    (b"drain\n", "drain", None),
    (b"maint 20%\n", "maint", 0.2),
    (b"down #disk full\n", "down", None),
    (b"stopped\n", "down", None),
    (b"0%\n", "up", 0.0),
    (b"UP 12.5% maxconn:30\n", "up", 0.125),
])
def test_good_lines(line, state, cap):
    a = parse(line, "agent 10.0.0.1:7766")
    assert a.state == state
    assert a.capacity == (pytest.approx(cap) if cap is not None else None)


def test_note_and_maxconn_are_kept():
    a = parse("up 50% maxconn:12 # busy compile\n")
    assert (a.maxconn, a.note) == (12, "busy compile")


@pytest.mark.parametrize("line, why", [
    (b"", "empty"),
    (b"\n", "empty"),
    (b"up 101%\n", "out of range"),
    (b"up -5%\n", "unknown word"),
    (b"up 50% 60%\n", "two percentages"),
    (b"up drain\n", "two states"),
    (b"HTTP/1.0 200 OK\n", "unknown word"),
    (b"SSH-2.0-OpenSSH_9.2\n", "unknown word"),
    (b"up 50%\nup 60%\n", "more than one line"),
    (b"up \xff%\n", "not ASCII"),
    (b"x" * 300, "longer than"),
    (b"maxconn:5\n", "neither a state nor a percentage"),
    (b"nan%\n", "unknown word"),
])
def test_garbage_is_refused_naming_the_peer(line, why):
    with pytest.raises(AgentError) as e:
        parse(line, "agent 10.0.0.9:7766")
    assert str(e.value).startswith("agent 10.0.0.9:7766: ")
    assert why in str(e.value)


def test_format_round_trips():
    assert format_answer("up", 0.734) == "up 73%\n"
    assert format_answer("drain") == "drain\n"
    assert format_answer("up", 1.7) == "up 100%\n"          # clamped, never out of range
    assert format_answer("maint", 0.5, "kernel\nupgrade") == "maint 50% #kernel?upgrade\n"
    for state in ("up", "drain", "maint", "down"):
        assert parse(format_answer(state, 0.42)).state == state
    with pytest.raises(ValueError):
        format_answer("sleepy")


def test_usable_capacity():
    assert Answer("up", 0.3).usable() == 0.3
    assert Answer("up", None).usable() == 1.0
    assert Answer("drain", 0.9).usable() == 0.0
