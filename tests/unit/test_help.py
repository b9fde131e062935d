"""Every script answers --help with exit codes and an example, and has its Manual section."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(os.listdir(os.path.join(ROOT, "bin")))


def manual():
    text = open(os.path.join(ROOT, "README.md")).read()
    part = text.split("\n## Manual\n", 1)[1].split("\n## ", 1)[0]
    return {name for head in re.findall(r"^### (.+)$", part, re.M)
            for name in re.findall(r"[a-z][a-z-]+", head)}


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


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_a_manual_section(name):
    assert name in manual(), f"README.md, ## Manual: no ### section names {name}"
