import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
os.environ.setdefault("LVSKIT_NO_SYSLOG", "1")

# Every test (and every script it runs) goes through the parsed-config cache,
# so a cached Config that differs from a fresh parse would show up anywhere.
if "LVSKIT_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile
    os.environ["LVSKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="lvskit-cache-")
    atexit.register(shutil.rmtree, os.environ["LVSKIT_CACHE_DIR"], True)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _log_state():
    """A test that points lvskit.log at a socket of its own leaves the module as it found it
    (else later tests would log to the host's /dev/log, LVSKIT_NO_SYSLOG or not)."""
    from lvskit import log
    names = ("_prog", "_verbose", "_use_syslog", "_to_stderr", "_sock", "SYSLOG_PATH")
    saved, prefixes = {n: getattr(log, n) for n in names}, dict(log._prefixes)
    yield
    for n, v in saved.items():
        setattr(log, n, v)
    log._prefixes.clear()
    log._prefixes.update(prefixes)


class SyslogSocket:
    """A datagram socket standing for /dev/log, which lvskit.log sends to (syslog on, not verbose)."""

    def __init__(self, path):
        import socket
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(2)

    def line(self):
        """The next datagram, whole ("<30>prog[pid]: text")."""
        return self.sock.recv(4096).decode()

    def text(self):
        """The next datagram's text after "prog[pid]: "."""
        return self.line().partition("]: ")[2]


@pytest.fixture
def syslog_socket(tmp_path, monkeypatch):
    from lvskit import log
    s = SyslogSocket(str(tmp_path / "log"))
    monkeypatch.setattr(log, "SYSLOG_PATH", s.path)
    monkeypatch.setattr(log, "_sock", None)
    log.setup("x", verbose=False, use_syslog=True)
    monkeypatch.setattr(log, "_verbose", False)         # pytest's stderr may look like a tty
    yield s
    s.sock.close()
