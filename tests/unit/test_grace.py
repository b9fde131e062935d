"""lvskit.grace's Grace: one grace at a time, ended by its own timer only (nft stubbed)."""
import threading

import pytest

from lvskit import grace, nft


class Lo:
    def __init__(self):
        self.held = set()

    def list(self):
        return set(self.held)

    def add(self, address, present=None, label=None):
        new = address not in self.held
        self.held.add(address)
        return new

    def delete(self, address):
        self.held.discard(address)

    def close(self):
        pass


@pytest.fixture
def loads(monkeypatch):
    out = []
    monkeypatch.setattr(nft, "load", lambda text, what, missing_ok=False: out.append(text) or True)
    return out


def test_an_earlier_graces_late_timer_does_not_end_the_current_one(loads):
    """A timer cancelled once it had already fired calls end(kind, expired=True) from its own
    thread: the grace started since then is not its to end."""
    expired, lo = [], Lo()
    g = grace.Grace(60, lambda: lo, expired.append)
    assert g.silence(["10.0.0.100"])
    g.silence(["10.0.0.100"])           # a second letting-go: the first grace ends, a new one starts
    late = threading.Thread(target=g.end, args=(grace.SILENCE, True))
    late.start()
    late.join()
    assert g.kind == grace.SILENCE and lo.held == {"10.0.0.100/32"} and expired == []
    g.end()                             # a change of role ends it at once, without the expiry
    assert g.kind is None and lo.held == set() and expired == []


def test_a_grace_runs_its_time_then_calls_on_expiry(loads):
    expired, lo = [], Lo()
    g = grace.Grace(0.05, lambda: lo, expired.append)
    assert g.silence(["10.0.0.100"])
    g.wait()
    assert g.kind is None and lo.held == set() and expired == [grace.SILENCE]
    assert loads[-1] == nft.delete_text("arp")
