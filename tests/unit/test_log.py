"""Logging: one syslog datagram per event, nothing on stderr unless asked.

syslog_socket (tests/conftest.py) stands for /dev/log; lvskit.log's state is
put back after each test there too."""
import os

from lvskit import log


def test_syslog_lines_reach_the_socket_and_stderr_stays_quiet(syslog_socket, capsys):
    log.setup("ipvs-sync", use_syslog=True)
    log.info("ipvsadm -e -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 4")
    log.error("something failed")
    first, second = syslog_socket.line(), syslog_socket.line()
    assert first.startswith("<30>ipvs-sync[") and first.endswith("]: ipvsadm -e -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 4")
    assert second.startswith("<27>ipvs-sync[")          # daemon.err
    err = capsys.readouterr().err
    assert "ipvsadm" not in err and "something failed" in err   # errors always reach stderr


def test_missing_syslog_socket_is_tried_once(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", use_syslog=True)
    log.info("a")
    assert log._sock is False
    log.info("b")                                       # no new attempt, no error
    assert log._sock is False


def test_heard_says_whether_an_info_line_reaches_anyone(syslog_socket, tmp_path, monkeypatch):
    assert log.heard() is True
    log.info("a line")
    assert syslog_socket.text() == "a line"
    log.setup("x", use_syslog=False)
    assert log.heard() is False
    monkeypatch.setattr(log, "_verbose", True)
    assert log.heard() is True                             # stderr hears it
    monkeypatch.setattr(log, "_verbose", False)
    log.setup("x", use_syslog=True)
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    assert log.heard() is False and log._sock is False     # nobody: callers skip formatting
    open(tmp_path / "file", "w").close()                   # there, but no socket: a daemon restarting
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "file"))
    monkeypatch.setattr(log, "_sock", None)
    assert log.heard() is True and log._sock is None       # the next line tries again


def test_infos_sends_a_line_each_and_reads_nothing_when_nobody_hears(syslog_socket, tmp_path, monkeypatch,
                                                                    capsys):
    log.infos(f"line {i}" for i in range(3))
    assert [syslog_socket.text() for _ in range(3)] == ["line 0", "line 1", "line 2"]
    log._sock.close()                           # the daemon's socket went away: as info(), reconnect
    log.infos(["again"])
    assert syslog_socket.text() == "again"

    def nobody():
        raise AssertionError("formatted for nobody")
        yield
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    log.infos(nobody())
    monkeypatch.setattr(log, "_verbose", True)
    log.infos(["to stderr"])
    assert "x: to stderr" in capsys.readouterr().err


def test_a_forked_child_logs_its_own_pid(syslog_socket):
    log.info("parent")
    assert syslog_socket.line() == f"<30>x[{os.getpid()}]: parent"
    pid = os.fork()
    if pid == 0:
        try:
            log.info("child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert syslog_socket.line() == f"<30>x[{pid}]: child"
    log.setup("y", use_syslog=True)
    log.info("renamed")
    assert syslog_socket.line() == f"<30>y[{os.getpid()}]: renamed"
