"""Logging the way cron and syslog expect it.

Quiet on success: notices go to syslog only.  stderr gets them too when it is a
terminal or the user asked for -v.  Errors always reach stderr (cron mails
them) and syslog.  One line per event, prefixed with the program name.
"""
import os
import sys
import syslog

_prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "lvskit"
_verbose = False
_use_syslog = True


def setup(prog=None, verbose=False, use_syslog=None):
    """Name the program, choose verbosity; LVSKIT_NO_SYSLOG=1 keeps tests off syslog."""
    global _prog, _verbose, _use_syslog
    if prog:
        _prog = prog
    _verbose = verbose or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    if use_syslog is None:
        use_syslog = os.environ.get("LVSKIT_NO_SYSLOG", "") in ("", "0")
    _use_syslog = use_syslog
    if _use_syslog:
        syslog.openlog(_prog, syslog.LOG_PID, syslog.LOG_DAEMON)


def program():
    return _prog


def verbose():
    return _verbose


def _syslog(priority, message):
    if _use_syslog:
        try:
            syslog.syslog(priority, message)
        except OSError:
            pass


def _stderr(message):
    try:
        print(f"{_prog}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def info(message):
    """A change worth a syslog line (one per kernel change)."""
    _syslog(syslog.LOG_INFO, message)
    if _verbose:
        _stderr(message)


def debug(message):
    if _verbose:
        _stderr(message)


def warning(message):
    _syslog(syslog.LOG_WARNING, message)
    _stderr(message)


def error(message):
    _syslog(syslog.LOG_ERR, message)
    _stderr(message)
