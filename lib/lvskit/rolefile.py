"""This node's role: active, standby or held, the one thing hb-send advertises.

The role file (state.role_path) is written by takeover and read here only:
by hb-send at every beat, by hb-listen at every decision, by takeover.

A missing file, or one not of its shape (one warning), is no news: a reader
keeps the role it last read.  Were it read as "standby", an active node
whose file was deleted would say standby while it holds the VIPs, a
higher-ranked peer would take them, and neither would let go.  hb-listen
then has its worker rewrite the file from the VIPs on the interface
(takeover.Director.current_role); hb-send, when the file is missing at its
start, asks `takeover status` once (interface_role).
"""
from . import errors, log, state
from .errors import Fatal
from .heartbeat import ACTIVE, HELD, STANDBY

ROLES = (ACTIVE, STANDBY, HELD)


def check_role(data):
    """takeover.json's shape: {"role": "active"|"standby"|"held"}; gives the role."""
    return state.one_of(state.obj(data, "the file").get("role"), "role", ROLES)


def read_role(cfg):
    """The role file's role, or None: missing, or not of its shape (one warning)."""
    return state.load(state.role_path(cfg), None, check_role)


def write_role(cfg, role):
    path = state.role_path(cfg)
    try:
        state.save(path, {"role": role})
    except state.WriteError as e:
        raise Fatal(f"{path}: cannot write the role ({e.step}): {e.reason}", errors.PERMISSION) from None


def interface_role(takeover_argv):
    """Active when `takeover status` says this node holds every VIP; else standby.

    Another process: the interface is read with pyroute2, which hb-send does
    not import.
    """
    from . import run
    res = run.run(takeover_argv + ["status"], timeout=30)
    if res.timed_out or res.code == 127:
        why = "timed out" if res.timed_out else res.stderr.strip()
        log.warning(f"cannot ask takeover status ({why}): saying standby")
        return STANDBY
    return ACTIVE if res.code == 0 else STANDBY


_UNREAD = object()


class RoleFile:
    """The role as the heartbeat daemons see it: the file, read again when it changed.

    get() stats the file at every call and reads it only when its version
    (state.file_version) moved, so a change is seen at the next call.
    `lost` is True while the file is missing or unusable (the role last read
    stays); `fallback()` gives the role when no file was ever read.
    """

    def __init__(self, cfg, fallback=None):
        self.cfg, self.path, self.fallback = cfg, state.role_path(cfg), fallback
        self.stamp, self.role, self.lost = _UNREAD, None, False

    def get(self):
        stamp = state.file_version(self.path)
        if stamp != self.stamp:
            self.stamp = stamp
            role = read_role(self.cfg) if stamp else None
            self.lost = role is None
            if role is not None:
                self.role = role
            elif self.role is None:
                self.role = (self.fallback() if self.fallback else None) or STANDBY
        return self.role

    def told(self, role):
        """Our own worker wrote role: take its word (even if the file could not be written)."""
        self.stamp, self.role = _UNREAD, role
        self.get()
