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

A file that says "active" when hb-send starts is checked the same way: left
by a crash without a reboot (RUN_DIR kept, the VIPs gone), it would have our
heartbeats claim the VIPs before anything corrected it, and the spare would
let them go while nobody holds them.  A node advertises "active" only while
it holds the VIPs or is taking them (takeover writes the file after adding
them); any later write of the file is taken as it is.
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
    not import.  Through subprocess, not run.run: that one reads the
    program's output in threads, and glibc keeps the stacks of threads that
    ended mapped for reuse; hb-send's mlockall (hbnet.realtime) would then
    fault in and lock every page of them.
    """
    import subprocess
    try:
        res = subprocess.run(takeover_argv + ["status"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, errors="replace", timeout=30)
        why = res.stderr.strip() if res.returncode == 127 else None
    except subprocess.TimeoutExpired:
        why = "timed out"
    except OSError as e:
        why = f"{takeover_argv[0]}: {e.strerror}"
    if why is not None:
        log.warning(f"cannot ask takeover status ({why}): saying standby")
        return STANDBY
    return ACTIVE if res.returncode == 0 else STANDBY


_UNREAD = object()


class RoleFile:
    """The role as the heartbeat daemons see it: the file, read again when it changed.

    get() stats the file at every call and reads it only when its version
    (state.file_version) moved, so a change is seen at the next call.
    `lost` is True while the file is missing or unusable (the role last read
    stays).  `interface()` gives the role the interface says (interface_role):
    asked when no file was ever read, and when the first file read says
    active (it may be older than a crash).
    """

    def __init__(self, cfg, interface=None):
        self.cfg, self.path, self.interface = cfg, state.role_path(cfg), interface
        self.stamp, self.role, self.lost = _UNREAD, None, False

    def get(self):
        stamp = state.file_version(self.path)
        if stamp != self.stamp:
            first = self.role is None
            self.stamp = stamp
            role = read_role(self.cfg) if stamp else None
            self.lost = role is None
            if role is None and first:
                role = self.interface() if self.interface else STANDBY
            elif role == ACTIVE and first and self.interface:
                role = self.interface()
            if role is not None:
                self.role = role
        return self.role

    def told(self, role):
        """Our own worker wrote role: take its word (even if the file could not be written)."""
        self.stamp, self.role = _UNREAD, role
        self.get()
