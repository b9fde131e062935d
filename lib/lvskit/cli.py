"""The common main of every script: one place turns errors into exit codes.

A script in bin/ builds an argparse parser from its docstring, then calls
``cli.run(main)``.  ``Fatal`` becomes one line on stderr/syslog and its exit
code; a traceback reaches the user only for a real bug.
"""
import argparse
import io
import os
import sys

from . import __version__, errors, log

DEFAULT_CONFIG = os.environ.get("LVSKIT_CONFIG", "/etc/lvskit/lvskit.ini")

_plugin = None      # the plugin's name while this run is a check (plugin_mode)


def plugin_mode(name, argv, when=None, unless=None):
    """Make this run a monitoring plugin (Nagios, Icinga, NRPE) before parsing argv.

    A check must answer 0-3 with its status line first in every path, so
    from here on a bad command line and every error (bad config, no IPVS,
    permission, a bug) end as ``NAME UNKNOWN - why`` and exit 3, and what
    goes to stderr (warnings, errors) is held until the status line is out
    (Icinga 2 merges stderr into the output: a warning must not become its
    first line); run() writes it after, as long output.  argparse knows the
    options only after parsing, which may itself fail: hence argv is
    scanned.  when: the option that makes a run a check (None: every run
    is); unless: an option that makes it none (check-real --every is a
    daemon).
    """
    global _plugin
    words = {a.split("=", 1)[0] for a in (argv[:argv.index("--")] if "--" in argv else argv)}
    if (when is None or when in words) and (unless is None or unless not in words):
        _plugin = name
        sys.stderr = io.StringIO()
    return _plugin is not None


def _release_stderr():
    """What a check wrote to stderr, now that its status line is out."""
    if isinstance(sys.stderr, io.StringIO) and sys.stderr is not sys.__stderr__:
        held, sys.stderr = sys.stderr.getvalue(), sys.__stderr__
        try:
            sys.stdout.flush()
            sys.stderr.write(held)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def unknown(why):
    """Print a check's UNKNOWN status line for why; returns its exit code, 3."""
    from .pluginoutput import Output
    out = Output(_plugin)
    out.add(errors.CHECK_UNKNOWN)
    print(out.lines(" ".join(str(why).split()))[0], flush=True)
    return errors.CHECK_UNKNOWN


class Parser(argparse.ArgumentParser):
    """argparse with the script's docstring as help and exit code USAGE on misuse.

    The docstring is also the script's man page (lvskit.manpage, the hidden
    --man option): a summary line, prose, then the parts `exit codes:`,
    `files:` and `examples:`, in that order."""

    def __init__(self, doc, config=True, dry_run=False, **kw):
        summary, _, rest = doc.strip().partition("\n")
        super().__init__(description=summary, epilog=rest.strip() or None, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        if config:
            self.add_argument("-c", "--config", metavar="FILE", default=DEFAULT_CONFIG,
                              help=f"config file (default {DEFAULT_CONFIG})")
        if dry_run:
            self.add_argument("-n", "--dry-run", action="store_true",
                              help="print what would change, in ipvsadm/ip syntax, and change nothing")
        self.add_argument("-v", "--verbose", action="store_true",
                          help="also log to stderr, and say more")
        self.add_argument("--version", action="version", version=f"%(prog)s (lvskit) {__version__}",
                          help="print the version and exit")
        self.add_argument("--man", action=_ManPage)

    def error(self, message):
        if _plugin:                     # a check: UNKNOWN, never CRITICAL (2) for a typo
            log.error(message)
            sys.exit(unknown(f"usage: {message} (see {self.prog} --help)"))
        if not log.writes_stderr():     # stderr is a client's socket (lvs-agent under inetd)
            log.error(message)
            sys.exit(errors.USAGE)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(errors.USAGE)


class _ManPage(argparse.Action):
    """The hidden --man: print the script's man page (roff, from this parser) and exit;
    `make man` uses it.  lvskit.manpage is imported only then."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kw):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import manpage
        bindir = os.path.dirname(os.path.realpath(sys.argv[0]))
        try:        # in the source tree; an installed copy has no docs/: no DETAILS
            with open(os.path.join(bindir, "..", manpage.MANUAL), encoding="utf-8") as f:
                manual = f.read()
        except FileNotFoundError:
            manual = ""
        sys.stdout.write(manpage.script_page(parser, manpage.scripts(bindir), manual))
        parser.exit(errors.OK)


def seconds(text):
    """argparse type: a finite, positive number of seconds."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def run(main, argv=None):
    """Call main(argv); exit with its return value or the Fatal's code.

    In a check (plugin_mode), every error is UNKNOWN: its status line, exit 3.
    """
    prog = os.path.basename(sys.argv[0])
    log.setup(prog)
    try:
        code = _run(main, sys.argv[1:] if argv is None else argv)
    finally:
        _release_stderr()
    sys.exit(code or 0)


def _run(main, argv):
    try:
        code = main(argv)
    except errors.Fatal as e:
        log.error(str(e))
        code = unknown(e) if _plugin else e.code
    except OSError as e:
        # the environment, not a bug: a directory that cannot be written, a full disk
        why = f"{str(e.filename) + ': ' if e.filename is not None else ''}{e.strerror or e}"
        log.error(why)
        code = unknown(why) if _plugin else errors.ERROR
    except KeyboardInterrupt:
        code = unknown("interrupted") if _plugin else errors.INTERRUPTED
    except Exception as e:
        if not _plugin:
            raise
        code = unknown(f"internal error: {e.__class__.__name__}: {e}")
        import traceback    # after the status line: a bug's trace for whoever reads on
        traceback.print_exc()
    return code
