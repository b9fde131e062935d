"""Logging: one syslog datagram per event, nothing on stderr unless asked."""
import socket

from lvskit import log


def test_syslog_lines_reach_the_socket_and_stderr_stays_quiet(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr(log, "SYSLOG_PATH", path)
    monkeypatch.setattr(log, "_sock", None)
    log.setup("ipvs-sync", verbose=False, use_syslog=True)
    monkeypatch.setattr(log, "_verbose", False)         # pytest's stderr may look like a tty
    log.info("ipvsadm -e -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 4")
    log.error("something failed")
    first, second = server.recv(4096).decode(), server.recv(4096).decode()
    assert first.startswith("<30>ipvs-sync[") and first.endswith("]: ipvsadm -e -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 4")
    assert second.startswith("<27>ipvs-sync[")          # daemon.err
    err = capsys.readouterr().err
    assert "ipvsadm" not in err and "something failed" in err   # errors always reach stderr
    server.close()


def test_missing_syslog_socket_is_tried_once(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", use_syslog=True)
    log.info("a")
    assert log._sock is False
    log.info("b")                                       # no new attempt, no error
    assert log._sock is False


def test_heard_says_whether_an_info_line_reaches_anyone(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", verbose=False, use_syslog=True)
    monkeypatch.setattr(log, "_verbose", False)
    assert log.heard() is False and log._sock is False     # nobody: callers skip formatting
    monkeypatch.setattr(log, "_verbose", True)
    assert log.heard() is True                             # stderr hears it
    monkeypatch.setattr(log, "_verbose", False)
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr(log, "SYSLOG_PATH", path)
    monkeypatch.setattr(log, "_sock", None)
    assert log.heard() is True
    log.info("a line")
    assert server.recv(4096).decode().endswith("]: a line")
    log.setup("x", use_syslog=False)
    assert log.heard() is False
    server.close()
    log.setup("x", use_syslog=True)
    monkeypatch.setattr(log, "_sock", None)
    open(path + "-file", "w").close()           # there, but no socket: a daemon restarting
    monkeypatch.setattr(log, "SYSLOG_PATH", path + "-file")
    assert log.heard() is True and log._sock is None    # the next line tries again


def test_infos_sends_a_line_each_and_reads_nothing_when_nobody_hears(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr(log, "SYSLOG_PATH", path)
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", verbose=False, use_syslog=True)
    monkeypatch.setattr(log, "_verbose", False)
    log.infos(f"line {i}" for i in range(3))
    assert [server.recv(4096).decode().partition("]: ")[2] for _ in range(3)] == ["line 0", "line 1", "line 2"]
    log._sock.close()                           # the daemon's socket went away: as info(), reconnect
    log.infos(["again"])
    assert server.recv(4096).decode().endswith("]: again")
    server.close()

    def nobody():
        raise AssertionError("formatted for nobody")
        yield
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    log.infos(nobody())
    monkeypatch.setattr(log, "_verbose", True)
    log.infos(["to stderr"])
    assert "x: to stderr" in capsys.readouterr().err


def test_a_forked_child_logs_its_own_pid(tmp_path, monkeypatch):
    import os
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr(log, "SYSLOG_PATH", path)
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", verbose=False, use_syslog=True)
    monkeypatch.setattr(log, "_verbose", False)
    log.info("parent")
    assert server.recv(4096).decode() == f"<30>x[{os.getpid()}]: parent"
    pid = os.fork()
    if pid == 0:
        try:
            log.info("child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert server.recv(4096).decode() == f"<30>x[{pid}]: child"
    log.setup("y", use_syslog=True)
    log.info("renamed")
    assert server.recv(4096).decode() == f"<30>y[{os.getpid()}]: renamed"
    server.close()
