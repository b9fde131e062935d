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
