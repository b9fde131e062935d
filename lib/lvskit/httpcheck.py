"""HTTP through requests: check-real's http/https probes and reweight's load answers.

The only module that imports requests (Debian's python3-requests).

Asks the real server itself (its address, not the VIP) for the check's path,
with the check's Host header; up when the status is in the wanted ranges and
the body matches the pattern.  https verifies the certificate by default,
against check_host when given (sent as SNI too), else against the address.
Every probe asks for a fresh connection (Connection: close) on a session of
its own: a kept-alive one would hide a listener that died.

Every exchange runs under a deadline.Exchange: requests' timeouts bound the
connect and each read, and the connection's socket is registered with the
exchange, which shuts it down at the deadline, so a server that trickles its
headers, its TLS handshake or its body cannot stretch the exchange.
"""
import re
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import deadline
from .health import DOWN, UP, Result

BODY_MAX = 65536
# check_verify = no is a choice made in the config, not something to warn about every round.
requests.packages.urllib3.disable_warnings(requests.packages.urllib3.exceptions.InsecureRequestWarning)


class _Watched:
    """A urllib3 connection whose socket the calling thread's Exchange shuts down at its deadline."""

    def _new_conn(self):
        sock = super()._new_conn()
        exchange = deadline.current()
        if exchange is not None:
            exchange.watch(sock)
        return sock


class _Conn(_Watched, HTTPConnection):
    pass


class _TLSConn(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Conn


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConn


class _Adapter(HTTPAdapter):
    """requests' adapter with watched connections."""

    def init_poolmanager(self, *args, **kw):
        super().init_poolmanager(*args, **kw)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


class _NamedHost(_Adapter):
    """Connect to an address but speak TLS to a name (SNI and certificate check)."""

    def __init__(self, name, **kw):
        self._name = name
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["server_hostname"] = self._name
        kw["assert_hostname"] = self._name
        super().init_poolmanager(*args, **kw)


def url(p):
    host = f"[{p.address}]" if ":" in p.address else p.address
    return f"{p.kind}://{host}:{p.port}{p.check.path}"


def _session(tls_name=""):
    """A session of one exchange: nothing pooled outlives it."""
    s = requests.Session()
    s.trust_env = False     # no proxies from the environment: we ask the real server itself
    s.mount("http://", _Adapter())
    s.mount("https://", _NamedHost(tls_name) if tls_name else _Adapter())
    return s


def _left(timeout):
    """requests' connect and read timeouts: what is left of the exchange (timeout outside one)."""
    exchange = deadline.current()
    left = exchange.left() if exchange is not None else timeout
    return max(left, 0.001)


def probe(p):
    """check-real's probe; run it in a deadline.Exchange (checks.run does)."""
    c = p.check
    headers = {"Connection": "close", "User-Agent": "lvskit-check-real"}
    if c.host:
        headers["Host"] = c.host
    verify = (c.ca or True) if c.verify else False
    left = _left(c.timeout)
    session = _session(c.host if p.kind == "https" and c.host and c.verify else "")
    try:
        with session.get(url(p), headers=headers, timeout=(left, left), verify=verify,
                         allow_redirects=False, stream=True) as r:
            body = r.raw.read(BODY_MAX, decode_content=True) if c.body else b""
            status = r.status_code
    except requests.exceptions.SSLError as e:
        return Result(DOWN, f"TLS: {_short(e)}")
    except requests.exceptions.Timeout:
        return Result(DOWN, f"timeout after {c.timeout:g}s")
    except requests.exceptions.ConnectionError as e:
        return Result(DOWN, _short(e))
    except (requests.exceptions.RequestException, OSError) as e:
        return Result(DOWN, _short(e))
    finally:
        session.close()
    if not any(lo <= status <= hi for lo, hi in c.status):
        return Result(DOWN, f"HTTP {status}, want {_ranges(c.status)}")
    if c.body and not re.search(c.body, body.decode("utf-8", "replace")):
        return Result(DOWN, f"HTTP {status}, body does not match {c.body!r}")
    return Result(UP, f"HTTP {status}")


def _ranges(ranges):
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _short(e):
    text = str(e)
    for pattern, say in ((r"Connection refused", "connection refused"),
                         (r"timed out", "timeout"),
                         (r"CERTIFICATE_VERIFY_FAILED[^')\"]*", None),
                         (r"doesn't match[^')\"]*", None),
                         (r"No route to host", "no route to host"),
                         (r"Network is unreachable", "network unreachable")):
        m = re.search(pattern, text)
        if m:
            return say or m.group(0)
    return text[:120]


# --- reweight's load answers -------------------------------------------------------

def _get_load(url, max_line):
    """The first line of a load URL's body (agent protocol), or why there is none."""
    left = _left(1.0)
    session = _session()
    try:
        with session.get(url, timeout=(left, left), stream=True, allow_redirects=False) as r:
            if r.status_code != 200:
                return f"HTTP {r.status_code}"
            return r.raw.read(max_line + 1, decode_content=True)
    except requests.Timeout:
        return "timeout"
    except requests.RequestException as e:
        return f"HTTP error: {type(e).__name__}"
    finally:
        session.close()


def poll_load(urls, max_line, timeout=1.0):
    """{key: url} -> {key: body bytes or an error string}, all asked at once.

    Each answer has until the round's deadline, timeout seconds from now;
    one still coming then is a timeout, and its connection is shut down.
    """
    end = time.monotonic() + timeout
    replies = deadline.run_all({key: (end, lambda _, u=u: _get_load(u, max_line)) for key, u in urls.items()})
    return {key: "timeout" if isinstance(r, TimeoutError) else
            r if isinstance(r, (bytes, str)) else f"HTTP error: {type(r).__name__}"
            for key, r in replies.items()}
