"""Records: what the table and the config are made of (named tuples with defaults)."""
import pickle

import pytest

from lvskit.config import Check
from lvskit.model import Dest, Service, ServiceKey


def test_counters_and_real_servers_are_not_compared():
    a, b = Dest("10.0.0.1", 80, weight=3, active=5), Dest("10.0.0.1", 80, weight=3)
    assert a == b and not a != b and hash(a) == hash(b)
    assert a != a.replace(weight=4) and a != a.replace(u_threshold=1)
    key = ServiceKey(2, 6, "10.0.0.9", 80)
    assert Service(key, dests={("x", 1): a}) == Service(key)
    assert Service(key) != Service(key, "rr")


def test_defaults_keywords_replace_and_immutability():
    c = Check(kind="tcp", rise=5)
    assert (c.kind, c.rise, c.fall) == ("tcp", 5, Check.defaults["fall"])
    assert c.replace(fall=1).fall == 1 and c.fall == Check.defaults["fall"]
    with pytest.raises(AttributeError):
        c.rise = 1
    s = Service(ServiceKey(2, 6, "10.0.0.9", 80))
    assert s.dests == {} and s.dests is not Service(s.key).dests     # never a shared dict


def test_they_survive_pickle():
    d = Dest("2001:db8::1", 443, 0, 7, 10, 2, 1, 2, 3)
    back = pickle.loads(pickle.dumps(d, pickle.HIGHEST_PROTOCOL))
    assert type(back) is Dest and tuple(back) == tuple(d)
