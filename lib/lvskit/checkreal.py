"""check-real's work: one round of checks, the state it leaves, the table it asks for.

A round: probe every real server of every due service (once per distinct
endpoint, all at once: checks.run), advance each server's state machine
(health.advance), never empty a service silently (health.keep_last_healthy),
then the kernel through sync.reconcile (the same planner ipvs-sync uses, with
desired.py turning the health in memory into weights), then the state file,
then for every change one syslog line and the hook.  The health lives in
memory between rounds; the state file only carries it to the next run and to
ipvs-sync, so a state file that cannot be written (read-only or full
STATE_DIR) costs one error line naming it, never the kernel's update.
"""
import os
import shlex
import time

from . import checks, health, log, state, sync, verdict
from .desired import all_down, desired_table
from .errors import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, CHECK_WARNING
from .model import hostport, record
from .plan import DEL_SERVICE
from .pluginoutput import Output

MAX_LISTED = 8
FULL_READ_EVERY = 30.0      # seconds between full reads of the kernel table in a loop


class Row(record("Row",
                 "service",             # config.VirtualService
                 "real",                # config.RealServer
                 "before", "after",     # health.Track
                 checked=False)):       # probed (or flagged) this round
    """One real server of one service in a round."""
    __slots__ = ()

    @property
    def entry(self):
        return str(self.real.dest)

    @property
    def changed(self):
        return self.before.state != self.after.state

    def label(self):
        name = self.real.name
        return name if name == self.real.dest.address else f"{name} {self.entry}"


class Round:
    """What one round did; once() fills in the kernel's outcome and what failed.

    rows: of Row; elapsed: seconds the round took; probes: distinct endpoints
    probed; kernel: the sync.Outcome; state_error: a state file that could
    not be written, its name and why.
    """
    __slots__ = ("rows", "elapsed", "probes", "kernel", "kernel_error", "state_error")

    def __init__(self, rows=None, probes=0):
        self.rows = [] if rows is None else rows
        self.elapsed, self.probes = 0.0, probes
        self.kernel, self.kernel_error, self.state_error = None, "", ""

    def changes(self):
        return [r for r in self.rows if r.changed]


MAX_FLAG_TEXT = 80     # characters of a flag's first line kept: it goes into one plugin line


def maintenance(cfg, dest):
    """The reason a maintenance flag gives, or None: MAINT/ADDRESS or MAINT/ADDRESS:PORT.

    The reason is the flag's first line, cut to MAX_FLAG_TEXT printable
    characters; a flag that is no regular file (a FIFO) is not read.
    """
    for name in (hostport(dest.address, dest.port), f"{dest.address}:{dest.port}", dest.address):
        path = os.path.join(state.maint_dir(cfg), name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            return f"maintenance ({name}: unreadable: {e.strerror})"
        try:
            head, _ = state.read_regular(fd, MAX_FLAG_TEXT * 4)
        except OSError as e:
            return f"maintenance ({name}: unreadable: {e.strerror})"
        return f"maintenance ({name}{': ' + _flag_text(head) if _flag_text(head) else ''})"
    return None


def _flag_text(head):
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    line = "".join(c if c.isprintable() else "?" for c in line).strip()
    return line if len(line) <= MAX_FLAG_TEXT else line[:MAX_FLAG_TEXT - 3] + "..."


def _due(vs, checked, now, all_due):
    if vs.check.kind == "none":
        return False
    return all_due or now - checked.get(vs.name, 0) >= vs.check.interval * 0.9


def run_round(cfg, tracks, checked, now=None, all_due=True):
    """Probe what is due; return (Round, new tracks, new checked).  No I/O but the probes."""
    now = time.time() if now is None else now
    start = time.monotonic()
    due = [vs for vs in cfg.services if _due(vs, checked, now, all_due)]
    wanted, flagged = {}, {}
    for vs in due:
        for real in vs.reals:
            reason = maintenance(cfg, real.dest)
            if reason:
                flagged[vs.name, real.dest.key] = health.Result(health.MAINT, reason)
            else:
                wanted[vs.name, real.dest.key] = checks.probe_for(vs.check, real.dest)
    results = checks.run(wanted.values())
    rnd = Round(probes=len(set(wanted.values())))
    new_tracks, new_checked = {}, dict(checked)
    for vs in cfg.services:
        if vs.check.kind == "none":
            continue
        old = tracks.get(vs.name, {})
        before = {str(r.dest): old.get(str(r.dest), health.Track()) for r in vs.reals}
        after = dict(before)
        if vs in due:
            new_checked[vs.name] = now
            for r in vs.reals:
                k = (vs.name, r.dest.key)
                result = flagged.get(k) or results.get(wanted.get(k))
                if result is not None:
                    after[str(r.dest)] = health.advance(before[str(r.dest)], result, now, vs.check)
            after = health.keep_last_healthy(before, after)
        new_tracks[vs.name] = after
        rnd.rows += [Row(vs, r, before[str(r.dest)], after[str(r.dest)], vs in due) for r in vs.reals]
    rnd.elapsed = time.monotonic() - start
    return rnd, new_tracks, {k: v for k, v in new_checked.items() if k in new_tracks}


def announce(cfg, rnd, dry_run=False):
    """One syslog line per change, and the hook; loud when a service has nothing left."""
    for row in rnd.changes():
        b, a = row.before, row.after
        log.info(f"{row.service.name} {row.label()}: {b.state} -> {a.state}: {a.reason}")
        if cfg.check_hook and not dry_run:
            _hook(cfg, row)
    for vs in {row.service.name: row.service for row in rnd.changes()}.values():
        if all_down(vs, _tracks(rnd, vs)):
            log.warning(_all_down_text(vs, rnd))


def _tracks(rnd, vs):
    return {r.entry: r.after for r in rnd.rows if r.service is vs}


def _hook(cfg, row):
    from . import run as runner
    argv = shlex.split(cfg.check_hook) + [row.label().split()[0], row.service.name,
                                           row.before.state, row.after.state, row.after.reason]
    env = dict(os.environ, LVSKIT_SERVICE=row.service.name, LVSKIT_SERVER=row.real.name,
               LVSKIT_ADDRESS=row.real.dest.address, LVSKIT_PORT=str(row.real.dest.port),
               LVSKIT_OLD=row.before.state, LVSKIT_NEW=row.after.state, LVSKIT_REASON=row.after.reason)
    r = runner.run(argv, timeout=30, env=env)
    if r.timed_out or r.code != 0:
        log.warning(f"hook {argv[0]} for {row.service.name} {row.real.name}: "
                    f"{'timed out' if r.timed_out else f'exit {r.code}'} {r.stderr.strip()[:100]}")


def _all_down_text(vs, rnd):
    return verdict.all_down_text(vs.name, vs.sorry, [r.real.name for r in rnd.rows
                                                     if r.service is vs and r.after.kept])


def update_kernel(cfg, kernel, tracks, dry_run=False, full=True):
    """The same planner as ipvs-sync, sync.reconcile, with the health in memory (not
    the state file, which may be unwritable); in a loop after a sync.Follower's
    manner: planned against its memory of the table, read back when full."""
    desired = desired_table(cfg, health=health.View(tracks))
    if isinstance(kernel, sync.Follower) and not dry_run:
        return kernel.step(cfg, full, desired=desired, select=_not_deleting_services)
    return sync.reconcile(cfg, getattr(kernel, "kernel", kernel), desired=desired, dry_run=dry_run,
                          select=_not_deleting_services)


def _not_deleting_services(op):
    """Services that left the config are ipvs-sync's to delete, past its guard: not ours."""
    return op.kind != DEL_SERVICE


# --- the monitoring-plugins line ------------------------------------------------

def report(rnd, extra=()):
    """(exit code, the plugin's output lines): failed servers first, perfdata.

    Each service's state is verdict.service's, as lvs-status --check says it.
    extra: more (state, text) to say after the services that are all down."""
    rows = rnd.rows
    out = Output("CHECK_REAL")
    for vs in {r.service.name: r.service for r in rows}.values():
        states = [(r.after.state, r.after.last) for r in rows if r.service is vs]
        out.add(verdict.service(states))
        if verdict.all_down(s for s, _ in states):
            out.add(CHECK_CRITICAL, _all_down_text(vs, rnd))
    for code, text in extra:
        out.add(code, text)
    named = sorted(((r, sub) for r in rows if (sub := _sub_check(r))), key=lambda x: x[1][0])
    for i, (r, (_, code)) in enumerate(named):
        out.add(code, f"{r.service.name} {r.label()} {r.after.state}: {r.after.reason}" if i < MAX_LISTED else "")
    if len(named) > MAX_LISTED:
        out.add(CHECK_OK, f"and {len(named) - MAX_LISTED} more")
    if rnd.kernel_error:
        out.add(CHECK_UNKNOWN, f"kernel: {rnd.kernel_error}")
    elif rnd.kernel and rnd.kernel.failed:
        op, msg = rnd.kernel.failed[0]
        out.add(CHECK_UNKNOWN, f"kernel: {len(rnd.kernel.failed)} changes failed, first: {op.ipvsadm()}: {msg}")
    if rnd.state_error:
        out.add(CHECK_UNKNOWN, f"state: {rnd.state_error}")
    n = len(rows)
    ups = sum(1 for r in rows if r.after.up)
    down = sum(1 for _, (place, _) in named if place == 0)
    out.metric("up", ups, lo=0, hi=n)
    out.metric("down", down, lo=0, hi=n)
    for word in (health.MAINT, health.WARNING):
        out.metric(word, sum(1 for r in rows if r.after.state == word), lo=0, hi=n)
    out.metric("probes", rnd.probes, lo=0)
    out.metric("time", f"{rnd.elapsed:.3f}", "s", lo=0)
    return out.code, out.lines(f"{down}/{n} down" if down else f"{ups}/{n} up")


def _sub_check(r):
    """(place in the line, state) of a server the line names, or None: down first,
    then maintenance, warning, and those whose check could not tell; the state is
    verdict.server's (a server in warning whose check could not tell: UNKNOWN, once)."""
    t = r.after
    code = verdict.server(t.state, t.last)
    if code == CHECK_OK:
        return None
    if t.up is False and t.state != health.MAINT:
        return 0, code
    return {health.MAINT: 1, health.WARNING: 2}.get(t.state, 3), code


def table(rnd):
    """-v: one line per real server."""
    lines = [f"{'SERVICE':<12} {'SERVER':<28} {'STATE':<8} {'OK':>3} {'BAD':>3} REASON"]
    order = {health.DOWN: 0, health.HELD: 0, health.MAINT: 1, health.WARNING: 2, health.UNKNOWN: 3}
    for r in sorted(rnd.rows, key=lambda r: order.get(r.after.state, 4)):
        t = r.after
        state = t.state + ("*" if t.kept else "")
        lines.append(f"{r.service.name:<12} {r.label():<28} {state:<8} {t.ok:>3} {t.bad:>3} {t.reason}")
    if any(r.after.kept for r in rnd.rows):
        lines.append("* down, but kept in the table: its service has no server up")
    return lines


# --- check-real --check: what the running check-real knows, read only ------------

STALE_INTERVALS = 3     # a service's health is stale after this many of its check_interval ...
STALE_MIN = 180.0       # ... and never sooner (seconds): cron runs check-real once a minute


def stale_after(vs):
    """Seconds after its last check at which a service's health in health.json is stale."""
    return max(STALE_INTERVALS * vs.check.interval, STALE_MIN)


def check_only(cfg, kernel=None, now=None, why="", use_kernel=True):
    """(exit code, lines): check-real --check, and a plain run while another holds the lock.

    Reports from the state the running check-real writes (STATE_DIR/health.json)
    with the kernel's table read back; no probe, no lock, nothing written, so
    it never competes with the loop or cron.  UNKNOWN when a service was never
    checked or its last check is older than stale_after (check-real stopped:
    the state no longer says how its servers are, so the check cannot tell);
    WARNING when the kernel does not yet hold what the health asks for (the
    next round, or ipvs-sync with --no-kernel, applies it); UNKNOWN when the
    kernel cannot be read.  why: said first (a plain run that found the lock
    busy).  use_kernel=False (--no-kernel): the health alone.
    """
    from .errors import Fatal
    now = time.time() if now is None else now
    known = health.read(cfg)
    rnd, extra, oldest = Round(), [], 0.0
    for vs in cfg.services:
        if vs.check.kind == "none":
            continue
        tracks = known.of(vs.name)
        for real in vs.reals:
            t = tracks.get(str(real.dest)) or health.Track(reason="no result yet")
            rnd.rows.append(Row(vs, real, t, t))
        checked = known.checked.get(vs.name)
        if checked is None:
            extra.append((CHECK_UNKNOWN, f"{vs.name} never checked ({state.health_path(cfg)}: "
                                         f"is check-real running?)"))
            continue
        age = now - checked
        oldest = max(oldest, age)
        if age > stale_after(vs):
            extra.append((CHECK_UNKNOWN, f"{vs.name} last checked {age:.0f}s ago (stale after "
                                         f"{stale_after(vs):.0f}s: is check-real running?)"))
    try:
        if use_kernel:
            kernel = kernel or sync.open_kernel()
            rnd.kernel = update_kernel(cfg, kernel, known.tracks, dry_run=True)
    except (Fatal, OSError) as e:
        rnd.kernel_error = getattr(e, "strerror", None) or str(e)
    if rnd.kernel and rnd.kernel.ops:
        ops = rnd.kernel.ops
        extra.append((CHECK_WARNING, f"kernel: {len(ops)} changes pending, first: {ops[0].ipvsadm()}"))
    code, lines = report(rnd, extra=([(CHECK_OK, why)] if why else []) + extra)
    head = lines[0] + (" " if " | " in lines[0] else " | ") + f"age={oldest:.0f}s;;;0"
    return code, [head] + lines[1:]


# --- once (cron, Nagios) or in a loop -------------------------------------------

def _returning(rnd):
    """[(Service, Dest)] of the real servers this round brings back from down, in
    services that give them a fresh start (on_return = fresh)."""
    return [(r.service.wanted(), r.real.dest) for r in rnd.changes()
            if r.before.up is False and r.after.up and r.service.on_return == "fresh"]


def once(cfg, kernel, tracks, checked, dry_run=False, all_due=True, full=True):
    """One round with its consequences; returns (Round, tracks, checked).
    kernel: an ipvs.Kernel (or the fake kernel in tests), a sync.Follower, or None.

    A real server that comes back from down gets a fresh start (sync.fresh_start):
    deleted, its old connection entries expired, added again with its weight;
    not in a service with on_return = keep.

    The kernel first, from the health in memory: neither a state file that
    cannot be written nor a slow or hanging hook may delay taking a dead
    server out.  A state file that cannot be written is one error line naming
    it (rnd.state_error); the next round tries again.
    """
    rnd, tracks, checked = run_round(cfg, tracks, checked, all_due=all_due)
    if kernel is not None:
        try:
            returning = [] if dry_run else _returning(rnd)
            if returning and sync.fresh_start(cfg, getattr(kernel, "kernel", kernel), returning):
                full = True         # the table changed behind a Follower's memory
            rnd.kernel = update_kernel(cfg, kernel, tracks, dry_run, full)
            if rnd.kernel.unrecorded:      # reconcile's own record (ipvs-sync.json), logged there
                rnd.state_error = rnd.kernel.unrecorded
        except OSError as e:
            rnd.kernel_error = e.strerror or str(e)
            log.error(f"kernel: {rnd.kernel_error}")
    if not dry_run:
        try:
            health.save(cfg, health.View(tracks, checked))
        except state.WriteError as e:
            _state_failed(rnd, e)
    announce(cfg, rnd, dry_run)
    return rnd, tracks, checked


def _state_failed(rnd, e):
    log.error(str(e))
    rnd.state_error = "; ".join(filter(None, [rnd.state_error, str(e)]))


def run(cfg, path, dry_run=False, every=None, use_kernel=True, verbose=False, kernel=None, out=print):
    """check-real's work: one round and its report, or rounds every `every` seconds (every.run).

    A single run that finds another check-real holding the lock (the loop, or
    cron's run) does not probe: it reports what that one knows (check_only)."""
    from . import every as loop
    from .errors import BUSY, Fatal, USAGE
    from .lock import Lock
    if every is not None and dry_run:
        raise Fatal("--dry-run and --every do not mix: a dry run looks once", USAGE)
    try:
        lock = None if dry_run else Lock(cfg.run_dir, "check-real")  # noqa: F841 (held until exit)
    except Fatal as e:
        if e.code != BUSY or every is not None:
            raise
        code, lines = check_only(cfg, kernel, why="another check-real runs: its state reported",
                                 use_kernel=use_kernel)
        for line in lines:
            out(line)
        return code
    if use_kernel and kernel is None:
        kernel = sync.open_kernel()
    known = health.read(cfg)
    tracks, checked = known.tracks, known.checked
    if every is None:
        rnd, _, _ = once(cfg, kernel if use_kernel else None, tracks, checked, dry_run)
        code, lines = report(rnd)
        for line in lines + (table(rnd) if verbose else []):
            out(line)
        if dry_run and rnd.kernel:
            for op in rnd.kernel.ops:
                out(op.ipvsadm())
        return code
    follower = sync.Follower(kernel) if use_kernel else None
    last_full = 0.0

    def round_(cfg, why):
        # Plan against our memory of the table; read it all back now and then,
        # which repairs hand-made drift (as ipvs-sync --every does).
        nonlocal tracks, checked, last_full
        start = time.monotonic()
        full = start - last_full >= FULL_READ_EVERY
        last_full = start if full else last_full
        _, tracks, checked = once(cfg, follower, tracks, checked, all_due=False, full=full)
    return loop.run(path, cfg, every, round_)
