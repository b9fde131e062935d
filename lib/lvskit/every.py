"""The --every loop of every resident mode: ipvs-sync, check-real, reweight.

After kube-proxy's BoundedFrequencyRunner: run a round, then wait until the
next one is due or an event comes, whichever is first.  The events:
- SIGHUP: the config is read again, and a round runs at once;
- the config file changed: it is read again once it has stayed unchanged
  for SETTLE seconds (an editor, or ``cat new > lvskit.ini``, may be
  rewriting it in place: no piece of a file is ever acted on);
- a file the caller watches changed (ipvs-sync follows check-real's and
  reweight's state files at once).
One reload rule for all: the file is loaded again (configcache.Resident: only
the [service]s that changed are validated again); a config that does not load,
or that a round refuses, is logged and the previous one kept.  SIGTERM and
SIGINT end the loop between rounds, and ``run`` returns OK.
"""
import select
import signal
import socket
import time

from . import configcache, log, state
from .errors import OK, Fatal

SETTLE = 1.0    # seconds a changed config must stay unchanged before it is read
POLL = 0.05     # seconds between looks at the files (a signal wakes the loop at once)
# Why a round runs: what round_ is told.
TIMER, SIGNAL, EDIT, WATCHED = "timer", "sighup", "edit", "watched"


class _Config:
    """The config file's versions: the one read, and an edit settling."""

    def __init__(self, path, settle):
        self.path, self.settle = path, settle
        self.seen = state.file_version(path)
        self.changing, self.since = None, 0.0
        self.resident = configcache.Resident()
        try:
            self.resident.load(path)    # what it builds now, a reload need not build again
        except Fatal:
            pass

    def settled(self, now):
        """True once an edit has stayed the same for the settle time."""
        st = state.file_version(self.path)
        if st == self.seen:
            self.changing = None
            return False
        if st != self.changing:
            if self.changing is None:
                log.info(f"{self.path} changed: reading it once it has not changed for {self.settle:g} s")
            self.changing, self.since = st, now
        return now - self.since >= self.settle

    def reload(self, cfg):
        """The file's config now, or cfg (the previous one) when it does not load."""
        self.seen, self.changing = state.file_version(self.path), None
        try:
            new = self.resident.load(self.path)
        except Fatal as e:
            log.error(f"{e} (keeping the previous config)")
            return cfg
        log.info(f"reloaded {self.path}")
        return new


def run(path, cfg, every, round_, watch=None, refused=(), settle=SETTLE):
    """Call round_(cfg, why) every `every` seconds and on events, until SIGTERM or SIGINT.

    why: TIMER for a round the timer called, SIGNAL, EDIT or WATCHED for one
    that SIGHUP, an edited config or a watched file called early (ipvs-sync
    plans those against its memory of the table, so a change lands at once,
    and reads the kernel back on the timer's rounds and after a SIGHUP).  watch(cfg): paths whose change calls a
    round.  refused: the exceptions by which a round refuses its config; the
    round runs again with the previous config, or, when there is none yet,
    the refusal is logged once and the round tried again at its time.
    """
    stop, hup = [], []
    old = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: hup.append(1))
    watch = watch or (lambda cfg: ())
    conf = _Config(path, settle)
    good, refusal, why, due = None, None, TIMER, 0.0
    wake, woken = socket.socketpair()      # a signal's number is written to it: the wait ends
    wake.setblocking(False)
    woken.setblocking(False)
    old_fd = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
    try:
        while not stop:
            if why == TIMER:
                due = time.monotonic() + every
            watched = [state.file_version(p) for p in watch(cfg)]    # before the round: a write during it counts
            try:
                round_(cfg, why)
                good = cfg
            except refused as e:
                if good is not None:
                    log.error(f"{e} (keeping the previous config)")
                    cfg = good
                    round_(cfg, TIMER)
                elif str(e) != refusal:
                    log.error(str(e))
                refusal = str(e)
            while not stop:
                now = time.monotonic()
                if hup:
                    hup.clear()
                    cfg, why = conf.reload(cfg), SIGNAL
                    break
                if conf.settled(now):
                    cfg, why = conf.reload(cfg), EDIT
                    break
                if now >= due or [state.file_version(p) for p in watch(cfg)] != watched:
                    why = TIMER if now >= due else WATCHED
                    break
                if select.select([woken], [], [], min(POLL, due - now))[0]:
                    woken.recv(4096)
    finally:
        signal.set_wakeup_fd(old_fd)
        wake.close()
        woken.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return OK
