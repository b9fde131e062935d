"""A [service]'s check keys: how check-real tests its real servers (the Check record)."""
import re

from ..model import record
from . import values as v

CHECKS = ("none", "tcp", "http", "https", "udp", "xdmcp", "ssh", "ping", "external")
# Keys that only mean something for some check kinds.
_CHECK_ONLY = {
    "check_path": ("http", "https"), "check_host": ("http", "https"),
    "check_status": ("http", "https"), "check_body": ("http", "https"),
    "check_verify": ("https",), "check_ca": ("https",),
    "check_send": ("udp",), "check_expect": ("udp", "ssh"),
    "check_command": ("external",), "check_warning_weight": ("external",),
}


class Check(record(
        "Check",
        kind="none",
        interval=5.0,
        timeout=3.0,
        rise=2,
        fall=3,
        port=0,                 # 0: the real server's own port
        path="/",
        host="",                # HTTP Host header (and TLS name when verifying)
        status=((200, 399),),
        body="",                # regular expression the body must match
        verify=True,
        ca="",                  # CA bundle for verify (default: the system's)
        send=b"",
        expect="",              # regular expression the reply or banner must match
        command=(),             # external: argv with {address} {port}
        warning_weight=50,      # external exit 1: percent of the configured weight
        flap_changes=4,         # this many state changes within flap_window...
        flap_window=600.0,
        hold_down=300.0)):      # ...keep the server out this long
    """How check-real tests the real servers of one service."""
    __slots__ = ()


_DEFAULT = Check()


def check(sec, key):
    """The Check of a [service] section whose ServiceKey is key."""
    kind = v.choice(sec, "check", CHECKS, "none")
    for k, kinds in _CHECK_ONLY.items():
        if sec.has(k) and kind not in kinds:
            raise sec.error(f"only for check = {' or '.join(kinds)} (this service has check = {kind})", k)
    if kind == "none":
        for k in sec.keys("check_"):
            raise sec.error("this service has no check (add check = ...)", k)
        return _DEFAULT
    port = v.integer(sec, "check_port", 1, 65535, 0) if sec.has("check_port") else 0
    if key.fwmark and not port and kind not in ("ping", "external"):
        raise sec.error("a firewall-mark service has no port to check: set check_port", "check")
    timeout = v.duration(sec, "check_timeout", 0.05, 300, _DEFAULT.timeout)
    interval = v.duration(sec, "check_interval", 0.1, 86400, _DEFAULT.interval)
    host = sec.take("check_host", "") or ""
    if host and not re.match(r"^[A-Za-z0-9.:\[\]-]+$", host):
        raise sec.error(f"{host!r} is not a host name", "check_host")
    path = sec.take("check_path", "/") or "/"
    if not path.startswith("/"):
        raise sec.error(f"{path!r} does not start with /", "check_path")
    if kind == "udp" and not sec.has("check_send"):
        raise sec.error("a udp check needs check_send (the payload to send)", "check")
    ca = sec.take("check_ca", "") or ""
    if ca and not ca.startswith("/"):
        raise sec.error(f"{ca!r} is not an absolute path", "check_ca")
    return Check(
        kind=kind, interval=interval, timeout=timeout,
        rise=v.integer(sec, "check_rise", 1, 100, _DEFAULT.rise),
        fall=v.integer(sec, "check_fall", 1, 100, _DEFAULT.fall),
        port=port, path=path, host=host,
        status=_status_ranges(sec, "check_status"),
        body=v.regex(sec, "check_body"),
        verify=v.boolean(sec, "check_verify", True), ca=ca,
        send=_payload(sec, "check_send"),
        expect=v.regex(sec, "check_expect"),
        command=_argv(sec, "check_command") if kind == "external" else (),
        warning_weight=v.integer(sec, "check_warning_weight", 0, 100, _DEFAULT.warning_weight),
        flap_changes=v.integer(sec, "check_flap_changes", 0, 1000, _DEFAULT.flap_changes),
        flap_window=v.duration(sec, "check_flap_window", 0, 86400 * 7, _DEFAULT.flap_window),
        hold_down=v.duration(sec, "check_hold_down", 0, 86400 * 7, _DEFAULT.hold_down),
    )


def _status_ranges(sec, key):
    raw = sec.take(key)
    if not raw:
        return _DEFAULT.status
    ranges = []
    for part in filter(None, re.split(r"[\s,]+", raw)):
        lo, dash, hi = part.partition("-")
        if v.INTEGER.fullmatch(lo) and (not dash or v.INTEGER.fullmatch(hi)):
            lo, hi = int(lo), int(hi) if dash else int(lo)
        else:
            lo = hi = -1
        if not 100 <= lo <= hi <= 599:
            raise sec.error(f"{part!r} is not a status or range within 100-599 (e.g. 200-299,302)", key)
        ranges.append((lo, hi))
    return tuple(ranges)


def _payload(sec, key):
    """A UDP payload: text with C-style escapes (\\x00, \\n, \\\\)."""
    raw = sec.take(key, "") or ""
    try:
        return raw.encode("latin-1").decode("unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as e:
        raise sec.error(f"bad escape in payload: {e}", key) from None


def _argv(sec, key):
    """An external check's argv: absolute program, only {address} and {port} placeholders."""
    import shlex
    raw = sec.take(key, "") or ""
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as e:
        raise sec.error(f"cannot split command: {e}", key) from None
    if not argv:
        raise sec.error("an external check needs a command", key)
    if not argv[0].startswith("/"):
        raise sec.error(f"{argv[0]!r}: give the program's absolute path", key)
    for word in argv:
        for name in re.findall(r"\{([^}]*)\}", word):
            if name not in ("address", "port"):
                raise sec.error(f"unknown placeholder {{{name}}} (known: {{address}}, {{port}})", key)
    return argv
