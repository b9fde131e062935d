"""HAProxy agent-check lines: what we send, what we accept, what we refuse.

The rules are HAProxy 2.6's (src/tcpcheck.c, tcpcheck_agent_expect_reply);
tests/netns/test_haproxy_agent.py checks the lines we send against a real
haproxy."""
import pytest

from lvskit.agentproto import MAX_LINE, AgentError, Answer, format_answer, parse


@pytest.mark.parametrize("line, state, cap", [
    (b"up 73%\n", "up", 0.73),
    (b"73%\n", "up", 0.73),
    (b"up,73%\r\n", "up", 0.73),
    (b"ready\t100%", "up", 1.0),
    (b"drain\n", "drain", None),
    (b"maint 20%\n", "maint", 0.2),
    (b"down #disk full\n", "down", None),
    (b"stopped\n", "down", None),
    (b"fail\n", "down", None),
    (b"0%\n", "up", 0.0),
    (b"UP 12% maxconn:30\n", "up", 0.12),
    # a health word and an admin word together, in any order: what lvs-agent sends
    (b"up ready 73%\n", "up", 0.73),
    (b"73% ready up\n", "up", 0.73),
    (b"up drain 40%\n", "drain", 0.4),
    (b"drain,up,40%\n", "drain", 0.4),
    (b"up maint 40%\n", "maint", 0.4),
    (b"down ready 40%\n", "down", 0.4),       # DOWN whatever the admin state
    (b"stopped maint\n", "down", None),
    # several of one kind: the last one wins
    (b"up down\n", "down", None),
    (b"down up\n", "up", None),
    (b"drain ready\n", "up", None),
    (b"50% 60%\n", "up", 0.6),
    # above 100%: HAProxy takes it (weight capped at 256); at most all of it here
    (b"up 150%\n", "up", 1.5),
    (b"up 99999999999999999999%\n", "up", 256.0),
    (b"007%\n", "up", 0.07),
    # HAProxy reads the first line only, to the first CR or LF
    (b"up 50%\nHTTP/1.0 200 OK\n", "up", 0.5),
    (b"up 50%\rgarbage", "up", 0.5),
    (b"  ,up \t 50% ,\n", "up", 0.5),
])
def test_good_lines(line, state, cap):
    a = parse(line, "agent 10.0.0.1:7766")
    assert a.state == state
    assert a.capacity == (pytest.approx(cap) if cap is not None else None)


def test_words_as_said_note_and_maxconn_are_kept():
    a = parse("up 50% maxconn:12 # busy compile\n")
    assert (a.maxconn, a.note, a.health, a.admin) == (12, "busy compile", "up", None)
    a = parse(b"Drain 5% #\xe9t\xe9: caf\xc3\xa9 closed\n")     # any bytes in a description
    assert (a.state, a.admin, a.note) == ("drain", "drain", "?t?: caf?? closed")
    assert parse(b"up,#comma then note\n").note == "comma then note"


@pytest.mark.parametrize("line, why", [
    (b"", "empty"),
    (b"\n", "empty"),
    (b" \t,\r\n", "empty"),
    (b"# only a note\n", "no state and no weight"),
    (b"maxconn:5\n", "no state and no weight"),
    (b"up -5%\n", "unknown word"),
    (b"up 12.5%\n", "bad weight '12.5%'"),
    (b"up 50%x\n", "bad weight"),
    (b"up 5%0%\n", "bad weight"),
    (b"up 50\n", "unknown word '50'"),
    (b"up maxconn:x\n", "bad maxconn"),
    (b"failed\n", "unknown word 'failed'"),       # HAProxy's word is "fail"
    (b"up#note\n", "unknown word 'up#note'"),     # "#" starts a note only at a word's start
    (b"HTTP/1.0 200 OK\n", "unknown word"),
    (b"SSH-2.0-OpenSSH_9.2\n", "unknown word"),
    (b"up \xff%\n", "unknown word"),
    (b"up 50%\x00\n", "NUL"),
    (b"x" * (MAX_LINE + 1), "longer than"),
    (b"nan%\n", "unknown word"),
])
def test_garbage_is_refused_naming_the_peer(line, why):
    with pytest.raises(AgentError) as e:
        parse(line, "agent 10.0.0.9:7766")
    assert str(e.value).startswith("agent 10.0.0.9:7766: ")
    assert why in str(e.value)
    assert "\n" not in str(e.value)


def test_a_long_description_is_still_a_line():
    a = parse(b"up 50% # " + b"x" * 1000 + b"\n")
    assert a.capacity == 0.5 and len(a.note) == 1000


def test_format_says_health_admin_and_weight_every_time():
    assert format_answer("up", 0.734) == "up ready 73%\n"
    assert format_answer("drain") == "up drain\n"
    assert format_answer("maint", 0.2) == "up maint 20%\n"
    assert format_answer("down", 0.2) == "down ready 20%\n"
    assert format_answer("up", 1.7) == "up ready 100%\n"          # clamped, never out of range
    assert format_answer("maint", 0.5, "kernel\nupgrade") == "up maint 50% #kernel?upgrade\n"
    with pytest.raises(ValueError):
        format_answer("sleepy")


@pytest.mark.parametrize("state", ["up", "drain", "maint", "down"])
def test_format_round_trips(state):
    a = parse(format_answer(state, 0.42, "why"))
    assert (a.state, a.capacity, a.note) == (state, 0.42, "why")


def test_usable_capacity():
    assert Answer("up", 0.3).usable() == 0.3
    assert Answer("up", None).usable() == 1.0
    assert Answer("up", 1.5).usable() == 1.0
    assert Answer("drain", 0.9).usable() == 0.0
    assert parse(b"down ready 90%").usable() == 0.0
