"""The common main of every script: one place turns errors into exit codes.

A script in bin/ builds an argparse parser from its docstring, then calls
``cli.run(main)``.  ``Fatal`` becomes one line on stderr/syslog and its exit
code; a traceback reaches the user only for a real bug.
"""
import argparse
import os
import sys

from . import __version__, errors, log

DEFAULT_CONFIG = os.environ.get("LVSKIT_CONFIG", "/etc/lvskit/lvskit.ini")


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
        sys.stdout.write(manpage.script_page(parser, manpage.scripts(bindir)))
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
    """Call main(argv); exit with its return value or the Fatal's code."""
    prog = os.path.basename(sys.argv[0])
    log.setup(prog)
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except errors.Fatal as e:
        log.error(str(e))
        code = e.code
    except OSError as e:
        # the environment, not a bug: a directory that cannot be written, a full disk
        log.error(f"{str(e.filename) + ': ' if e.filename is not None else ''}{e.strerror or e}")
        code = errors.ERROR
    except KeyboardInterrupt:
        code = errors.INTERRUPTED
    except BrokenPipeError:
        code = errors.ERROR
    sys.exit(code or 0)
