"""lvskit.sdnotify against a real AF_UNIX datagram socket standing for systemd's, by path and abstract."""
import math
import os
import select
import socket
import struct
import subprocess
import threading

import pytest

from lvskit import sdnotify

UCRED = struct.Struct("3i")     # struct ucred: pid, uid, gid


class Manager:
    """The manager's end: a datagram socket that, as systemd's does, gets each sender's pid."""

    def __init__(self, where):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(where)
        self.sock.settimeout(5)
        name = self.sock.getsockname()
        # An abstract name comes back as bytes starting with NUL: '@' in $NOTIFY_SOCKET.
        self.env = "@" + name[1:].decode() if isinstance(name, bytes) else name

    def message(self):
        """(pid, [assignments]) of the next datagram."""
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        pid = next(UCRED.unpack(d)[0] for level, kind, d in anc
                   if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS))
        return pid, data.decode().split("\n")

    def pending(self):
        """True when a datagram is queued (it stays queued)."""
        return bool(select.select([self.sock], [], [], 0)[0])


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    # The abstract name is the kernel's choice (autobind on an empty address): no guessed name.
    m = Manager(str(tmp_path / "notify") if request.param == "path" else "")
    yield m
    m.sock.close()


def test_ready_status_watchdog_stopping_reach_the_manager(manager):
    env = {"NOTIFY_SOCKET": manager.env, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    times = iter([100.0])
    n = sdnotify.Notifier(env, clock=lambda: next(times))
    assert n and n.period == 1.5 and n.due == math.inf     # no ping before ready
    assert n.ready("beating\nevery 20 ms") == 101.5
    assert manager.message() == (os.getpid(), ["READY=1", "STATUS=beating every 20 ms"])
    assert n.ping(200.0) == 201.5 == n.due
    assert manager.message() == (os.getpid(), ["WATCHDOG=1"])
    n.status("active")
    assert manager.message()[1] == ["STATUS=active"]
    n.stopping()
    assert manager.message()[1] == ["STOPPING=1"]
    assert not manager.pending()


def test_without_a_watchdog_ready_only(manager):
    n = sdnotify.Notifier({"NOTIFY_SOCKET": manager.env})
    assert n.period is None and n.ready() == math.inf
    assert manager.message()[1] == ["READY=1"]
    n.ping(5.0)
    assert not manager.pending()


@pytest.mark.parametrize("usec, pid, period", [
    ("2000000", None, 1.0), ("2000000", "self", 1.0), ("2000000", "other", None),
    ("2000000", "x", None), ("0", None, None), ("-5", None, None), ("2s", None, None), (None, None, None),
])
def test_watchdog_is_for_the_named_process_only(tmp_path, usec, pid, period):
    """sd_watchdog_enabled(3): WATCHDOG_USEC a positive integer, WATCHDOG_PID absent or ours."""
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
    assert sdnotify.Notifier(env).period == period


def test_variables_leave_the_environment_children_inherit_none(manager, monkeypatch):
    """The takeover worker and `takeover status` must not speak for the daemon."""
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = sdnotify.Notifier()
    assert n.period == 0.5
    out = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    assert not [v for v in sdnotify.VARIABLES if v + "=" in out]
    n.ready()
    assert manager.message()[1] == ["READY=1"]


def test_no_socket_is_a_no_op():
    n = sdnotify.Notifier({"WATCHDOG_USEC": "1000000"})
    assert not n and n.period is None
    assert n.send("READY=1") is False and n.ready("x") == math.inf and n.ping(1.0) == math.inf
    n.stopping()


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_an_unusable_address_is_said_once_and_ignored(value, capsys):
    from lvskit import log
    log.setup("hb-send", verbose=True, use_syslog=False)
    n = sdnotify.Notifier({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000000"})
    assert not n and n.period is None and n.ready() == math.inf
    assert f"NOTIFY_SOCKET={value}: neither a path nor @abstract" in capsys.readouterr().err


def test_a_manager_gone_never_raises_and_is_logged_once(tmp_path, capsys):
    from lvskit import log
    log.setup("hb-send", verbose=True, use_syslog=False)
    m = Manager(str(tmp_path / "notify"))
    n = sdnotify.Notifier({"NOTIFY_SOCKET": m.env, "WATCHDOG_USEC": "1000000"})
    m.sock.close()
    os.unlink(m.env)
    assert n.send("READY=1") is False
    assert n.ping(1.0) == 1.5                   # the loop's schedule goes on
    err = capsys.readouterr().err
    assert err.count("telling systemd through") == 1, err


def test_a_manager_that_does_not_read_never_blocks_the_sender(manager):
    """Its queue full, a ping is dropped (False), not waited on: the heartbeat goes on."""
    n = sdnotify.Notifier({"NOTIFY_SOCKET": manager.env, "WATCHDOG_USEC": "1000000"})
    results = []
    t = threading.Thread(target=lambda: results.extend(n.send("WATCHDOG=1") for _ in range(5000)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a send blocked"
    assert results[0] is True and results[-1] is False
