"""Blocking exchanges that end by a deadline, whatever the peer does.

A per-read timeout does not bound an exchange: a server that trickles its
answer a byte at a time resets it with every byte.  Here every exchange (a
connect, what it sends, the whole answer) runs on a daemon thread of its own
with one deadline; the caller waits until the deadline and no longer, and
whatever is still running then is cut: the sockets it registered are shut
down, so its blocked read returns at once and its thread ends instead of
piling up round after round.  Daemon threads never keep a finished script
alive.

One thread per exchange, all at once: with a bounded pool, enough slow
servers would hold every thread and the healthy ones queued behind them
would miss their deadlines.
"""
import socket
import threading
import time

_local = threading.local()


class Exchange:
    """One exchange's deadline, and the sockets to shut down when it passes."""

    def __init__(self, deadline):
        self.deadline = deadline
        self._lock = threading.Lock()
        self._socks = []        # duplicates of the exchange's sockets: shut down from any thread
        self.cut = False

    def left(self):
        """Seconds until the deadline (0 once it passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def watch(self, sock):
        """Shut sock down at the deadline (at once when it already passed).

        A duplicate descriptor is kept, not sock itself: TLS wraps the socket
        into a new object, and shutting down the duplicate ends the connection
        whatever object reads from it."""
        dup = sock.dup()
        with self._lock:
            if self.cut:
                _shutdown(dup)
                dup.close()
            else:
                self._socks.append(dup)

    def cut_now(self):
        with self._lock:
            self.cut = True
            for s in self._socks:
                _shutdown(s)

    def close(self):
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks = []


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass        # not connected yet, or already closed by the peer


def current():
    """The Exchange the calling thread runs, or None outside run_all."""
    return getattr(_local, "exchange", None)


class _Job:
    def __init__(self, fn, deadline):
        self.fn, self.exchange = fn, Exchange(deadline)
        self.done = threading.Event()
        self.result = self.error = None
        self.finished = None

    def run(self):
        _local.exchange = self.exchange
        try:
            self.result = self.fn(self.exchange)
        except Exception as e:      # reported to the caller, never lost in the thread
            self.error = e
        finally:
            _local.exchange = None
            self.exchange.close()
            self.finished = time.monotonic()
            self.done.set()


class Batch:
    """Exchanges started at once; wait() collects them by their deadlines."""

    def __init__(self, jobs):
        self.jobs = {}
        for key, (deadline, fn) in jobs.items():
            job = self.jobs[key] = _Job(fn, deadline)
            try:
                threading.Thread(target=job.run, name=f"exchange {key}", daemon=True).start()
            except RuntimeError as e:     # no thread to be had: that exchange fails, the rest go on
                job.error, job.finished = e, time.monotonic()
                job.done.set()

    def wait(self):
        """{key: result}; an exchange that raised gives its exception, one
        not finished by its deadline gives TimeoutError (and is cut)."""
        out = {}
        for key, job in sorted(self.jobs.items(), key=lambda kv: kv[1].exchange.deadline):
            job.done.wait(job.exchange.left())
            if job.done.is_set() and job.finished <= job.exchange.deadline:
                out[key] = job.error if job.error is not None else job.result
            else:
                job.exchange.cut_now()
                out[key] = TimeoutError()
        return out


def run_all(jobs):
    """jobs: {key: (deadline, fn)}, fn(exchange) -> result; see Batch.wait."""
    return Batch(jobs).wait()
