import gc

import pytest

from lvskit.nogc import nogc


@pytest.fixture(autouse=True)
def collector_back_on():
    yield
    gc.enable()


def test_paused_inside_and_back_on_after():
    seen = []
    f = nogc(lambda: seen.append(gc.isenabled()) or "value")
    gc.enable()
    assert f() == "value"
    assert seen == [False] and gc.isenabled()


def test_back_on_after_an_exception():
    @nogc
    def fail():
        raise KeyError("x")
    gc.enable()
    with pytest.raises(KeyError):
        fail()
    assert gc.isenabled()


def test_a_paused_collector_stays_paused():
    gc.disable()
    assert nogc(gc.isenabled)() is False
    assert not gc.isenabled()


def test_nested_calls_leave_it_to_the_outer_one():
    inner = nogc(gc.isenabled)

    @nogc
    def outer():
        return inner(), gc.isenabled()
    gc.enable()
    assert outer() == (False, False)
    assert gc.isenabled()
