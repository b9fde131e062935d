"""Logging the way cron and syslog expect it.

Quiet on success: notices go to syslog only.  stderr gets them too when it is a
terminal or the user asked for -v.  Errors always reach stderr (cron mails
them) and syslog.  One line per event, prefixed with the program name.
"""
import os
import socket
import sys
import syslog     # only for its priority and facility numbers

_prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "lvskit"
_verbose = False
_use_syslog = True
_to_stderr = True   # False under inetd, where stderr is the client's socket
SYSLOG_PATH = "/dev/log"
_sock = None        # our datagram socket to SYSLOG_PATH; False once it proved absent


def setup(prog=None, verbose=False, use_syslog=None, stderr=True):
    """Name the program, choose verbosity; LVSKIT_NO_SYSLOG=1 keeps tests off syslog.

    stderr=False: nothing goes to stderr (a program whose stderr is a client's
    socket, as under inetd, must write it only its answer)."""
    global _prog, _verbose, _use_syslog, _to_stderr
    if prog:
        _prog = prog
        _prefixes.clear()
    _to_stderr = stderr
    _verbose = stderr and (verbose or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()))
    if use_syslog is None:
        use_syslog = os.environ.get("LVSKIT_NO_SYSLOG", "") in ("", "0")
    _use_syslog = use_syslog


def writes_stderr():
    """False after setup(stderr=False): nothing may be written to stderr."""
    return _to_stderr


def program():
    return _prog


def verbose():
    return _verbose


def _syslog(priority, message):
    """One datagram to /dev/log, on one socket kept open.

    Not the syslog module: glibc's syslog() tries to connect again on every
    call while no syslog daemon listens, so a load of thousands of changes
    would spend much of its time failing to log.  Here a missing /dev/log is
    found once and logging to it stops; a daemon restart costs one reconnect.
    """
    global _sock
    if not _use_syslog or _sock is False:
        return
    data = ((_prefixes.get(priority) or _prefix(priority)) + message).encode("utf-8", "replace")
    for attempt in (1, 2):
        try:
            _connect()
            _sock.send(data)
            return
        except OSError:
            if _sock:
                _sock.close()
            _sock = None
            if attempt == 2 or not os.path.exists(SYSLOG_PATH):
                _sock = False
                return


# "<priority>program[pid]: " by priority, made once: a cold load logs 11,000
# lines, and getpid() is a system call each time (glibc keeps no copy).
_prefixes = {}
os.register_at_fork(after_in_child=_prefixes.clear)


def _prefix(priority):
    _prefixes[priority] = text = f"<{syslog.LOG_DAEMON | priority}>{_prog}[{os.getpid()}]: "
    return text


def _connect():
    global _sock
    if _sock is None:
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            _sock.connect(SYSLOG_PATH)
        except OSError:
            _sock.close()
            _sock = None
            raise


def heard():
    """Would an info() line reach anyone: stderr (verbose) or a syslog daemon?

    For a caller with thousands of lines to format (a cold load's 11,000
    changes): when nobody listens it need not format them.  Connects to
    /dev/log once to find out.
    """
    global _sock
    if _verbose:
        return True
    if not _use_syslog or _sock is False:
        return False
    try:
        _connect()
    except OSError:     # as _syslog: a socket that is there may take the next line
        _sock = None if os.path.exists(SYSLOG_PATH) else False
    return _sock is not False


def _stderr(message):
    if not _to_stderr:
        return
    try:
        print(f"{_prog}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def info(message):
    """A change worth a syslog line (one per kernel change)."""
    _syslog(syslog.LOG_INFO, message)
    if _verbose:
        _stderr(message)


def infos(lines):
    """info() of each line of an iterable, consumed only when someone hears them (heard()).

    For a cold load's 11,000 changes: the checks made once, then one datagram
    a line; a failed send goes the way of info() (reconnect, or give up).
    """
    if not heard():
        return
    if _verbose:
        for line in lines:
            info(line)
        return
    prefix = _prefixes.get(syslog.LOG_INFO) or _prefix(syslog.LOG_INFO)
    for line in lines:
        try:
            _sock.send((prefix + line).encode("utf-8", "replace"))
        except (OSError, AttributeError):   # AttributeError: _sock given up (False)
            _syslog(syslog.LOG_INFO, line)


def debug(message):
    if _verbose:
        _stderr(message)


def warning(message):
    _syslog(syslog.LOG_WARNING, message)
    _stderr(message)


def error(message):
    _syslog(syslog.LOG_ERR, message)
    _stderr(message)
