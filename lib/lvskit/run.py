"""Running external programs: the one module that imports sh.

Debian 12 ships sh 1.14 (returns a RunningCommand, input via positional
string), PyPI has 2.x (returns str unless _return_cmd, input via _in); this
module hides the difference.  Imported lazily: a cron run that never starts a
program does not pay for sh.
"""
import sh

_SH2 = int(sh.__version__.split(".")[0]) >= 2


class Result:
    def __init__(self, code, stdout, stderr, timed_out=False):
        self.code, self.stdout, self.stderr, self.timed_out = code, stdout, stderr, timed_out


def _decode(data):
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")


def run(argv, timeout=None, stdin=None, env=None):
    """Run argv to completion; never raises for a non-zero exit or a timeout."""
    kw = {"_ok_code": list(range(256)), "_timeout": timeout, "_env": env, "_in": stdin}
    if _SH2:
        kw["_return_cmd"] = True
    try:
        cmd = sh.Command(argv[0])
        proc = cmd(*argv[1:], **{k: v for k, v in kw.items() if v is not None or k == "_ok_code"})
        return Result(proc.exit_code, _decode(proc.stdout), _decode(proc.stderr))
    except sh.TimeoutException:
        return Result(None, "", "", timed_out=True)
    except sh.CommandNotFound:
        return Result(127, "", f"{argv[0]}: not found")
    except sh.SignalException as e:
        return Result(-getattr(e, "exit_code", 1), _decode(e.stdout), _decode(e.stderr))


def quiet(argv, timeout=30):
    """Exit code of argv, output discarded (None on timeout)."""
    return run(argv, timeout=timeout).code
