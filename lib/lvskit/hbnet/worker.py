"""The takeover worker: `takeover --serve`, started once by hb-listen and fed one command per line.

Why a subprocess and not a library call: taking over needs pyroute2, a large
import; paid in a worker started in advance, hb-listen stays the size of a
bare Python and the takeover is still immediate.  And a hook or a kernel
step that hangs or crashes stays in the worker; the heartbeat keeps being
heard.
"""
import subprocess
import time

from .. import log
from ..errors import Fatal


class Worker:
    """The `takeover --serve` subprocess.

    Only its first start is waited for (hb-listen cannot act without it).  A
    restart is not: waiting for "ready" (the worker imports pyroute2 first)
    would stop the loop from reading heartbeats, and the first decision after
    it would see every peer silent for that long: a false takeover.  Instead
    "ready" arrives like an answer, and until then the loop hears but does
    not act.  A command unanswered for TIMEOUT s
    (a worker stuck in the kernel or a hook) restarts it: a stuck worker must
    not freeze every later decision, a release in a split brain included.
    """

    TIMEOUT = 5.0

    def __init__(self, argv, timeout=None):
        self.argv, self.proc, self.pending, self.role, self.sent_at = argv, None, None, None, 0.0
        self.timeout = self.TIMEOUT if timeout is None else timeout
        self.zombies = []
        self.start()
        ok, text = self.answer()
        if not ok:
            raise Fatal(f"{' '.join(self.argv)} did not start ({text or 'no answer'})")

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.fd = self.proc.stdout.fileno()
        self.pending, self.sent_at = "start", time.monotonic()

    def fileno(self):
        return self.fd

    def send(self, command):
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            self.pending, self.sent_at = command, time.monotonic()
        except OSError:
            self.restart("is gone")

    def overdue(self):
        return self.pending is not None and time.monotonic() - self.sent_at > self.timeout

    def answer(self):
        """Read one answer; returns (ok, role or message)."""
        line = self.proc.stdout.readline()
        starting, self.pending = self.pending == "start", None
        if not line:
            if self.role is not None:       # not at the first start: that is hb-listen's failure
                self.restart("died")
            return False, "worker died"
        word, _, rest = line.strip().partition(" ")
        if word == ("ready" if starting else "done") and rest:
            self.role = rest
            return True, rest
        return False, rest or line.strip()

    def restart(self, why):
        log.error(f"takeover worker {why}; restarting it")
        old = self.proc
        try:
            old.kill()
        except OSError:
            pass
        for f in (old.stdin, old.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.zombies = [p for p in self.zombies + [old] if p.poll() is None]
        self.start()
