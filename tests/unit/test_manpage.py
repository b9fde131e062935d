"""Man pages and --version: every page renders clean under `groff -ww -z -man`, says
what --help says (it is made from the same parser), and escapes what roff would eat."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "lib"))
from lvskit import __version__, manpage  # noqa: E402

SCRIPTS = sorted(os.listdir(os.path.join(ROOT, "bin")))
ENV = dict(os.environ, LVSKIT_NO_SYSLOG="1")
ENV.pop("LVSKIT_CONFIG", None)
# the requests the renderer writes; any other line starting with . or ' is a defect
MACROS = {".TH", ".SH", ".SS", ".PP", ".TP", ".IP", ".RS", ".RE", ".nf", ".fi", ".nh", ".ad", ".br", ".B"}


def run(*argv):
    """A script of bin/, or `-m lvskit.manpage` (from lib/), as `make man` runs them."""
    return subprocess.run(["/usr/bin/python3", *argv], capture_output=True, text=True, timeout=60,
                          env=ENV, cwd=os.path.join(ROOT, "lib"))


def groff_warnings(page):
    """groff's complaints about a page (-ww: all warnings), '' when clean."""
    res = subprocess.run(["groff", "-ww", "-z", "-man"], input=page, capture_output=True, text=True,
                         timeout=60)
    return f"exit {res.returncode}: {res.stderr}" if res.returncode or res.stderr else ""


def plain(page):
    """The page as a reader sees it (man's own formatter, ASCII, no hyphenation games)."""
    res = subprocess.run(["groff", "-man", "-Tascii", "-P", "-cbou", "-rLL=200n"], input=page,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def assert_requests_are_ours(page):
    for n, line in enumerate(page.splitlines(), 1):
        if line.startswith((".", "'")):
            assert line.split()[0] in MACROS, f"line {n}: {line!r} would be a roff request"


def test_groff_is_there():
    """The checks below need it (Debian's groff-base, priority important; make apt-deps)."""
    assert subprocess.run(["groff", "--version"], capture_output=True).returncode == 0


@pytest.fixture(scope="module", params=SCRIPTS)
def script_page(request):
    name = request.param
    res = run(os.path.join(ROOT, "bin", name), "--man")
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    return name, res.stdout


def test_script_page_is_clean_under_groff(script_page):
    name, page = script_page
    assert groff_warnings(page) == ""
    assert_requests_are_ours(page)
    assert page.startswith(f'.TH "{name.upper().replace("-", chr(92) + "-")}" 8 ')
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", '"EXIT STATUS"', "FILES", "EXAMPLES",
                    '"SEE ALSO"'):
        assert f"\n.SH {section}\n" in page, section


def test_script_page_says_what_help_says(script_page):
    """One source: every option, every exit-code sentence, every example of --help is in the page."""
    name, page = script_page
    help_text = run(os.path.join(ROOT, "bin", name), "--help").stdout
    text = plain(page)
    squash = lambda s: " ".join(s.split())                              # noqa: E731
    for option in set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", help_text.split("\n\n")[0])):
        assert option in text, f"{option} of the usage line is not in the page"
    exit_codes = help_text.split("\nexit codes:", 1)[1].split("\n\n")[0]
    assert squash(exit_codes) in squash(text)
    examples = help_text.split("\nexamples:\n", 1)[1]
    for line in examples.splitlines():
        command = line.split("  #")[0].strip()
        if command:
            assert command in text, command
    assert f"lvskit {__version__}" in text
    assert "lvskit.ini(5)" in text and "lvskit(7)" in text
    # hyphens are minus signs: an option copied from the page works
    assert re.search(r"(?<!\\)-", page.split("\n", 1)[1]) is None, "an unescaped hyphen"


def test_script_page_has_its_part_of_the_manual(script_page):
    """The DETAILS section is every docs/manual.md part whose heading names the script,
    down to its last paragraph."""
    name, page = script_page
    manual = open(os.path.join(ROOT, manpage.MANUAL)).read()
    details = manpage.manual_parts(manual, name)
    assert details, f"docs/manual.md has no part for {name}"
    assert "\n.SH DETAILS\n" in page
    text = " ".join(plain(page).split())
    for heading in re.findall(r"^### (.+)$", details, re.M):
        assert heading.replace("`", "") in text, heading
    last = [p for p in details.split("\n\n") if p.strip() and p[0].isalpha()][-1]
    last_words = " ".join(re.sub(r"[`*]", "", last).split()[-6:])
    assert last_words in text, last_words


def test_overview_page_is_readme_admin_part():
    """lvskit(7) is README's "How it works", "Recipes" and "Conventions", every recipe in it."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    text = " ".join(plain(run("-m", "lvskit.manpage", ROOT, "lvskit.7").stdout).split())
    for heading in ("HOW IT WORKS", "RECIPES", "CONVENTIONS"):
        assert heading in text, heading
    recipes = manpage.markdown_part(readme, "Recipes")
    titles = re.findall(r"^### (.+)$", recipes, re.M)
    assert len(titles) >= 8
    for title in titles:
        assert title.replace("`", "") in text, title
    assert "The two commands" not in text and "make test" not in text


@pytest.mark.parametrize("name", SCRIPTS)
def test_version(name):
    res = run(os.path.join(ROOT, "bin", name), "--version")
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{name} (lvskit) {__version__}\n", "")


def test_the_version_is_defined_once():
    hits = subprocess.run(["grep", "-rlE", r"__version__ *=", "bin", "lib/lvskit"], cwd=ROOT,
                          capture_output=True, text=True).stdout.split()
    assert hits == ["lib/lvskit/__init__.py"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


@pytest.mark.parametrize("page", sorted(manpage.DOCS))
def test_doc_page_is_clean_under_groff(page):
    res = run("-m", "lvskit.manpage", ROOT, page)
    assert (res.returncode, res.stderr) == (0, "")
    assert groff_warnings(res.stdout) == ""
    assert_requests_are_ours(res.stdout)
    name, _, section = page.rpartition(".")
    assert f"\n.SH NAME\n{name.replace('-', chr(92) + '-')} \\- " in res.stdout
    assert f" {section} " in res.stdout.splitlines()[0]


def test_config_page_has_every_key_of_the_reference():
    """lvskit.ini(5) is docs/lvskit.ini.md: every section and key of its tables is there."""
    reference = manpage.doc_text(ROOT, "lvskit.ini.5")
    keys = re.findall(r"^\| `([^`]+)`", reference, re.M)
    sections = re.findall(r"^#+ .*?`(\[[a-z]+[^`]*\])`", reference, re.M)
    assert len(keys) > 50 and "[global]" in sections and "[service NAME]" in sections
    text = plain(run("-m", "lvskit.manpage", ROOT, "lvskit.ini.5").stdout)
    for word in keys + sections:
        assert word in text, word


def test_escapes():
    assert manpage.escape("-c --dry-run") == r"\-c \-\-dry\-run"
    assert manpage.escape(r"C:\x00 'a' \"b\"") == r"C:\ex00 \(aqa\(aq \e\(dqb\e\(dq"
    assert manpage.escape("dinâmico →") == r"din\[u00E2]mico \[u2192]"
    assert manpage.line(".hidden") == r"\&.hidden" and manpage.line("'q") == r"\&'q"
    assert manpage.inline("see `ipvsadm -Ln` and **this**") == r"see \fBipvsadm \-Ln\fR and \fBthis\fR"


def test_markdown_subset():
    md = """<!-- a note to editors: not in the page -->
Intro with `code`.
.dot at a line start

## A section

- one
  two
- three

| key | default | meaning |
| --- | --- | --- |
| `k` | `1` | what k is |

    indented code
    .line

```ini
[x]
y = 1
```
"""
    lines = manpage.markdown(md)
    assert lines[:3] == [".PP", r"Intro with \fBcode\fR.", r"\&.dot at a line start"]
    assert '.SH "A SECTION"' in lines
    assert lines.count(r".IP \(bu 4") == 2 and "one two" in lines
    i = lines.index(r"\fBk\fR")
    assert lines[i - 1] == ".TP" and lines[i + 1:i + 4] == [r"(default \fB1\fR)", ".br", "what k is"]
    assert ["indented code", r"\&.line"] == lines[lines.index("indented code"):lines.index("indented code") + 2]
    assert "y = 1" in lines and "```ini" not in "\n".join(lines)
    assert "editors" not in "\n".join(lines)
    page = manpage.markdown_page("x", "7", "A test", md, os.path.join(ROOT, "bin"))
    assert groff_warnings(page) == ""
    assert_requests_are_ours(page)


def test_a_docstring_line_starting_with_a_dot_is_text(tmp_path):
    import argparse
    p = argparse.ArgumentParser(prog="x", description="Do x.",
                                epilog=".not a request\n'nor this\n\nexit codes: 0 fine\n\n"
                                       "examples:\n  x -a   # .comment")
    p.add_argument("-a", action="store_true", help=".a")
    page = manpage.script_page(p)
    assert_requests_are_ours(page)
    assert groff_warnings(page) == ""
    text = plain(page)
    assert ".not a request" in text and "'nor this" in text and ".comment" in text
