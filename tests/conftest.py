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
    names = ("_prog", "_verbose", "_use_syslog", "_sock", "SYSLOG_PATH")
    saved, prefixes = {n: getattr(log, n) for n in names}, dict(log._prefixes)
    yield
    for n, v in saved.items():
        setattr(log, n, v)
    log._prefixes.clear()
    log._prefixes.update(prefixes)
