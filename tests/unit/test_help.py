"""Every script answers --help with exit codes and an example, is in README's list of the
scripts, and has its part in docs/manual.md (its man page's DETAILS)."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(os.listdir(os.path.join(ROOT, "bin")))


def readme_scripts():
    """The scripts of README's table under "## How it works" (also lvskit(7))."""
    text = open(os.path.join(ROOT, "README.md")).read()
    part = text.split("\n## How it works\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z-]+)` \|", part, re.M)


def manual_headings():
    text = open(os.path.join(ROOT, "docs", "manual.md")).read()
    return re.findall(r"^## (.+)$", text, re.M)


def test_the_scripts_are_there():
    assert {"ipvs-sync", "check-real", "reweight", "lvs-agent", "hb-send", "hb-listen", "takeover",
            "lvs-realserver", "lvs-status"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_has_exit_codes_and_an_example(name):
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bin", name), "--help"],
                       capture_output=True, text=True, timeout=30, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith(f"usage: {name} ")
    assert "exit codes:" in r.stdout
    examples = r.stdout.split("\nexamples:\n", 1)[1].splitlines()
    # an example is an indented command line that runs this very script
    assert any(line.startswith(f"  {name}") for line in examples), r.stdout


def test_readme_lists_exactly_the_scripts():
    assert sorted(readme_scripts()) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_a_part_in_the_manual(name):
    assert any(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(name), h) for h in manual_headings()), \
        f"docs/manual.md: no ## heading names {name}"
