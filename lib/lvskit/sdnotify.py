"""Telling systemd how a daemon is: its notify protocol (sd_notify(3)), standard library only.

A service of Type=notify finds in $NOTIFY_SOCKET the AF_UNIX datagram socket
of its manager (a path, or '@' for the abstract namespace) and sends it
newline-separated assignments: READY=1 once it really works, STATUS=... for
`systemctl status`, STOPPING=1 as it ends, and WATCHDOG=1 at least every
$WATCHDOG_USEC microseconds (WatchdogSec=), or systemd kills it (SIGABRT)
and, with Restart=, starts it again.  $WATCHDOG_PID, when set, names the one
process the watchdog is meant for (sd_watchdog_enabled(3)).

Without $NOTIFY_SOCKET (cron, by hand, tests) every call does nothing.  The
variables are taken out of the environment when read: a child (hb-listen's
takeover worker, `takeover status`) must not speak for the daemon, and under
NotifyAccess=main systemd would ignore it anyway.

Nothing here may stop a heartbeat: the socket does not block (a manager that
does not read fills its queue, and the message is dropped), and a failed send
is logged once and otherwise ignored.
"""
import math
import os
import socket
import time

from . import log

VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def watchdog_usec(environ, pid):
    """sd_watchdog_enabled(3): the watchdog timeout in microseconds for process pid, or None.

    None when WATCHDOG_USEC is missing or not a positive integer, or when
    WATCHDOG_PID is set and names another process.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    if environ.get("WATCHDOG_PID"):
        try:
            if int(environ["WATCHDOG_PID"]) != pid:
                return None
        except ValueError:
            return None
    return usec


def address(value):
    """$NOTIFY_SOCKET as a socket address: an absolute path, or '@name' in the abstract namespace.

    None for anything else (systemd's own sd_notify refuses it too).
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


class Notifier:
    """This daemon's line to systemd.

    due: the monotonic time the next WATCHDOG=1 is due (math.inf when there
    is no watchdog, or before ready()).  A loop keeps it in a local and
    calls ping() when its clock passes it: a float compare per round, and a
    stuck loop stops the pings.  period: half the watchdog timeout, as
    sd_watchdog_enabled(3) advises, or None.
    """

    def __init__(self, environ=None, pid=None, clock=time.monotonic):
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        where = environ.get("NOTIFY_SOCKET", "")
        usec = watchdog_usec(environ, pid)
        for name in VARIABLES:
            environ.pop(name, None)
        self.clock, self.due, self.sock, self.failed = clock, math.inf, None, False
        self.address = address(where) if where else None
        self.period = usec / 2e6 if usec and self.address else None
        if where and self.address is None:
            log.warning(f"NOTIFY_SOCKET={where}: neither a path nor @abstract; not telling systemd")
            return
        if self.address:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.sock.setblocking(False)
            except OSError as e:
                self._failed(e)

    def __bool__(self):
        return self.sock is not None

    def send(self, *assignments):
        """Send "NAME=value" lines in one datagram; False when it did not go (never raises)."""
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(assignments).encode("utf-8", "replace"), self.address)
            return True
        except OSError as e:
            self._failed(e)
            return False

    def _failed(self, e):
        if not self.failed:
            self.failed = True
            where = self.address.replace("\0", "@") if self.address else "?"
            log.warning(f"telling systemd through {where}: {e.strerror or e}")

    def ready(self, status=None):
        """READY=1 (and STATUS=status); the watchdog starts now.  Returns due."""
        self.send("READY=1", *([f"STATUS={_line(status)}"] if status else []))
        self.due = self.clock() + self.period if self.period else math.inf
        return self.due

    def ping(self, now):
        """WATCHDOG=1 at monotonic time now; returns when the next one is due."""
        if self.period is None:
            self.due = math.inf
            return self.due
        self.send("WATCHDOG=1")
        self.due = now + self.period
        return self.due

    def status(self, text):
        self.send(f"STATUS={_line(text)}")

    def stopping(self, status=None):
        self.send("STOPPING=1", *([f"STATUS={_line(status)}"] if status else []))

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _line(text):
    # One assignment per line: a newline in the text would start another.
    return " ".join(str(text).splitlines())
