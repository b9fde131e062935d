"""Small JSON state files, written atomically; deleting one is always harmless.

A reader that finds a file missing or unreadable gets the default and a
warning, never a crash: state is a cache of what we learnt, not configuration.
"""
import json
import os

from . import log


def load(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        log.warning(f"{path}: ignoring unreadable state ({e})")
        return default


def save(path, data, durable=True):
    """Write data as JSON to path atomically (temp file, fsync, rename).

    durable=False skips the fsync: for files on tmpfs (RUN_DIR) rewritten
    often by a process that a busy disk must never stall (hb-listen).
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    import tempfile     # late: only writers need it (shutil, random...)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
