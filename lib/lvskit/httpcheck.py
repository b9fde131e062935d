"""HTTP through requests: check-real's http/https probes and reweight's load answers.

The only module that imports requests (Debian's python3-requests).

Asks the real server itself (its address, not the VIP) for the check's path,
with the check's Host header; up when the status is in the wanted ranges and
the body matches the pattern.  https verifies the certificate by default,
against check_host when given (sent as SNI too), else against the address.
Every probe asks for a fresh connection (Connection: close): a kept-alive one
would hide a listener that died.  Sessions are reused per thread, which halves
the CPU of a round of 1,000 probes.
"""
import re
import threading

import requests
from requests.adapters import HTTPAdapter

from .health import DOWN, UP, Result

BODY_MAX = 65536
# check_verify = no is a choice made in the config, not something to warn about every round.
requests.packages.urllib3.disable_warnings(requests.packages.urllib3.exceptions.InsecureRequestWarning)


class _NamedHost(HTTPAdapter):
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


_local = threading.local()


def _session(p):
    """This thread's session for this TLS name (the adapter is per name)."""
    name = p.check.host if p.kind == "https" and p.check.host and p.check.verify else ""
    sessions = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    if name not in sessions:
        s = requests.Session()
        s.trust_env = False     # no proxies from the environment: we ask the real server itself
        if name:
            s.mount("https://", _NamedHost(name))
        sessions[name] = s
    return sessions[name]


def probe(p):
    c = p.check
    headers = {"Connection": "close", "User-Agent": "lvskit-check-real"}
    if c.host:
        headers["Host"] = c.host
    verify = (c.ca or True) if c.verify else False
    session = _session(p)
    try:
        with session.get(url(p), headers=headers, timeout=(c.timeout, c.timeout), verify=verify,
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

def _get_load(url, timeout, max_line):
    """The first line of a load URL's body (agent protocol), or why there is none."""
    sessions = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get("") or sessions.setdefault("", requests.Session())
    session.trust_env = False
    try:
        r = session.get(url, timeout=timeout, stream=True, allow_redirects=False)
        try:
            if r.status_code != 200:
                return f"HTTP {r.status_code}"
            return r.raw.read(max_line + 1, decode_content=True)
        finally:
            r.close()
    except requests.Timeout:
        return "timeout"
    except requests.RequestException as e:
        return f"HTTP error: {type(e).__name__}"


def poll_load(urls, max_line, timeout=1.0, workers=32):
    """{key: url} -> {key: body bytes or an error string}, all asked at once.

    The round ends at its deadline: answers still running then are counted
    as timeouts and left to finish in the background, never waited for.
    """
    from concurrent.futures import ThreadPoolExecutor, wait
    results = {}
    if not urls:
        return results
    pool = ThreadPoolExecutor(min(workers, len(urls)))
    try:
        futures = {pool.submit(_get_load, url, timeout, max_line): key for key, url in urls.items()}
        done, late = wait(futures, timeout=timeout + 0.5)
        for f in done:
            results[futures[f]] = f.result()
        for f in late:
            results[futures[f]] = "timeout"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results
