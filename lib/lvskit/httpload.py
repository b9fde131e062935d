"""Load answers over HTTP: the one module of reweight that imports requests.

For sites whose real servers already run a web server: GET a URL whose
body is one agent-protocol line (``up 73%``).  A status other than 200 is
no answer.  Requests run in a small thread pool with the round's timeout.
"""
from concurrent.futures import ThreadPoolExecutor, wait

import requests

from .agentproto import MAX_LINE


def _get(session, url, timeout):
    try:
        r = session.get(url, timeout=timeout, stream=True, allow_redirects=False)
        try:
            if r.status_code != 200:
                return f"HTTP {r.status_code}"
            return r.raw.read(MAX_LINE + 1, decode_content=True)
        finally:
            r.close()
    except requests.Timeout:
        return "timeout"
    except requests.RequestException as e:
        return f"HTTP error: {type(e).__name__}"


def poll(urls, timeout=1.0, workers=32):
    """urls: {key: url} -> {key: bytes body or an error string}."""
    results = {}
    if not urls:
        return results
    with requests.Session() as session, ThreadPoolExecutor(min(workers, len(urls))) as pool:
        futures = {pool.submit(_get, session, url, timeout): key for key, url in urls.items()}
        done, late = wait(futures, timeout=timeout + 0.5)
        for f in done:
            results[futures[f]] = f.result()
        for f in late:
            f.cancel()
            results[futures[f]] = "timeout"
    return results
