from lvskit.heartbeat import ACTIVE, HELD, STANDBY
from lvskit.roles import ACQUIRE, ANNOUNCE, RELEASE, PeerView, Policy, decide

P = Policy(deadtime=0.12, initdead=1.0, auto_failback=True, failback_delay=0.0)
NOFB = Policy(deadtime=0.12, initdead=1.0, auto_failback=False)


def peer(state, priority=100, last=10.0, since=0.0):
    return PeerView(priority, state, last, since)


def test_spare_takes_over_when_the_active_dies():
    peers = {"midas": peer(ACTIVE, 200, last=10.0)}
    assert decide("estepe", 100, STANDBY, peers, 10.1, 0, P, ["midas"]) is None
    assert decide("estepe", 100, STANDBY, peers, 10.13, 0, P, ["midas"]) == ACQUIRE


def test_higher_priority_standby_waits_for_nobody_lower_waits_for_it():
    both = {"estepe": peer(STANDBY, 100)}
    assert decide("midas", 200, STANDBY, both, 10.0, 0, P, ["estepe"]) == ACQUIRE
    assert decide("estepe", 100, STANDBY, {"midas": peer(STANDBY, 200)}, 10.0, 0, P, ["midas"]) is None


def test_initdead_waits_for_unheard_peers():
    assert decide("midas", 200, STANDBY, {}, 0.5, 0, P, ["estepe"]) is None
    assert decide("midas", 200, STANDBY, {}, 1.01, 0, P, ["estepe"]) == ACQUIRE
    # a peer heard during initdead: no need to wait
    assert decide("midas", 200, STANDBY, {"estepe": peer(STANDBY, last=0.4)}, 0.45, 0, P,
                  ["estepe"]) == ACQUIRE


def test_failback_is_make_before_break_on_and_off_and_delayed():
    spare_active = {"estepe": peer(ACTIVE, 100, last=10.0, since=0.0)}
    # the returning director takes the VIPs first (the spare then releases: rival rule)...
    assert decide("midas", 200, STANDBY, spare_active, 10.0, 0, P, ["estepe"]) == ACQUIRE
    assert decide("estepe", 100, ACTIVE, {"midas": peer(ACTIVE, 200)}, 10.0, 0, P, ["midas"]) == RELEASE
    # ...and the active spare never gives them up to a standby that has not taken them
    back = {"midas": peer(STANDBY, 200, last=10.0, since=9.0)}
    assert decide("estepe", 100, ACTIVE, back, 10.0, 0, P, ["midas"]) is None
    # without auto_failback the director stays standby
    assert decide("midas", 200, STANDBY, spare_active, 10.0, 0, NOFB, ["estepe"]) is None
    # with a delay: only once it has run failback_delay
    delayed = Policy(deadtime=0.12, auto_failback=True, failback_delay=5.0)
    assert decide("midas", 200, STANDBY, spare_active, 10.0, 8.0, delayed, ["estepe"]) is None
    assert decide("midas", 200, STANDBY, {"estepe": peer(ACTIVE, 100, last=13.0)}, 13.0, 8.0,
                  delayed, ["estepe"]) == ACQUIRE
    # never from a higher-ranked active node, and a lower-priority standby is no reason to release
    assert decide("estepe", 100, STANDBY, {"midas": peer(ACTIVE, 200)}, 10.0, 0, P, ["midas"]) is None
    assert decide("midas", 200, ACTIVE, {"estepe": peer(STANDBY, 100)}, 10.0, 0, P, ["estepe"]) is None


def test_split_brain_heal_leaves_exactly_one_active():
    for pa, pb in ((200, 100), (100, 200), (100, 100)):
        a = decide("a", pa, ACTIVE, {"b": peer(ACTIVE, pb)}, 10.0, 0, NOFB, ["b"])
        b = decide("b", pb, ACTIVE, {"a": peer(ACTIVE, pa)}, 10.0, 0, NOFB, ["a"])
        assert sorted([a, b]) == [ANNOUNCE, RELEASE]


def test_equal_priorities_deterministic_tie_break():
    # both standby, equal priority: exactly one of them acquires
    a = decide("alpha", 100, STANDBY, {"beta": peer(STANDBY, 100)}, 10.0, 0, P, ["beta"])
    b = decide("beta", 100, STANDBY, {"alpha": peer(STANDBY, 100)}, 10.0, 0, P, ["alpha"])
    assert (a, b) == (ACQUIRE, None)
    # with auto_failback the tie-break winner takes it back, and then it is stable
    assert decide("alpha", 100, STANDBY, {"beta": peer(ACTIVE, 100)}, 10.0, 0, P, ["beta"]) == ACQUIRE
    assert decide("beta", 100, STANDBY, {"alpha": peer(ACTIVE, 100)}, 10.0, 0, P, ["alpha"]) is None


def test_held_node_is_skipped_and_never_acts():
    held = {"midas": peer(HELD, 200)}
    assert decide("estepe", 100, STANDBY, held, 10.0, 0, P, ["midas"]) == ACQUIRE
    assert decide("midas", 200, HELD, {}, 100.0, 0, P, ["estepe"]) is None
    # a held director does not trigger failback either
    assert decide("estepe", 100, ACTIVE, held, 10.0, 0, P, ["midas"]) is None


def test_three_nodes_best_live_one_wins():
    peers = {"a": peer(ACTIVE, 300, last=5.0), "b": peer(STANDBY, 200), "c": peer(STANDBY, 100)}
    assert decide("b", 200, STANDBY, {k: v for k, v in peers.items() if k != "b"}, 10.0, 0, P, "ac") == ACQUIRE
    assert decide("c", 100, STANDBY, {k: v for k, v in peers.items() if k != "c"}, 10.0, 0, P, "ab") is None


def test_interface_role_asks_takeover_status_and_says_standby_when_it_cannot(tmp_path):
    from lvskit import rolefile
    assert rolefile.interface_role(["/bin/sh", "-c", 'test "$1" = status', "takeover"]) == ACTIVE
    assert rolefile.interface_role(["/bin/sh", "-c", "exit 7", "takeover"]) == STANDBY
    assert rolefile.interface_role([str(tmp_path / "no-such-takeover")]) == STANDBY


def test_interface_role_starts_no_thread(monkeypatch):
    """hb-send asks before it locks its memory: a thread's stack, kept mapped after it ends, would be locked too."""
    import threading
    from lvskit import rolefile

    def no_thread(self):
        raise AssertionError("a thread was started")
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    assert rolefile.interface_role(["/bin/sh", "-c", 'test "$1" = status', "takeover"]) == ACTIVE
