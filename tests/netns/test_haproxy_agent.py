"""Debian's haproxy (2.6) against a real lvs-agent, in a network namespace of our own.

HAProxy polls the agent (agent-check) for a backend server that really serves
HTTP; the test reads HAProxy's view through its stats socket (`show stat`:
status and weight) and asks the frontend as a client would.  The agent's
load is its --proc-root's loadavg, which the test writes; its admin state is
its state file.  The ports are fixed: the namespace is ours alone.

A second test sends HAProxy chosen lines from a stand-in agent and checks
that what HAProxy does with each is what lvskit.agentproto says it means:
the rules lvskit follows are HAProxy's, checked against HAProxy itself.
"""
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "lib"))
from lvskit import agentproto  # noqa: E402

PY = "/usr/bin/python3"
AGENT = os.path.join(ROOT, "bin", "lvs-agent")
FRONT, WEB, AGENT_PORT = 8000, 8080, 7766
IWEIGHT = 100       # the server's configured weight: N% is then weight N

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make apt-deps)"),
]

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
backend be
    server web 127.0.0.1:{web} weight {iweight} check inter 100ms agent-check agent-port {agent} agent-inter 100ms agent-send "{agent_send}\\n"
"""

# A stand-in agent: answers every connection with the bytes of a file the test
# writes (argv 1), then counts the answers it gave in another (argv 3).
STAND_IN = """\
import os, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[2])))
srv.listen(64)
n = 0
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(open(sys.argv[1], "rb").read())
    n += 1
    with open(sys.argv[3] + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(sys.argv[3] + ".tmp", sys.argv[3])
"""


# A client: the HTTP status it gets (HAProxy's 503 too), printed.
CLIENT = """\
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


class Lab:
    """A namespace with haproxy, a web server behind it, and an agent on the same host."""

    def __init__(self, tmp):
        self.tmp, self.ns, self.procs = tmp, f"lvskit-hap-{os.getpid()}", []
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        try:
            self.run("ip", "link", "set", "lo", "up", check=True)
            self.sock = str(tmp / "haproxy.sock")
            (tmp / "haproxy.cfg").write_text(HAPROXY_CFG.format(sock=self.sock, front=FRONT, web=WEB,
                                                                 iweight=IWEIGHT, agent=AGENT_PORT,
                                                                 agent_send="backend be server web"))
            (tmp / "www").mkdir()
            (tmp / "www" / "index.html").write_text("served\n")
            self.start([PY, "-m", "http.server", "-b", "127.0.0.1", "-d", str(tmp / "www"), str(WEB)])
        except BaseException:
            self.close()
            raise

    def run(self, *argv, check=False):
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
                              timeout=30, check=check)

    def start(self, argv, **kw):
        """A process in the namespace; its stderr in a file (a pipe nobody reads would fill)."""
        with open(self.tmp / f"stderr-{len(self.procs)}", "w+b") as err:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True, **kw)
        p.err_path = err.name
        self.procs.append(p)
        return p

    def start_haproxy(self):
        self.haproxy = self.start(["haproxy", "-db", "-f", str(self.tmp / "haproxy.cfg")])
        wait(lambda: os.path.exists(self.sock), "haproxy's stats socket", self.haproxy)

    def stats(self):
        """show stat's row of server web: {field: value}."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b"".join(iter(lambda: s.recv(65536), b""))
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return next(r for r in rows if (r["pxname"], r["svname"]) == ("be", "web"))

    def status(self):
        """(status, weight) as HAProxy shows them: ('UP', 73), ('MAINT', 40), ..."""
        row = self.stats()
        return row["status"], int(row["weight"])

    def wait_status(self, want, what=""):
        """Wait until HAProxy shows (status, weight) want; its view when it does not."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = self.status()
            if got == want:
                return got
            time.sleep(0.05)
        pytest.fail(f"{what}: HAProxy shows {self.status()}, {self.stats()['agent_desc']!r}; want {want}")

    def client(self):
        """The HTTP status a client of the frontend gets (503: no server for it)."""
        res = self.run(PY, "-c", CLIENT, f"http://127.0.0.1:{FRONT}/index.html")
        assert res.returncode == 0, res.stderr
        return int(res.stdout)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        subprocess.run(["ip", "netns", "del", self.ns], check=True)


def wait(predicate, what, proc=None, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: exited {proc.returncode}: {open(proc.err_path).read()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def write(path, data):
    """Replace a file whole, so that a reader never sees it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.replace(tmp, path)


def fake_proc(d, load):
    d.mkdir(exist_ok=True)
    write(d / "loadavg", f"{load:.2f} 0.50 0.25 1/100 1234\n")
    write(d / "stat", "cpu  1 2 3\n" + "".join(f"cpu{i} 1 2 3\n" for i in range(4)) + "intr 5\n")
    return str(d)


@pytest.mark.parametrize("mode", ["listen", "inetd"])
def test_weight_follows_load_and_drain_maint_up_returns_the_server(lab, tmp_path, mode):
    proc = fake_proc(tmp_path / "proc", load=1.08)           # 4 CPUs: 73% spare
    state = tmp_path / "agent-state"
    cfg = tmp_path / "lvskit.ini"
    cfg.write_text(f"[agent]\nmemory = off\nstate_file = {state}\nutmp = {tmp_path}/utmp\n")
    agent = [PY, AGENT, "-c", str(cfg), "--proc-root", proc]
    if mode == "listen":
        lab.start(agent + ["--listen", f"127.0.0.1:{AGENT_PORT}"])
    else:
        # inetd's way, as lvs-agent.socket (Accept=yes) does it: a process per
        # connection, the connection on stdin and stdout
        lab.start(["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{AGENT_PORT}", *agent],
                  env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    lab.start_haproxy()

    assert lab.wait_status(("UP", 73), "agent up ready 73%") == ("UP", 73)
    assert lab.client() == 200
    fake_proc(tmp_path / "proc", load=2.40)                  # 40% spare
    lab.wait_status(("UP", 40), "load went up")
    assert lab.client() == 200

    write(state, "drain\n")
    lab.wait_status(("DRAIN (agent)", 40), "state file drain")
    assert lab.client() == 503                               # no new connection for it
    write(state, "maint\n")
    lab.wait_status(("MAINT", 40), "state file maint")
    assert lab.client() == 503
    state.unlink()
    lab.wait_status(("UP", 40), "state file gone")
    assert lab.client() == 200

    write(state, "down\n")
    lab.wait_status(("DOWN (agent)", 40), "state file down")
    assert lab.client() == 503
    write(state, "up\n")
    lab.wait_status(("UP", 40), "state file up")
    assert lab.client() == 200


def expected(line):
    """What HAProxy should show after `line`, starting from UP at weight 100, by agentproto's reading."""
    try:
        a = agentproto.parse(line)
    except agentproto.AgentError:
        return ("UP", IWEIGHT)              # refused here; HAProxy applies nothing either (see below)
    weight = IWEIGHT if a.capacity is None else min(256, round(IWEIGHT * a.capacity))
    # HAProxy's show stat: the weight as the line set it, except in MAINT (it stays as it
    # was, here the reset's)
    if a.state == "maint":
        return "MAINT", IWEIGHT
    return {"up": "UP", "drain": "DRAIN (agent)", "maint": "MAINT", "down": "DOWN (agent)"}[a.state], weight


# Each line after the reset "up ready 100%".  The refused ones are chosen so that
# HAProxy's applying only the words it knows would still leave UP at 100.
LINES = [b"up ready 73%\n", b"73%\n", b"up,drain\t40%\n", b"40% maint up\n", b"down ready 40%\n",
         b"fail\n", b"stopped # gone fishing\n", b"up down\n", b"down up 20%\n", b"drain ready\n",
         b"50% 60%\n", b"UP READY 150%\n", b"up 99999999999999999999%\n", b"up 0%\n",
         b"up maxconn:30 35%\n", b"up 45%\ndown\n",
         # refused by agentproto
         b"failed\n", b"12.5%\n", b"up 50%x\n", b"up#maint\n", b"50\n"]


def test_haproxy_reads_each_line_as_agentproto_does(lab, tmp_path):
    said, count = tmp_path / "line", tmp_path / "answers"
    write(said, b"up ready 100%\n")
    lab.start([PY, "-c", STAND_IN, str(said), str(AGENT_PORT), str(count)])
    lab.start_haproxy()

    def answers():
        return int(count.read_text()) if count.exists() else 0

    for line in LINES:
        write(said, b"up ready 100%\n")
        lab.wait_status(("UP", IWEIGHT), f"reset before {line!r}")
        write(said, line)
        # two more answers: the second was surely read from the new file
        n = answers()
        wait(lambda: answers() >= n + 2, f"two answers of {line!r}")
        lab.wait_status(expected(line), f"after {line!r}")

    # Why every line says ready: "up" alone (what lvs-agent used to answer after
    # maint) leaves the server in MAINT for good.
    for line, want in ((b"maint\n", ("MAINT", IWEIGHT)), (b"up 40%\n", ("MAINT", IWEIGHT)),
                       (b"up ready 40%\n", ("UP", 40))):
        write(said, line)
        n = answers()
        wait(lambda: answers() >= n + 2, f"two answers of {line!r}")
        assert lab.wait_status(want, f"after {line!r}") == want
