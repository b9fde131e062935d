"""Small JSON state files, written atomically; deleting one is always harmless.

Reading: a reader gets a value of the file's documented shape, or its
default.  A missing file is the default, silently; one that cannot be read,
is not a regular file, is too large, is not JSON (binary, truncated, NaN,
nested too deeply) or has another shape is the default with one warning that
names it, once per version of the file (a reader that polls does not repeat
it).  State is a cache of what we learnt, never configuration: nothing in a
state file may stop a program.  Each file's shape check lives next to the
code that owns the file and uses the small checks below.

Writing: a write that fails raises WriteError, which names the state file
itself (not its temp file) and what failed; a caller that can go on without
the file (the kernel kept right from memory) logs it and goes on.
"""
import json
import math
import os
import stat

from . import log

MAX_SIZE = 64 << 20     # bytes; a health.json of 10,000 real servers is about 3 MB
_warned = {}            # path -> the version of the file last warned about


# --- where each state file lives -------------------------------------------------------
# Each file's shape is checked by its owner, named in the docstring.

def health_path(cfg):
    """check-real's view of every real server (health.py owns its shape)."""
    return os.path.join(cfg.state_dir, "health.json")


def weights_path(cfg):
    """reweight's load-based weights (desired.py reads them, controller.py owns an entry's shape)."""
    return os.path.join(cfg.state_dir, "weights.json")


def owned_path(cfg):
    """The services ipvs-sync put in the kernel (sync.py owns its shape)."""
    return os.path.join(cfg.state_dir, "ipvs-sync.json")


def maint_dir(cfg):
    """Where maintenance flags (ADDRESS or ADDRESS:PORT) take a server out."""
    return cfg.maint_dir or os.path.join(cfg.state_dir, "maint")


def role_path(cfg):
    """RUN_DIR/takeover.json: this node's role, the one hb-send advertises (rolefile.py)."""
    return os.path.join(cfg.run_dir, "takeover.json")


def peers_path(cfg):
    """RUN_DIR/hb-peers.json: hb-listen's view of its peers (takeover.py; tmpfs: not fsync'd)."""
    return os.path.join(cfg.run_dir, "hb-peers.json")


def announce_path(cfg):
    """RUN_DIR/announce.json: lvs-announce's verdict, its reason and since when (gate.py; tmpfs:
    gone at a reboot, when BIRD starts without announcing anyway)."""
    return os.path.join(cfg.run_dir, "announce.json")


def drain_path(cfg):
    """STATE_DIR/announce-drain: the flag of a planned drain (lvs-announce --drain); kept across
    a reboot, so a director drained for an upgrade stays out until --undrain."""
    return os.path.join(cfg.state_dir, "announce-drain")


def generation_path(cfg):
    """STATE_DIR/hb-generation.json: hb-send's start counter, the datagrams' generation (heartbeat.py)."""
    return os.path.join(cfg.state_dir, "hb-generation.json")


def replay_path(cfg):
    """STATE_DIR/hb-replay.json: hb-listen's replay floors, kept across its restarts (hbnet/floors.py)."""
    return os.path.join(cfg.state_dir, "hb-replay.json")


class Shape(ValueError):
    """The data is not of the file's shape; the text says where and why."""


class WriteError(OSError):
    """A state file could not be written; str() names the file and what failed."""

    def __init__(self, path, err, step):
        self.step, self.reason = step, err.strerror or str(err)
        super().__init__(err.errno, f"cannot write it ({step}): {self.reason}", path)

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


def load(path, default=None, shape=None):
    """The JSON in path, passed through shape(data) (which raises Shape or returns
    the value to use), or default: silently when the file is missing, with one
    warning naming the file when it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)     # a FIFO must not hang us
    except FileNotFoundError:
        _warned.pop(path, None)
        return default
    except OSError as e:
        return _ignore(path, None, e.strerror or str(e), default)
    try:
        raw, version = read_regular(fd, MAX_SIZE + 1)
    except OSError as e:
        return _ignore(path, getattr(e, "version", None), e.strerror or str(e), default)
    if len(raw) > MAX_SIZE:
        return _ignore(path, version, f"larger than {MAX_SIZE >> 20} MB", default)
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        return _ignore(path, version, "not JSON: nested too deeply", default)
    except ValueError as e:     # also UnicodeDecodeError, and an integer of over 4,300 digits
        return _ignore(path, version, f"not JSON: {_cut(str(e), 80)}", default)
    if shape is None:
        return data
    try:
        return shape(data)
    except Shape as e:
        return _ignore(path, version, str(e), default)
    except RecursionError:
        return _ignore(path, version, "nested too deeply", default)


def version(st):
    """What tells one version of a file from the next, from its stat: (mtime, size, inode)."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def file_version(path):
    """version() of the file at path; None when there is none."""
    try:
        return version(os.stat(path))
    except OSError:
        return None


def read_regular(fd, limit):
    """(up to limit bytes, the file's version) of the open fd, which this closes;
    OSError (with .version) when it is no regular file or cannot be read."""
    try:
        st = os.fstat(fd)
        version_now = version(st)
        try:
            if not stat.S_ISREG(st.st_mode):
                raise OSError(0, "not a regular file")
            chunks, left = [], limit
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        except OSError as e:
            e.version = version_now
            raise
        return b"".join(chunks), version_now
    finally:
        os.close(fd)


def _no_constant(word):
    raise ValueError(f"{word} is not a number JSON allows")


def _ignore(path, version, why, default):
    if _warned.get(path, False) != version:
        _warned[path] = version
        log.warning(f"{path}: ignoring this state file: {why}")
    return default


def _cut(text, limit=40):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _what(value):
    return _cut(repr(value)) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__


# --- shape checks: each raises Shape naming where (a dotted path) ----------------------

def obj(value, where):
    """A JSON object (dict)."""
    if not isinstance(value, dict):
        raise Shape(f"{where}: want an object, not {_what(value)}")
    return value


def integer(value, where, lo, hi):
    """An int within lo..hi (never a bool: JSON true is no number)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Shape(f"{where}: want a whole number {lo}..{hi}, not {_what(value)}")
    return value


def number(value, where, lo, hi):
    """A finite int or float within lo..hi."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (math.isfinite(value) and lo <= value <= hi):
        raise Shape(f"{where}: want a number {lo:g}..{hi:g}, not {_what(value)}")
    return value


TIME_MAX = 1e11     # seconds since 1970 (the year 5138): a clock, not an overflow


def timestamp(value, where):
    """A wall-clock time (epoch seconds), 0 included (never)."""
    return number(value, where, 0, TIME_MAX)


def text(value, where, limit=4096):
    if not isinstance(value, str) or len(value) > limit:
        raise Shape(f"{where}: want a string of at most {limit} characters, not {_what(value)}")
    return value


def boolean(value, where):
    if not isinstance(value, bool):
        raise Shape(f"{where}: want true or false, not {_what(value)}")
    return value


def one_of(value, where, choices):
    if not isinstance(value, str) or value not in choices:
        raise Shape(f"{where}: want one of {', '.join(choices)}, not {_what(value)}")
    return value


# --- writing -----------------------------------------------------------------------------

def save(path, data, durable=True, indent=1):
    """Write data as JSON to path atomically (temp file, fsync, rename); WriteError if that fails.

    durable=False skips the fsync: for files on tmpfs (RUN_DIR) rewritten
    often by a process that a busy disk must never stall (hb-listen).
    indent=None writes one line (json's C encoder does that; an indented
    file goes through its Python one): for files no person reads.
    """
    body = (json.dumps(data, indent=indent, sort_keys=True) + "\n").encode("utf-8")
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise WriteError(path, e, f"making {directory}") from None
    replace(path, body, durable)


def replace(path, data, durable=True, mode=0o600):
    """Replace the file at path by one holding data (bytes): a temp file beside it, renamed over it.

    mode: the new file's permissions (0600: state is nobody else's; a file
    another program reads, such as BIRD's include file, passes 0644).

    WriteError (an OSError) names path and the step that failed.  The temp
    file's name is random and it is created with O_EXCL: no other writer's
    temp file is ever overwritten.
    """
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
    step = "creating a temp file beside it"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise WriteError(path, e, step) from None
    try:
        step = "writing its temp file"
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)     # not through os.open: the umask would take bits away
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        step = "renaming its temp file over it"
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WriteError(path, e, step) from None
        raise
