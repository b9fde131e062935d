"""Validated configs kept for later, wrapping config.load from outside.

load(path): for cron runs, the last Config of a file, kept on disk between runs.
Resident(): for a program that stays (--every), the [service]s it built before.

Why: ipvs-sync, check-real and reweight run from cron every minute and the
config rarely changes, while validating a big one (thousands of real
servers) is a good part of a run that changes nothing.  A hit needs the
file's exact text (kept whole and compared whole: no digest to collide) and
the exact parser that built it (the config package's files' sizes and
times); anything else is a miss, and a miss is config.load as ever: every
error is found by the parser, and a config with errors is never kept.

The file holds two pickles: (parser stamp, absolute path, text), then the
Config.  Unpickling may make only the config's own records (a pickle that
names any other class or function is a miss, as the pickle documentation's
"Restricting Globals" shows), and the file is read only from a directory
and a file owned by the user that runs us and writable by nobody else (like
ssh's StrictModes); anything else, or any error, is a miss.  It
lives in LVSKIT_CACHE_DIR, else /var/cache/lvskit (``make install`` creates
it); without that directory there is no cache.  Deleting it is harmless.
"""
import os
import pickle
import socket
import stat

from . import config, state
from .config import ini

DEFAULT_DIR = "/var/cache/lvskit"
_PACKAGE = os.path.dirname(os.path.abspath(config.__file__))
_PARSER = [os.path.join(_PACKAGE, name) for name in sorted(os.listdir(_PACKAGE)) if name.endswith(".py")] + [
    os.path.join(os.path.dirname(_PACKAGE), name) for name in ("model.py", "configcache.py")]


def directory():
    return os.environ.get("LVSKIT_CACHE_DIR", DEFAULT_DIR)


def load(path):
    """config.load(path), answered from the cache when the file's text is the one it holds."""
    text = ini.read_text(path)
    where, head = _where(path, text)
    cfg = _get(where, head)
    if cfg is None:
        cfg = config.parse(text, path)
        _put(where, head, cfg)
    return cfg if cfg.path == str(path) else cfg.replace(path=str(path))


def _where(path, text):
    """(cache file, what must match: parser, absolute path, text)."""
    real = os.path.abspath(path)
    name = "config" + real.replace("_", "__").replace("/", "_") + ".pickle"
    stamp = "\n".join(f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in
                      ((p, os.stat(p)) for p in _PARSER))
    return os.path.join(directory(), name), (stamp, real, text)


def _private(st):
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


# What a cached Config is made of: the only globals a cache file may name.
_RECORDS = {(cls.__module__, cls.__qualname__): cls for cls in (
    config.Config, config.Server, config.RealServer, config.VirtualService, config.Check,
    config.Reweight, config.Agent, config.Node, config.Heartbeat, config.Ipvs, config.Announce,
    config.ServiceKey, config.Service, config.Dest)}
_RECORDS.update({("socket", family.name): family for family in (socket.AF_INET, socket.AF_INET6)})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _RECORDS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not a config record") from None


def _get(where, head):
    """The Config kept for head, or None."""
    try:
        if not _private(os.stat(os.path.dirname(where))):
            return None
        with open(where, "rb") as f:
            if not _private(os.fstat(f.fileno())) or _Unpickler(f).load() != head:
                return None
            cfg = _Unpickler(f).load()
        return cfg if isinstance(cfg, config.Config) else None
    except Exception:   # a cache is never a reason to fail: parse instead
        return None


def _put(where, head, cfg):
    """Keep cfg for head; silently nothing when the cache is off or unwritable."""
    try:
        if not _private(os.stat(os.path.dirname(where))):
            return
        data = pickle.dumps(head, pickle.HIGHEST_PROTOCOL) + pickle.dumps(cfg, pickle.HIGHEST_PROTOCOL)
        state.replace(where, data, durable=False)   # a torn file is a miss
    except Exception:
        pass


class Resident:
    """config.load for a program that reloads its config (--every): only changed [service]s validated again.

    A [service]'s record depends only on its own keys and values and on the
    [server]s: one whose section has the same keys and values, in the same
    order, as a section built by the last load that succeeded, while the
    [server]s are the same, is that record again (line numbers aside: a
    valid section raises no error).  Everything else is parsed and
    validated as always.
    """

    def __init__(self):
        self.servers, self.built = None, {}     # built: (name, ((key, value), ...)) -> VirtualService

    def load(self, path):
        fresh, servers_then = {}, []

        def service(sec, servers):
            if not servers_then:
                servers_then.append(tuple(servers.items()))
            sig = (sec.name, tuple(sec.values.items()))
            vs = self.built.get(sig) if servers_then[0] == self.servers else None
            fresh[sig] = vs or config.service(sec, servers)
            return fresh[sig]

        text = ini.read_text(path)
        cfg = config.build(ini.parse(text, path), path, service=service)
        self.servers, self.built = (servers_then or [None])[0], fresh
        return cfg
