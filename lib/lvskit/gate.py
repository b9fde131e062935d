"""lvs-announce's gate: this director's VIPs announced through BIRD only while it can serve them.

[announce] mode = bgp (docs/active-active.md, "Health-gated announcement").
A director that announces with an empty or stale table blackholes its share
of every VIP's flows, so a round announces only while ALL of these hold, and
the first that fails, in this order, is the reason it withdraws:

1. no drain flag (STATE_DIR/announce-drain, lvs-announce --drain);
2. the kernel's IPVS table reads, and every service is in it with a real
   server of weight > 0 (`ipvsadm -C` withdraws at once);
3. the table matches the config with check-real's health and reweight's
   weights applied: sync.reconcile's dry run, the very comparison of
   ipvs-sync --check, plans no operation and no [ipvs] setting.  A gate that
   announces withdraws for this only when the table differs in two rounds
   in a row: check-real changes the kernel first and writes
   health.json after, so for a moment at each of its changes the table is
   ahead of the file; a difference that stays is withdrawn one round later;
4. check-real's health is fresh: every checked service was last checked
   (health.json "checked") within FRESH_ROUNDS of its check_interval plus
   one check_timeout (see fresh_bound);
5. BIRD answers (birdc show protocols, within bird.BIRDC_TIMEOUT) and has
   the protocols the announcement needs.

Then BIRD is made to agree: `birdc enable` or `disable` runs only for a
protocol whose state differs from the verdict (NAME for the IPv4 VIPs,
NAME_v6 only when there are IPv6 VIPs; withdrawing disables both), so a
quiet round costs one birdc call, and every round re-asserts the verdict:
a `birdc configure` or a BIRD restart, which disable the protocols again,
is undone at the next round.  Every birdc call has a timeout (run.py kills
it), so a hung BIRD costs a round a few seconds, never the loop.

One log line per transition (announcing, withdrawing, and a protocol found
switched by someone else), and RUN_DIR/announce.json after every round:
{"announced", "key", "reason", "since", "checked", "every" (null for one round)},
for lvs-status.
"""
import os
import time

from . import bird, health, log, state, sync
from .errors import Fatal
from .model import record

FRESH_ROUNDS = 3    # check rounds (check_interval) the health may be behind, as check-real --check
# key of each reason, in the order the conditions are judged
DRAIN, EMPTY, TABLE, HEALTH, BIRD, CONFIG, STOPPED, OK = (
    "drain", "empty", "table", "health", "bird", "config", "stopped", "ok")


class Verdict(record("Verdict", announce=False, key="", why="")):
    """Announce or not; key: which condition decided (OK when all hold); why: one line."""
    __slots__ = ()


def fresh_bound(vs):
    """Seconds after its last check at which a service's health is too old to announce on.

    FRESH_ROUNDS check intervals plus one check timeout (check-real stamps a
    round when it starts and writes health.json when its probes are back).
    Unlike check-real --check there is no 180 s floor for cron: in bgp mode
    check-real runs resident (check-real --every, no slower than the checks'
    intervals), and a director whose checks stopped must withdraw within
    seconds, not minutes.
    """
    return FRESH_ROUNDS * vs.check.interval + vs.check.timeout


def drained(cfg):
    """The drain flag's first line ('drained' when empty), or None."""
    try:
        with open(state.drain_path(cfg), encoding="utf-8", errors="replace") as f:
            return " ".join(f.readline(200).split()) or "drained"
    except FileNotFoundError:
        return None
    except OSError as e:        # there but unreadable: still a flag
        return f"unreadable ({e.strerror or e})"


def judge(cfg, kernel, now=None):
    """The Verdict of conditions 1-4 (lvskit's side; BIRD is asked by Gate.round)."""
    now = time.time() if now is None else now
    if not cfg.announce.bgp:
        return Verdict(False, CONFIG, f"{cfg.path}: [announce] mode is not bgp")
    if not cfg.services:
        return Verdict(False, CONFIG, f"{cfg.path}: no [service]")
    flag = drained(cfg)
    if flag is not None:
        return Verdict(False, DRAIN, f"drained ({state.drain_path(cfg)}: {flag})")
    try:
        current = kernel.read()
    except (Fatal, OSError) as e:
        return Verdict(False, EMPTY, f"cannot read the IPVS table: {getattr(e, 'strerror', None) or e}")
    for vs in cfg.services:
        svc = current.get(vs.key)
        if svc is None:
            return Verdict(False, EMPTY, f"{vs.name} ({vs.key}) is not in the kernel's IPVS table")
        if not any(d.weight > 0 for d in (svc.dests or {}).values()):
            return Verdict(False, EMPTY, f"{vs.name} ({vs.key}) has no real server with weight > 0 "
                                         f"in the kernel")
    try:
        out = sync.reconcile(cfg, kernel, dry_run=True, current=current, force=True)
    except (Fatal, OSError) as e:
        return Verdict(False, TABLE, f"cannot plan the IPVS table: {getattr(e, 'strerror', None) or e}")
    if out.settings_error:
        return Verdict(False, TABLE, f"cannot tell the [ipvs] settings: {out.settings_error}")
    pending = [c.command() for c in out.settings] + [op.ipvsadm() for op in out.ops]
    if pending:
        return Verdict(False, TABLE, f"the IPVS table differs from the config: {len(pending)} changes "
                                     f"pending, first: {pending[0]}")
    checked = health.read(cfg).checked
    for vs in cfg.services:
        if vs.check.kind == "none":
            continue
        at = checked.get(vs.name)
        if at is None:
            return Verdict(False, HEALTH, f"{vs.name} never checked ({state.health_path(cfg)}: "
                                          f"is check-real --every running?)")
        if now - at > fresh_bound(vs):
            return Verdict(False, HEALTH, f"{vs.name} last checked {now - at:.0f}s ago (fresh for "
                                          f"{fresh_bound(vs):g}s: is check-real --every running?)")
    return Verdict(True, OK, f"{len(cfg.services)} services in line with the config, each with a real "
                             f"server in, health fresh")


def wanted(cfg, on):
    """[(protocol, enabled?)]: NAME on with IPv4 VIPs, NAME_v6 with IPv6 ones; all off when not on."""
    by_family = bird.vips(cfg)
    return [(name, bool(on and by_family[af])) for name, af in bird.protocols(cfg.announce)]


def vips_text(cfg):
    return ", ".join(a for addrs in bird.vips(cfg).values() for a in addrs)


def _is_on(st):
    return st != "down"     # up, or start (enabled, coming up): a disable is still due


def _switch(cfg, states, want, timeout):
    """Enable/disable what differs from want (states: BIRD's, updated here);
    ([(name, on)] switched, the first failure or None).  An enable that fails stops there."""
    switched, failed = [], None
    for name, on in want:
        if name not in states or _is_on(states[name]) == on:
            continue
        why = bird.switch(cfg.announce, name, on, timeout)
        if why:
            failed = failed or why
            if on:
                break
            continue
        states[name] = "up" if on else "down"
        switched.append((name, on))
    return switched, failed


class Gate:
    """The gate's memory between rounds: the last verdict (for the transition lines) and since when."""

    def __init__(self, kernel, timeout=bird.BIRDC_TIMEOUT, clock=time.time):
        self.kernel, self.timeout, self.clock = kernel, timeout, clock
        self.last = None        # Verdict of the last round
        self.since = None       # wall-clock time of the last transition
        self.every = None       # s between rounds (--every), in announce.json for lvs-status
        self.said = {}          # what: the last line logged of it (errors are not repeated each round)
        self.drift = False      # the table differed from the config last round (see judge)

    def round(self, cfg, dry_run=False):
        """Judge, make BIRD agree, log a transition, write announce.json; the Verdict.
        dry_run: judge and ask BIRD (read only), return (Verdict, the birdc commands it would run)."""
        now = self.clock()
        v = judge(cfg, self.kernel, now)
        if not dry_run:
            if v.key == TABLE and self.last is not None and self.last.announce and not self.drift:
                self.drift = True       # first seen: announced one round more, withdrawn if it stays
                v = self.last
            else:
                self.drift = v.key == TABLE
        # BIRD is asked even when the verdict is no (a config reloaded to mode none included):
        # what is to be withdrawn is withdrawn.  Its silence is the reason only when all else holds.
        states, why = bird.protocol_states(cfg.announce, self.timeout)
        if not dry_run:
            self._say("bird", why and not v.announce and f"cannot tell BIRD to withdraw: {why}",
                      log.warning)
        if why:
            if v.announce:
                v = Verdict(False, BIRD, f"BIRD does not answer: {why}")
            return (v, []) if dry_run else self._done(cfg, v, now, [])
        want = wanted(cfg, v.announce)
        missing = [name for name, on in want if on and name not in states]
        if missing:
            v = Verdict(False, BIRD, f"BIRD has no protocol {missing[0]} (does bird.conf include "
                                     f"{cfg.announce.include}, and has ipvs-sync written it?)")
            want = wanted(cfg, False)
        if dry_run:
            return v, [bird.switch(cfg.announce, name, on, dry_run=True) for name, on in want
                       if name in states and _is_on(states[name]) != on]
        held = switching(cfg, 2 * self.timeout)
        try:
            if v.announce:
                # again, just before enabling, under the switch lock: a --drain either came
                # before (its flag is seen here) or waits for this round and disables after it
                flag = "being set" if held is None else drained(cfg)
                if flag is not None:
                    v = Verdict(False, DRAIN, f"drained ({state.drain_path(cfg)}: {flag})")
                    want = wanted(cfg, False)
            switched, failed = _switch(cfg, states, want, self.timeout)
            if failed and v.announce:       # half an announcement is none: take back what went on
                v = Verdict(False, BIRD, f"BIRD did not enable: {failed}")
                more, failed = _switch(cfg, states, wanted(cfg, False), self.timeout)
                switched += more
        finally:
            if held is not None:
                held.close()
        self._say("withdraw", failed and f"cannot withdraw: {failed}", log.error)
        return self._done(cfg, v, now, switched)

    def _done(self, cfg, v, now, switched):
        before = self.last
        if before is None or (before.announce, before.key) != (v.announce, v.key):
            self.since = now
            vips = vips_text(cfg)
            if v.announce:
                log.info(f"announcing {vips}: {v.why}")
            elif before is None:
                log.info(f"not announcing {vips}: {v.why}")
            elif before.announce:     # a warning unless asked for (a drain, a stop)
                (log.info if v.key in (DRAIN, STOPPED) else log.warning)(f"withdrawing {vips}: {v.why}")
            else:
                log.info(f"still not announcing {vips}: {v.why}")
        elif switched:      # the verdict held, BIRD had it otherwise: a configure, a restart, a hand
            names = ", ".join(name for name, _ in switched)
            if v.announce:
                log.warning(f"{names} found disabled in BIRD (a birdc configure or a restart): enabled again")
            else:
                log.warning(f"{names} found enabled in BIRD, not by lvs-announce: disabled again ({v.why})")
        self.last = v
        self._save(cfg, v, now)
        return v

    def _save(self, cfg, v, now):
        try:
            state.save(state.announce_path(cfg), {"announced": v.announce, "key": v.key, "reason": v.why,
                                                   "since": self.since, "checked": now, "every": self.every},
                       durable=False, indent=None)
            self._say("state", None, log.error)
        except OSError as e:        # the announcement does not depend on the file
            self._say("state", f"{e}", log.error)

    def _say(self, what, line, logger):
        """Log line once until it changes (None: the condition is gone)."""
        if line and self.said.get(what) != line:
            logger(line)
        self.said[what] = line


def withdraw(cfg, why, timeout=bird.BIRDC_TIMEOUT, gate=None, key=STOPPED):
    """Disable both protocols now (SIGTERM, --withdraw, --drain); None when done, else why not.
    gate: the running Gate, whose memory (and its transition line) says so too; key: the
    verdict's key (DRAIN for --drain, which lvs-status --check takes as planned)."""
    states, failed = bird.protocol_states(cfg.announce, timeout)
    switched = []
    if states is not None:
        switched, failed = _switch(cfg, states, wanted(cfg, False), timeout)
    if failed:
        log.error(f"cannot withdraw: {failed}")
    if gate is None:        # a run of its own: a line only when it took something back
        if key != DRAIN and not switched and \
                state.load(state.announce_path(cfg), {}, check_verdict).get("announced") is False:
            return failed   # the gate that ended said so itself: its reason stays in the file
        gate = Gate(None, timeout)
        gate.last = Verdict(bool(switched), OK if switched else STOPPED, why)
    gate._done(cfg, Verdict(False, key, why), gate.clock(), [])
    return failed


def check_verdict(data):
    """announce.json's shape as Gate._save writes it, for state.load (here and lvs-status)."""
    state.obj(data, "the file")
    state.boolean(data.get("announced"), "announced")
    state.text(data.get("key"), "key", 40)
    state.text(data.get("reason"), "reason")
    if data.get("since") is not None:
        state.timestamp(data["since"], "since")
    state.timestamp(data.get("checked"), "checked")
    if data.get("every") is not None:
        state.number(data["every"], "every", 0.001, 86400)
    return data


def switching(cfg, wait):
    """The switch lock (RUN_DIR/announce-switch.lock), or None when it was not had within wait s.

    The gate holds it from its last look at the drain flag to its last birdc enable, and
    --drain from writing the flag to its last birdc disable: a drain can then never be
    followed by an enable that looked at the flag before it was set."""
    from .lock import Lock
    try:
        return Lock(cfg.run_dir, "announce-switch", wait=wait)
    except Fatal:
        return None


def drain(cfg, why):
    """Set the drain flag (why, its first line), then withdraw at once; None or why BIRD did not."""
    why = " ".join(why.split()) or "drained"
    # a round's birdc calls take at most 2 timeouts each; past that the gate is stuck in BIRD
    held = switching(cfg, 4 * bird.BIRDC_TIMEOUT + 1)
    if held is None:
        log.warning(f"{cfg.run_dir}/announce-switch.lock: lvs-announce's round holds it; draining anyway")
    try:
        os.makedirs(os.path.dirname(state.drain_path(cfg)), exist_ok=True)
        state.replace(state.drain_path(cfg), (why + "\n").encode(), mode=0o644)
        log.info(f"{state.drain_path(cfg)}: drained ({why})")
        return withdraw(cfg, f"drained ({state.drain_path(cfg)}: {why})", key=DRAIN)   # as a round says it
    finally:
        if held is not None:
            held.close()


def undrain(cfg):
    """Remove the drain flag; the running gate announces at its next round if all else holds.
    True when there was one."""
    try:
        os.unlink(state.drain_path(cfg))
    except FileNotFoundError:
        return False
    log.info(f"{state.drain_path(cfg)}: removed, lvs-announce announces again when all holds")
    return True


def run(cfg, path, every=None, dry_run=False, kernel=None, notify=None, out=print):
    """lvs-announce's work: one round, or rounds every `every` seconds (every.run) until SIGTERM,
    then withdraw.  The exit code: see bin/lvs-announce."""
    from . import every as loop
    from .errors import ERROR, NOT_CONFIGURED, NOT_RUNNING, OK, USAGE
    from .lock import Lock
    if every is not None and dry_run:
        raise Fatal("--dry-run and --every do not mix: a dry run looks once", USAGE)
    if not cfg.announce.bgp:
        raise Fatal(f"{cfg.path}: [announce] mode is not bgp: nothing to announce", NOT_CONFIGURED)
    held = None if dry_run else Lock(cfg.run_dir, "lvs-announce")  # noqa: F841 (held until exit)
    gate = Gate(kernel or sync.open_kernel())
    gate.every = every
    if dry_run:
        v, commands = gate.round(cfg, dry_run=True)
        out(f"# {'announce' if v.announce else 'withdraw'}: {v.why}")
        for line in commands:
            out(line)
        return OK
    if every is None:
        v = gate.round(cfg)
        if not v.announce and not log.verbose():
            log.warning(f"not announcing: {v.why}")
        return OK if v.announce else ERROR if v.key == BIRD else NOT_RUNNING
    if notify is None:
        from . import sdnotify
        notify = sdnotify.Notifier()
    latest, told = [cfg], []

    def round_(cfg, why):
        latest[0] = cfg
        v = gate.round(cfg)
        status = f"{'announcing' if v.announce else 'not announcing'}: {v.why}"
        if not told:
            notify.ready(status)
        elif told[-1] != status:
            notify.status(status)
        told[:] = [status]
        now = time.monotonic()
        if now >= notify.due:
            notify.ping(now)

    try:
        loop.run(path, cfg, every, round_)
    finally:
        notify.stopping("withdrawing")
        withdraw(latest[0], "lvs-announce stopped", gate=gate)
    return OK
