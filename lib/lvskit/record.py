"""Frozen records: named tuples with defaults, keyword construction and replace().

Why not dataclasses for the table and the config: ``import dataclasses``
pulls in inspect (tokenize, dis, ...), every frozen dataclass execs half a
dozen generated methods when its module loads, and building one calls
``object.__setattr__`` once per field.  ipvs-sync builds two records per
real server (config and kernel) on every cron run; in the lab guest the
imports alone were 0.3 s of a 3.2 s no-op on 1,000 x 10 (bench/README.md).
A named tuple is built by one C call, and is just as immutable.

    class Server(record("Server", "name", "address")):
        __slots__ = ()

    class Check(record("Check", kind="none", interval=5.0)):
        __slots__ = ()

Fields without a default come first (positional names), then those with
one (keywords, in order).  ``replace(**changes)`` is a copy with changes;
``defaults`` is {field: default}.  ``compared=N``: only the first N fields
count for == and hash (a Dest's counters, a Service's real servers).
"""
from collections import namedtuple


def record(name, *required, compared=None, **defaults):
    base = namedtuple(name, list(required) + list(defaults), defaults=tuple(defaults.values()))
    base.replace = base._replace
    base.defaults = base._field_defaults
    if compared is not None:
        def __eq__(self, other):
            if isinstance(other, base):
                return self[:compared] == other[:compared]
            return NotImplemented

        def __ne__(self, other):
            eq = __eq__(self, other)
            return eq if eq is NotImplemented else not eq

        base.__eq__, base.__ne__ = __eq__, __ne__
        base.__hash__ = lambda self: hash(self[:compared])
    return base
