"""Running external programs: the one module that imports sh.

Debian 12 ships sh 1.14 (returns a RunningCommand, input via positional
string), PyPI has 2.x (returns str unless _return_cmd, input via _in); this
module hides the difference.  Imported lazily: a cron run that never starts a
program does not pay for sh.

A program runs in a process group of its own, and at its timeout the whole
group is killed: a plugin that started a child (sh -c '...; sleep') cannot
outlive its deadline by leaving the child holding its output open.
"""
import os
import signal
import threading

import sh

_SH2 = int(sh.__version__.split(".")[0]) >= 2


class Result:
    def __init__(self, code, stdout, stderr, timed_out=False):
        self.code, self.stdout, self.stderr, self.timed_out = code, stdout, stderr, timed_out


def _decode(data):
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")


def run(argv, timeout=None, stdin=None, env=None):
    """Run argv to completion; never raises for a non-zero exit or a timeout."""
    kw = {"_ok_code": list(range(256)), "_env": env, "_in": stdin, "_bg": True, "_bg_exc": False,
          "_new_session": True}
    if _SH2:
        kw["_return_cmd"] = True
    killed = []
    timer = None
    try:
        cmd = sh.Command(argv[0])
        proc = cmd(*argv[1:], **{k: v for k, v in kw.items() if v is not None})
        if timeout is not None:
            timer = threading.Timer(max(timeout, 0.0), _kill_group, (proc.pid, killed))
            timer.daemon = True
            timer.start()
        proc.wait()
        return Result(proc.exit_code, _decode(proc.stdout), _decode(proc.stderr))
    except sh.CommandNotFound:
        return Result(127, "", f"{argv[0]}: not found")
    except sh.SignalException as e:
        if killed:
            return Result(None, "", "", timed_out=True)
        return Result(-getattr(e, "exit_code", 1), _decode(e.stdout), _decode(e.stderr))
    finally:
        if timer is not None:
            timer.cancel()


def _kill_group(pgid, killed):
    """The program leads its own group (_new_session): kill everything in it."""
    killed.append(pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def quiet(argv, timeout=30):
    """Exit code of argv, output discarded (None on timeout)."""
    return run(argv, timeout=timeout).code
