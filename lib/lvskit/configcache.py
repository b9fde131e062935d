"""A parsed config kept between runs, keyed by the file's exact content.

Why: ipvs-sync, check-real and reweight run from cron every minute and the
config rarely changes; parsing and validating 1,000 services x 10 real
servers is a third of a no-op run (0.8 s in the lab guest, bench/README.md).
The cache holds the Config built from one exact text (kept whole and
compared whole: no digest to collide) by one exact version of the parser
(its files' sizes and times); another parser version is a miss and a full
parse.  Another text (an edit) is a partial hit: config.load takes the
[service]s whose section text is unchanged from the cached Config and
validates the rest, then refreshes the cache.  A config with errors is never
cached, so every error is still found and reported by the parser.

The file, in marshal's format (plain values only: unlike a pickle, loading
it runs no code, and marshal is built in, where importing pickle was 38 ms
of a run in the lab guest): (parser stamp, text), then the Config without
its services (records as [class name, fields...] lists, see _plain) and the
sizes of the services' parts, then one part per service, of plain tuples
(VirtualService.flat).  Still, it is only read from a directory and a file
owned by the user that runs us and writable by nobody else (like ssh's
StrictModes); anything else, or any error, is just a miss.
It lives in LVSKIT_CACHE_DIR, else /var/cache/lvskit (``make install``
creates it); when the directory does not exist there is no cache.  Deleting
it is harmless.
"""
import marshal
import os
import stat

from . import config, model, state
from .config import VirtualService

DEFAULT_DIR = "/var/cache/lvskit"
# The records a Config is made of, by name: the file names them (see _plain).
_RECORDS = {cls.__name__: cls for cls in (
    config.Config, config.Server, config.RealServer, config.Check, config.VirtualService,
    config.Reweight, config.Agent, config.Node, config.Heartbeat,
    model.ServiceKey, model.Service, model.Dest)}
_PARSER = ("config.py", "ini.py", "model.py", "configcache.py")


def directory():
    return os.environ.get("LVSKIT_CACHE_DIR", DEFAULT_DIR)


def _private(st):
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _parser_stamp():
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    for name in _PARSER:
        st = os.stat(os.path.join(here, name))
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts).encode()


def _where(path):
    """(cache file, what must match: parser, path)."""
    real = os.path.abspath(path)
    name = "config" + real.replace("_", "__").replace("/", "_") + ".marshal"
    return os.path.join(directory(), name), (_parser_stamp(), real)


class Entry:
    """The last good parse of a file: its text, its Config, each [service]'s part of the file.

    The parts let the next put() write the services that did not change as
    the bytes read here, so an edit of one weight encodes one service.
    """

    def __init__(self, text, cfg, parts):
        self.text, self.cfg = text, cfg
        self.parts = {id(vs): (vs, part) for vs, part in zip(cfg.services, parts)}

    def part(self, vs):
        known = self.parts.get(id(vs))
        return known[1] if known and known[0] is vs else None


def get(path):
    """The Entry last cached for the file at path by this parser, or None."""
    try:
        where, stamp = _where(path)
        if not _private(os.stat(os.path.dirname(where))):
            return None
        with open(where, "rb") as f:
            if not _private(os.fstat(f.fileno())):
                return None
            head = marshal.load(f)
            if not (isinstance(head, tuple) and len(head) == 2 and head[0] == stamp
                    and isinstance(head[1], str)):
                return None
            rest, sizes = marshal.load(f)
            blob = f.read()
        if sum(sizes) != len(blob):
            return None
        parts, off = [], 0
        for n in sizes:
            parts.append(blob[off:off + n])
            off += n
        cfg = _record(rest).replace(
            services=tuple(map(VirtualService.from_flat, map(marshal.loads, parts))))
    except Exception:   # a cache is never a reason to fail: parse instead
        return None
    return Entry(head[1], cfg if cfg.path == str(path) else cfg.replace(path=str(path)), parts)


def put(path, text, cfg, old=None):
    """Remember cfg for this text; silently nothing when the cache is off or unwritable.

    old: the Entry cfg was built from (its unchanged services are not encoded again).
    """
    try:
        where, stamp = _where(path)
        if not _private(os.stat(os.path.dirname(where))):
            return
        parts = [(old and old.part(vs)) or marshal.dumps(vs.flat()) for vs in cfg.services]
        head = marshal.dumps((stamp, text))
        rest = marshal.dumps((_plain(cfg.replace(services=())), [len(p) for p in parts]))
        state.replace(where, b"".join([head, rest] + parts), durable=False)   # a torn file is a miss
    except Exception:
        pass


def _plain(x):
    """x in values marshal takes: a record as [class name, field, ...], an enum as its int.

    A Config holds tuples, never lists, so a list can only be a record.
    Anything else raises (and put() caches nothing).
    """
    if isinstance(x, tuple):
        items = [_plain(i) for i in x]
        if type(x) is tuple:
            return tuple(items)
        name = type(x).__name__
        if _RECORDS.get(name) is not type(x):
            raise TypeError(f"not a config record: {name}")
        return [name] + items
    if isinstance(x, dict):
        return {_plain(k): _plain(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, str, bytes, float)):
        return x
    if isinstance(x, int):
        return int(x)
    raise TypeError(f"cannot cache a {type(x).__name__}")


def _record(x):
    """The inverse of _plain."""
    if isinstance(x, list):     # _make checks the number of fields
        return _RECORDS[x[0]]._make([_record(i) for i in x[1:]])
    if isinstance(x, tuple):
        return tuple(_record(i) for i in x)
    if isinstance(x, dict):
        return {k: _record(v) for k, v in x.items()}
    return x
