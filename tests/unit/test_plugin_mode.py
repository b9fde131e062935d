"""cli.plugin_mode: a check answers 0-3 with its status line first in every path."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A script's shape (bin/*): plugin_mode first, then the parser, then the work.
SCRIPT = """
import sys
sys.path.insert(0, %r)
from lvskit import cli, errors

def main(argv):
    cli.plugin_mode("T_CHECK", argv, when="--check")
    p = cli.Parser("t: a test script.", config=False)
    p.add_argument("--check", action="store_true")
    p.add_argument("--fail", choices=["fatal", "oserror", "bug", "warn"])
    args = p.parse_args(argv)
    if args.fail == "fatal":
        raise errors.Fatal("the config is wrong", errors.NOT_CONFIGURED)
    if args.fail == "oserror":
        open("/nonexistent/dir/file")
    if args.fail == "bug":
        {}["missing"]
    cli.log.warning("a warning before the status line")
    print("T_CHECK OK - fine")
    return 0

cli.run(main)
""" % os.path.join(ROOT, "lib")


def run(*args):
    """Merged stdout and stderr, as Icinga 2 reads a plugin."""
    r = subprocess.run([sys.executable, "-c", SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    return r.returncode, r.stdout.splitlines()


@pytest.mark.parametrize("args, first", [
    (["--bogus"], "T_CHECK UNKNOWN - usage: unrecognized arguments: --bogus (see -c --help)"),
    (["--fail", "nope"], "T_CHECK UNKNOWN - usage: argument --fail: invalid choice: 'nope'"),
    (["--fail", "fatal"], "T_CHECK UNKNOWN - the config is wrong"),
    (["--fail", "oserror"], "T_CHECK UNKNOWN - /nonexistent/dir/file: No such file or directory"),
    (["--fail", "bug"], "T_CHECK UNKNOWN - internal error: KeyError: 'missing'"),
])
def test_every_error_of_a_check_is_unknown_with_its_status_line_first(args, first):
    code, lines = run("--check", *args)
    assert code == 3 and lines[0].startswith(first), lines
    if "bug" in args:       # a bug's trace still reaches whoever reads on, after the status line
        assert "Traceback (most recent call last):" in lines[1:]


def test_stderr_of_a_check_comes_after_its_status_line():
    assert run("--check") == (0, ["T_CHECK OK - fine", "-c: a warning before the status line"])


def test_without_check_the_usual_exit_codes_and_stderr_stay():
    code, lines = run("--bogus")
    assert code == 2 and lines[-1].endswith("unrecognized arguments: --bogus")
    assert run("--fail", "fatal") == (6, ["-c: the config is wrong"])
    assert run() == (0, ["-c: a warning before the status line", "T_CHECK OK - fine"])
    code, lines = run("--fail", "bug")
    assert code == 1 and "KeyError: 'missing'" in lines[-1]
