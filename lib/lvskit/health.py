"""What check-real believes about each real server: a small state machine.

Pure: ``step(track, result, now, check)`` gives the next Track; no I/O, no
clock.  The rules (haproxy's rise/fall, keepalived's "first result decides"):
- a server never checked before takes its first definite result at once (so
  deleting the state file costs one round, not rise x interval);
- an up server goes down after ``fall`` failures in a row, a down one comes
  back after ``rise`` successes in a row;
- UNKNOWN (an external check's exit 3, a check that could not run) changes
  nothing but the reason: we do not know more than before;
- WARNING (external exit 1) counts as up, at a reduced weight;
- a maintenance flag takes the server out at once; it then needs ``rise``
  successes like any other down server;
- flapping: when a server has changed state ``flap_changes`` times within
  ``flap_window`` seconds it is held down for ``hold_down`` seconds, then
  needs ``rise`` successes.

States, as reported: up, warning, down, held, maint (and unknown before the
first definite result).
"""
from . import state
from .model import record

UP, DOWN, WARNING, UNKNOWN, MAINT = "up", "down", "warning", "unknown", "maint"
HELD = "held"


class Result(record("Result",
                    "status",           # UP, DOWN, WARNING, UNKNOWN or MAINT
                    reason="",
                    elapsed=0.0)):
    __slots__ = ()


class Track(record("Track",
                   state=UNKNOWN,
                   ok=0,                # good results in a row
                   bad=0,               # bad results in a row
                   reason="",
                   last="",             # the last result's status
                   since=0.0,           # when the state last changed
                   changes=(),          # times of recent up<->down changes (flap detection)
                   held_until=0.0,
                   kept=False)):        # down, but kept in the table: its service has nothing else
    __slots__ = ()

    @property
    def up(self):
        """True, False, or None (never had a definite result)."""
        if self.state == UNKNOWN:
            return None
        return self.state in (UP, WARNING)

    def to_json(self):
        """The entry save writes: every field (changes as a list) and "up"."""
        return {"state": self.state, "ok": self.ok, "bad": self.bad, "reason": self.reason,
                "last": self.last, "since": self.since, "changes": list(self.changes),
                "held_until": self.held_until, "kept": self.kept, "up": self.up}

    @classmethod
    def from_json(cls, d):
        """A Track from a state file entry of check_entry's shape.

        An entry with no "state" takes it from "up" (a hand-written
        {"up": false} is a server down)."""
        kw = {k: d[k] for k in _PLAIN if k in d}
        kw.setdefault("state", {True: UP, False: DOWN}.get(d.get("up"), UNKNOWN))
        return cls(changes=tuple(d.get("changes", ())), **kw)


_PLAIN = ("state", "ok", "bad", "reason", "last", "since", "held_until", "kept")


def step(track, result, now, check):
    """The Track after one more result."""
    t = track.replace(last=result.status, reason=result.reason or track.reason)
    status = result.status
    if status == UNKNOWN:
        return t
    if status == MAINT:
        return _to(t, MAINT, now, result.reason or "maintenance", ok=0, bad=0)
    good = status in (UP, WARNING)
    t = t.replace(ok=t.ok + 1 if good else 0, bad=0 if good else t.bad + 1)
    if t.up is None:
        return _to(t, status if good else DOWN, now, result.reason)
    if t.up:
        if not good and t.bad >= check.fall:
            return _to(t, DOWN, now, result.reason)
        if good and status != t.state:
            return t.replace(state=status)    # up <-> warning: a weight change, not a flap
        return t
    # down, held or maint
    if t.state == HELD and now < t.held_until:
        return t.replace(reason=f"flapping, held down until {_clock(t.held_until)}: {result.reason}")
    if good and t.ok >= check.rise:
        return _to(t, status, now, result.reason)
    if good:
        return t.replace(reason=f"rising {t.ok}/{check.rise}: {result.reason}")
    return t


def _to(t, state, now, reason, **kw):
    return t.replace(state=state, since=now if state != t.state else t.since, reason=reason, **kw)


def flap(before, after, now, check):
    """Apply flap damping to a step's outcome (before -> after)."""
    if before.up is None or after.up is None or before.up == after.up or after.state == MAINT:
        return after
    window = [x for x in before.changes if now - x < check.flap_window] + [now]
    if check.flap_changes and len(window) >= check.flap_changes:
        return after.replace(state=HELD, ok=0, changes=(), held_until=now + check.hold_down,
                             since=now, reason=f"flapping: {len(window)} changes in "
                                               f"{check.flap_window:g}s; held down {check.hold_down:g}s")
    return after.replace(changes=tuple(window))


def advance(track, result, now, check):
    """step + flap damping: what check-real calls."""
    return flap(track, step(track, result, now, check), now, check)


def _clock(ts):
    import time
    return time.strftime("%H:%M:%S", time.localtime(ts))


def keep_last_healthy(before, after):
    """Never empty a service silently: when no server of it is up any more,
    mark the last healthy set ``kept`` (desired.py leaves those in the table).

    before, after: {entry: Track} of one service.  Returns the new after.
    """
    if any(t.up is not False for t in after.values()):
        return {e: t.replace(kept=False) if t.kept else t for e, t in after.items()}
    keep = {e for e, t in before.items() if t.kept} or \
           {e for e, t in before.items() if t.up is not False} or set(after)
    return {e: t.replace(kept=e in keep) for e, t in after.items()}


# --- the state file: STATE_DIR/health.json -------------------------------------
# Its one reader is read(); every other module asks the View it returns.

STATES = (UP, DOWN, WARNING, UNKNOWN, MAINT, HELD)
MAX_CHANGES = 1000      # flap times kept per server; check_flap_changes is far below


# what each key of an entry may hold
_ENTRY_CHECKS = {
    "state": lambda v, w: state.one_of(v, w, STATES),
    "last": lambda v, w: state.one_of(v, w, STATES + ("",)),
    "ok": lambda v, w: state.integer(v, w, 0, 2**31),
    "bad": lambda v, w: state.integer(v, w, 0, 2**31),
    "reason": state.text,
    "since": state.timestamp,
    "held_until": state.timestamp,
    "kept": state.boolean,
    "up": lambda v, w: v is None or state.boolean(v, w),
    "weight_percent": lambda v, w: state.integer(v, w, 0, 100),    # written by older versions
}


def check_entry(d, where):
    """One server's entry as save writes it; a key may be absent, never of another type."""
    state.obj(d, where)
    for key, check in _ENTRY_CHECKS.items():
        if key in d:
            check(d[key], f"{where}.{key}")
    changes = d.get("changes", [])
    if not isinstance(changes, list) or len(changes) > MAX_CHANGES:
        raise state.Shape(f"{where}.changes: want a list of at most {MAX_CHANGES} times")
    for x in changes:
        state.timestamp(x, f"{where}.changes")
    return d


def check_file(data):
    """health.json's shape: {"services": {SERVICE: {"ADDR:PORT": entry}},
    "checked": {SERVICE: time}}; for state.load."""
    state.obj(data, "the file")
    services = state.obj(data.get("services", {}), "services")
    for name, entries in services.items():
        for e, d in state.obj(entries, f"services.{name}").items():
            check_entry(d, f"services.{name}.{e}")
    for name, t in state.obj(data.get("checked", {}), "checked").items():
        state.timestamp(t, f"checked.{name}")
    return data


class View(record("View",
                  tracks=None,          # {service: {"ADDR:PORT": Track}}
                  checked=None)):       # {service: epoch seconds}
    """What check-real knows: each real server's Track and when each service was last checked."""
    __slots__ = ()

    def __new__(cls, tracks=None, checked=None):
        return tuple.__new__(cls, ({} if tracks is None else tracks, {} if checked is None else checked))

    def of(self, service):
        """{"ADDR:PORT": Track} of one service ({} when check-real never spoke of it)."""
        return self.tracks.get(service, {})

    def track(self, service, entry):
        """The Track of one server of a service, or None."""
        return self.tracks.get(service, {}).get(entry)


def read(cfg):
    """The View in health.json; empty when the file is missing or not of its shape (one warning)."""
    data = state.load(state.health_path(cfg), {}, check_file)
    tracks = {name: {e: Track.from_json(d) for e, d in entries.items()}
              for name, entries in data.get("services", {}).items()}
    return View(tracks, dict(data.get("checked", {})))


def save(cfg, view):
    """Write the View to health.json; state.WriteError (naming it) when that fails."""
    services = {name: {e: t.to_json() for e, t in entries.items()} for name, entries in view.tracks.items()}
    state.save(state.health_path(cfg), {"services": services, "checked": view.checked})
