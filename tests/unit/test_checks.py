"""Every check type against real listeners on 127.0.0.1."""
import http.server
import os
import socket
import ssl
import subprocess
import threading
import time


import pytest

import loopback
from lvskit import checks, xdmcp
from lvskit.config import Check
from lvskit.health import DOWN, UNKNOWN, UP, WARNING
from lvskit.model import Dest

LO = "127.0.0.1"


def probe(kind, port, **kw):
    return checks.probe_for(Check(kind=kind, timeout=kw.pop("timeout", 1.0), **kw), Dest(LO, port))


def one(p):
    return checks.run([p])[p]


def refused_port(socks, kind=socket.SOCK_STREAM):
    """A port that refuses, held by a socket for the test's life."""
    s = loopback.refused(LO, kind)
    socks.append(s)
    return s.getsockname()[1]


@pytest.fixture
def serve():
    """serve(fn) runs fn(stop_event) in a thread for the test's life."""
    stop, threads, socks = threading.Event(), [], []

    def start(fn, *args):
        t = threading.Thread(target=fn, args=(stop,) + args, daemon=True)
        t.start()
        threads.append(t)
    yield start, socks
    stop.set()
    for s in socks:
        s.close()
    for t in threads:
        t.join(2)


def tcp_listener(socks, backlog=16):
    s = socket.socket()
    s.bind((LO, 0))
    s.listen(backlog)
    socks.append(s)
    return s, s.getsockname()[1]


def test_tcp_up_refused_and_timeout(serve):
    _, socks = serve
    _, port = tcp_listener(socks)
    r = one(probe("tcp", port))
    assert r.status == UP and r.reason.startswith("connected")
    r = one(probe("tcp", refused_port(socks)))
    assert (r.status, r.reason) == (DOWN, "connection refused")
    # a listener whose accept queue is full drops SYNs: the connect hangs
    full, fillers = loopback.never_accepting(LO)
    socks += [full] + fillers
    t0 = time.monotonic()
    r = one(probe("tcp", full.getsockname()[1], timeout=0.5))
    assert r.status == DOWN and "timeout" in r.reason
    assert 0.4 < time.monotonic() - t0 < 1.5


def banner_server(stop, sock, text):
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            c, _ = sock.accept()
        except (socket.timeout, OSError):
            continue
        c.sendall(text)
        c.close()


@pytest.mark.parametrize("text,expect,status", [
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "", UP),
    (b"220 smtp ready\r\n", "", DOWN),
    (b"220 smtp ready\r\n", "^220 ", UP),
    (b"", "", DOWN),
])
def test_ssh_banner(serve, text, expect, status):
    start, socks = serve
    s, port = tcp_listener(socks)
    start(banner_server, s, text)
    r = one(probe("ssh", port, expect=expect))
    assert r.status == status, r.reason


def udp_server(stop, sock, reply):
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(2048)
        except (socket.timeout, OSError):
            continue
        out = reply(data)
        if out is not None:
            sock.sendto(out, peer)


def udp_socket(socks, address=LO):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, 0))
    socks.append(s)
    return s, s.getsockname()[1]


def test_udp_echo_no_reply_and_refused(serve):
    start, socks = serve
    echo, eport = udp_socket(socks)
    start(udp_server, echo, lambda d: d)
    mute, mport = udp_socket(socks)
    start(udp_server, mute, lambda d: None)
    r = one(probe("udp", eport, send=b"ping\x00"))
    assert r.status == UP
    assert one(probe("udp", eport, send=b"ping", expect="^pong")).status == DOWN
    assert one(probe("udp", eport, send=b"pong!", expect="^pong")).status == UP
    r = one(probe("udp", mport, send=b"x", timeout=0.3))
    assert r.status == DOWN and "timeout" in r.reason
    r = one(probe("udp", refused_port(socks, socket.SOCK_DGRAM), send=b"x"))
    assert (r.status, r.reason) == (DOWN, "connection refused")


def test_xdmcp_query_answered_by_willing(serve):
    start, socks = serve
    queries = []

    def display_manager(data):
        queries.append(xdmcp.parse(data))
        return xdmcp.willing(b"hades", b"1 user, load 0.10")
    good, gport = udp_socket(socks)
    start(udp_server, good, display_manager)
    busy, bport = udp_socket(socks)
    start(udp_server, busy, lambda d: xdmcp.unwilling(b"kama", b"too many sessions"))
    junk, jport = udp_socket(socks)
    start(udp_server, junk, lambda d: b"hello")
    r = one(probe("xdmcp", gport))
    assert r.status == UP and "1 user" in r.reason
    assert queries == [(xdmcp.QUERY, {"auth_names": []})]
    r = one(probe("xdmcp", bport))
    assert r.status == DOWN and "Unwilling: too many sessions" in r.reason
    r = one(probe("xdmcp", jport))
    assert r.status == DOWN and "bad XDMCP reply" in r.reason


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(self.path.strip("/").split("/")[0] or 200)
        body = f"host={self.headers.get('Host')} path={self.path}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def httpd():
    servers = []

    def make(context=None):
        srv = http.server.ThreadingHTTPServer((LO, 0), Handler)
        if context:
            srv.socket = context.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv.server_address[1]
    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_http_status_range_host_and_body(httpd, serve):
    _, socks = serve
    port = httpd()
    assert one(probe("http", port)).status == UP
    r = one(probe("http", port, path="/503"))
    assert (r.status, r.reason) == (DOWN, "HTTP 503, want 200-399")
    assert one(probe("http", port, path="/503", status=((500, 503),))).status == UP
    assert one(probe("http", port, path="/301")).status == UP
    r = one(probe("http", port, host="www.ime.example", body=r"host=www\.ime\.example path=/$"))
    assert r.status == UP, r.reason
    r = one(probe("http", port, body="^nothing like this"))
    assert r.status == DOWN and "body does not match" in r.reason
    r = one(probe("http", refused_port(socks)))
    assert (r.status, r.reason) == (DOWN, "connection refused")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, crt = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", key, "-out", crt, "-subj", "/CN=www.ime.example",
                    "-addext", "subjectAltName=DNS:www.ime.example"],
                   check=True, capture_output=True)
    return key, crt


def test_https_verifies_by_default(httpd, cert):
    key, crt = cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    port = httpd(ctx)
    # verification on, against our CA and the name: up
    r = one(probe("https", port, host="www.ime.example", ca=crt))
    assert r.status == UP, r.reason
    # on by default: a certificate nobody vouches for is a failure
    r = one(probe("https", port, host="www.ime.example"))
    assert r.status == DOWN and r.reason.startswith("TLS")
    # the right CA but the wrong name: a failure too
    r = one(probe("https", port, host="other.example", ca=crt))
    assert r.status == DOWN and r.reason.startswith("TLS"), r.reason
    # verification off: up
    assert one(probe("https", port, verify=False)).status == UP
    # plain http against a TLS port, and https against a plain port, fail
    assert one(probe("http", port)).status == DOWN
    assert one(probe("https", httpd(), verify=False)).status == DOWN


@pytest.mark.parametrize("code,status", [(0, UP), (1, WARNING), (2, DOWN), (3, UNKNOWN), (42, UNKNOWN)])
def test_external_plugin_exit_codes(tmp_path, code, status):
    script = tmp_path / "check_thing"
    script.write_text(f"#!/bin/sh\necho \"THING $1 port $2 env $LVSKIT_ADDRESS\"\nexit {code}\n")
    script.chmod(0o755)
    r = one(probe("external", 8080, command=(str(script), "{address}", "{port}")))
    assert r.status == status
    assert "THING 127.0.0.1 port 8080 env 127.0.0.1" in r.reason


def test_external_hard_timeout(tmp_path):
    script = tmp_path / "check_slow"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    t0 = time.monotonic()
    r = one(probe("external", 80, command=(str(script),), timeout=0.5))
    assert r.status == DOWN and "killed after 0.5s" in r.reason
    assert time.monotonic() - t0 < 3


def test_external_missing_program_is_unknown(tmp_path):
    r = one(probe("external", 80, command=(str(tmp_path / "nope"),)))
    assert r.status == UNKNOWN


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP needs root")
def test_ping_loopback():
    p = checks.probe_for(Check(kind="ping", timeout=1), Dest(LO, 80))
    assert p.port == 0
    assert one(p).status == UP


def test_a_round_lasts_one_timeout_not_the_sum(serve):
    start, socks = serve
    mute, mport = udp_socket(socks, "0.0.0.0")      # every loopback address: all ours
    start(udp_server, mute, lambda d: None)
    # 40 probes that all time out after 0.5 s, on 40 loopback addresses
    ps = [checks.probe_for(Check(kind="udp", send=b"x", timeout=0.5), Dest(f"127.0.0.{i}", mport))
          for i in range(1, 41)]
    t0 = time.monotonic()
    results = checks.run(ps)
    took = time.monotonic() - t0
    assert len(results) == 40 and all(r.reason == "timeout after 0.5s" for r in results.values())
    assert took < 1.5, took


def test_shared_endpoint_probed_once():
    a = Check(kind="tcp", timeout=1, rise=2, fall=3, interval=5)
    b = a.replace(rise=5, fall=1, interval=30)
    c = a.replace(timeout=2)
    d = Dest(LO, 80)
    assert checks.probe_for(a, d) == checks.probe_for(b, d)
    assert checks.probe_for(a, d) != checks.probe_for(c, d)
    assert checks.probe_for(a, d) != checks.probe_for(a, Dest(LO, 81))
