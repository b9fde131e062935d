"""Typed values of a section's keys: each getter takes the key, checks it, and names it in the error.

A getter returns the default when the key is missing or empty (or raises
"missing" when there is no default), and raises the section's ConfigError
(file, line, section, key) for a value that is not of its type or range.
``text=`` checks a piece of a value instead (one option of a real.SERVER line),
``label=`` names that piece in the message.
"""
import re

from ..model import normalize_address

# ASCII digits only: int() and float() also take "1_0" and other scripts' digits
# (a full-width "１"), which no admin means as a number.
INTEGER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DURATION = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s)?$")


def integer(sec, key, lo, hi, default=None, text=None, label=""):
    raw = sec.take(key) if text is None else text
    if raw is None or raw == "":
        if default is None:
            raise sec.error("missing", key)
        return default
    if INTEGER.fullmatch(raw) and len(raw) <= 20:     # int() refuses over 4,300 digits
        value = int(raw, 10)
        if lo <= value <= hi:
            return value
    label = f"{label} " if label else ""
    if not INTEGER.fullmatch(raw):
        raise sec.error(f"{label}{raw!r} is not a whole number", key)
    raise sec.error(f"{label}{raw[:24]}{'...' if len(raw) > 24 else ''} out of range {lo}..{hi}", key)


def choice(sec, key, choices, default=None, text=None, label=""):
    raw = sec.take(key) if text is None else text
    if raw is None or raw == "":
        if default is None:
            raise sec.error("missing", key)
        return default
    if raw.lower() not in choices:
        label = f"{label} " if label else ""
        raise sec.error(f"{label}{raw!r} is not one of {', '.join(choices)}", key)
    return raw.lower()


def address(sec, key, text=None):
    raw = sec.take(key) if text is None else text
    if not raw:
        raise sec.error("missing", key)
    try:
        return normalize_address(raw)
    except ValueError:
        raise sec.error(f"{raw!r} is not an IPv4 or IPv6 address", key) from None


def boolean(sec, key, default=False):
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    v = raw.lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise sec.error(f"{raw!r} is not yes or no", key)


def number(sec, key, lo, hi, default):
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    if not NUMBER.fullmatch(raw):
        raise sec.error(f"{raw!r} is not a number", key)
    value = float(raw)
    if not lo <= value <= hi:
        raise sec.error(f"{value:g} out of range {lo:g}..{hi:g}", key)
    return value


def percent(sec, key, default):
    """A share from 'N%' (0..100)."""
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    if not raw.endswith("%") or not NUMBER.fullmatch(raw[:-1].strip()) \
            or not 0 <= float(raw[:-1]) <= 100:
        raise sec.error(f"{raw!r} is not a percentage 0%..100%", key)
    return float(raw[:-1]) / 100


def duration(sec, key, lo, hi, default):
    """Seconds from '0.02', '20ms' or '2s'."""
    raw = sec.take(key)
    if raw is None or raw == "":
        return default
    m = DURATION.match(raw.strip())
    if not m:
        raise sec.error(f"{raw!r} is not a duration (e.g. 0.5, 20ms, 2s)", key)
    value = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if not lo <= value <= hi:
        raise sec.error(f"{raw} out of range {lo:g}..{hi:g} s", key)
    return value


def path(sec, key, default):
    """An absolute path (or "" when the key is given empty)."""
    value = sec.take(key)
    if value is None:
        return default
    if value and not value.startswith("/"):
        raise sec.error(f"{value!r} is not an absolute path", key)
    return value


def regex(sec, key):
    raw = sec.take(key, "") or ""
    try:
        re.compile(raw)
    except (re.error, OverflowError, RecursionError) as e:
        raise sec.error(f"bad regular expression: {e}", key) from None
    return raw


def command(sec, key):
    """A command line for the shell-words splitter: checked to split, kept as text."""
    import shlex
    raw = sec.take(key, "") or ""
    try:
        shlex.split(raw)
    except ValueError as e:
        raise sec.error(f"cannot split the command: {e}", key) from None
    return raw


def no_leftovers(sec):
    for key in sec.unused():
        raise sec.error("unknown key", key)


def no_name(sec):
    if sec.name:
        raise sec.error(f"[{sec.kind}] takes no name")
