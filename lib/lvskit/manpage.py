"""Manual pages in roff (man(7) macros), made from the text --help and the docs already have.

There is no second copy of any manual text: a script's page is its argparse
parser (the docstring cli.Parser takes: a summary line, prose, and the
`exit codes:`, `files:` and `examples:` parts, plus every option's help),
rendered by ``script_page``, followed by its DETAILS: the parts of
docs/manual.md whose heading names it.  lvskit.ini(5) is docs/lvskit.ini.md,
lvskit(7) three parts of README.md (markdown, a small subset: headings,
paragraphs, lists, tables, code blocks, `code`, **bold**, links), rendered by
``markdown_page``.  ``make man`` writes them
all into build/man at install time; pure Python, so no groff is needed to
build them (the tests read them back through `groff -ww -z -man`).

Roff needs three things escaped: the backslash, a dot or quote at the start
of a line (a request), and the hyphen-minus, which is written \\- so that
options and commands copy and search as typed.  Anything beyond ASCII is
written as a \\[uXXXX] glyph, since groff reads its input as Latin-1.
"""
import argparse
import os
import re
import sys
import time

from . import __version__

SCRIPT_SECTION = "8"
# the docstring parts (a line "NAME:" or "NAME: text...") and their man page sections
_PARTS = {"exit codes": "EXIT STATUS", "files": "FILES", "examples": "EXAMPLES"}
_PART = re.compile(r"^(%s):(?:\s+(.*))?$" % "|".join(_PARTS))


# --- roff text ----------------------------------------------------------------

def escape(text):
    """Plain text as roff text: backslash, hyphen-minus, quotes, non-ASCII."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\e")
        elif ch == "-":
            out.append("\\-")
        elif ch == "'":
            out.append("\\(aq")
        elif ch == "`":
            out.append("\\(ga")
        elif ch == '"':
            out.append("\\(dq")
        elif ord(ch) > 126 or (ord(ch) < 32 and ch != "\t"):
            out.append(f"\\[u{ord(ch):04X}]")
        else:
            out.append(ch)
    return "".join(out)


def inline(text):
    """Text with `code` and **bold** made bold, the rest escaped."""
    out = []
    for piece in re.split(r"(`[^`]+`|\*\*[^*]+\*\*)", text):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            out.append(r"\fB" + escape(piece[1:-1]) + r"\fR")
        elif piece.startswith("**") and piece.endswith("**") and len(piece) > 4:
            out.append(r"\fB" + escape(piece[2:-2]) + r"\fR")
        else:
            out.append(escape(piece))
    return "".join(out)


def line(text):
    """One roff text line: a leading dot or quote would be a request."""
    return "\\&" + text if text.startswith((".", "'")) else text


def _quote(text):
    """A macro argument: quoted (double quotes inside are escaped already)."""
    return '"' + text + '"'


def header(name, section):
    """.TH: the date is SOURCE_DATE_EPOCH's when set (reproducible builds), else today."""
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(stamp) if stamp else None))
    return [f".TH {_quote(escape(name.upper()))} {section} {date} {_quote('lvskit ' + escape(__version__))} "
            f"{_quote('lvskit manual')}",
            ".nh", ".ad l"]     # no hyphenation, ragged right: commands and paths stay whole


def name_section(name, summary):
    summary = summary.strip().rstrip(".")
    if summary[:1].isupper() and not summary[1:2].isupper():
        summary = summary[0].lower() + summary[1:]
    return [".SH NAME", line(f"{escape(name)} \\- {inline(summary)}")]


def see_also(pages, own):
    """.SH SEE ALSO from (name, section) pairs, sorted by section then name."""
    refs = sorted({p for p in pages if p != own}, key=lambda p: (p[1], p[0]))
    if not refs:
        return []
    return [".SH \"SEE ALSO\"",
            line(",\n".join(f"\\fB{escape(n)}\\fR({s})" for n, s in refs))]


# --- the scripts' own words: blocks of a docstring -------------------------------

def _blocks(text):
    """Paragraphs (lists of lines) separated by blank lines."""
    blocks, current = [], []
    for raw in text.splitlines():
        if raw.strip():
            current.append(raw.rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _is_preformatted(block):
    """Laid out by hand (columns, a table, a formula): kept line for line."""
    return any(ln[:1].isspace() or "   " in ln.strip() for ln in block)


def _prose(blocks):
    """Paragraphs filled; a block laid out by hand kept line for line, except one
    that starts at the margin: "TERM   text" lines, a list of terms (the actions)."""
    out = []
    for block in blocks:
        if _is_preformatted(block) and not block[0][:1].isspace():
            out += _term_list(block)
        elif _is_preformatted(block):
            indent = min(len(ln) - len(ln.lstrip()) for ln in block)
            out += [".PP", ".nf"] + [line(inline(ln[indent:])) for ln in block] + [".fi"]
        else:
            # line for line: groff then knows where sentences end
            out += [".PP"] + [line(inline(ln.strip())) for ln in block]
    return out


def _two_columns(block):
    """Lines "  TERM   text" (text may go on, indented, on the next lines) as (term, text) pairs."""
    items = []
    for ln in block:
        m = re.match(r"^\s*(\S.*?)(?:\s{2,}#?\s*(.*))?$", ln)
        term, text = m.group(1), m.group(2) or ""
        if ln[:1].isspace() and items and (term.startswith("#") or len(ln) - len(ln.lstrip()) > 4):
            items[-1][1].append(ln.strip().lstrip("#").strip())
            continue
        if term.startswith("#"):
            term, text = "", term.lstrip("#").strip()
        items.append((term, [text] if text else []))
    return items


def _term_list(block):
    out = []
    for term, text in _two_columns(block):
        out += [".TP", line(r"\fB" + escape(term) + r"\fR")]
        out += [line(inline(" ".join(text)))] if text else []
    return out


def split_doc(epilog):
    """The docstring's body: {section title: [blocks]}, the prose under "DESCRIPTION"."""
    parts = {"DESCRIPTION": []}
    current = parts["DESCRIPTION"]
    for block in _blocks(epilog or ""):
        m = _PART.match(block[0])
        if m:
            current = parts.setdefault(_PARTS[m.group(1)], [])
            rest = ([m.group(2)] if m.group(2) else []) + block[1:]
            if rest:
                current.append(rest)
            continue
        current.append(block)
    return parts


# --- a script's page from its parser -----------------------------------------------

def _metavar(action):
    if action.metavar is not None:
        return action.metavar
    return action.dest.upper() if action.option_strings else action.dest


def _arg(action):
    """The argument of an option or a positional in roff: choices bold, a name in italics."""
    if action.choices:
        return "|".join(r"\fB" + escape(str(c)) + r"\fR" for c in action.choices)
    return r"\fI" + escape(_metavar(action)) + r"\fR"


def _usage(action):
    if not action.option_strings:
        arg = _arg(action)
        if action.nargs == "?":
            return f"[{arg}]"
        if action.nargs == "*":
            return f"[{arg} ...]"
        if action.nargs == "+":
            return f"{arg} [{arg} ...]"
        return arg
    opt = r"\fB" + escape(action.option_strings[0]) + r"\fR"
    if action.nargs == 0:
        return opt
    if action.nargs == "?":
        return f"{opt} [{_arg(action)}]"
    return f"{opt} {_arg(action)}"


def _visible(parser):
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS]


def synopsis(parser):
    """Every option and argument, in the parser's order, alternatives as [a | b]."""
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    words, done = [], set()
    for action in _visible(parser):
        group = groups.get(id(action))
        if group is not None:
            if id(group) in done:
                continue
            done.add(id(group))
            members = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
            words.append("[" + " | ".join(_usage(a) for a in members) + "]")
        elif action.option_strings and not action.required:
            words.append(f"[{_usage(action)}]")
        else:
            words.append(_usage(action))
    return [".SH SYNOPSIS", ".B " + escape(parser.prog)] + [line(w) for w in words]


def options(parser):
    out = []
    for action in _visible(parser):
        if action.option_strings:
            arg = "" if action.nargs == 0 else (f" [{_arg(action)}]" if action.nargs == "?" else f" {_arg(action)}")
            term = ", ".join(r"\fB" + escape(o) + r"\fR" + arg for o in action.option_strings)
        else:
            term = _usage(action)
        text = (action.help or "") % dict(vars(action), prog=parser.prog)
        out += [".TP", line(term)] + ([line(inline(text))] if text else [])
    return [".SH OPTIONS"] + out if out else []


def script_names(text, names):
    """The lvskit scripts a text names (as words)."""
    return {n for n in names if re.search(r"(?<![\w/.-])" + re.escape(n) + r"(?![\w-])", text)}


def script_page(parser, scripts=(), manual=""):
    """The whole man page of a script, from its parser.  scripts: every script's name,
    for SEE ALSO (those the text names, and lvskit(7), lvskit.ini(5)); manual: the text
    of docs/manual.md, whose parts that name this script are its DETAILS."""
    name = parser.prog
    parts = split_doc(parser.epilog)
    out = header(name, SCRIPT_SECTION) + name_section(name, parser.description or "")
    out += synopsis(parser)
    out += [".SH DESCRIPTION"] + _prose(parts["DESCRIPTION"])
    out += options(parser)
    if "EXIT STATUS" in parts:
        out += [".SH \"EXIT STATUS\""] + _prose(parts["EXIT STATUS"])
    if "FILES" in parts:
        out += [".SH FILES"] + [ln for block in parts["FILES"] for ln in _term_list(block)]
        if re.search(r"\b(STATE|RUN|MAINT)_DIR\b", "\n".join(sum(parts["FILES"], []))):
            out += [".PP", "STATE_DIR, RUN_DIR and MAINT_DIR are the config's",
                    r"\fB[global]\fR keys \fBstate_dir\fR, \fBrun_dir\fR and \fBmaint_dir\fR."]
    if "EXAMPLES" in parts:
        out += [".SH EXAMPLES"] + [ln for block in parts["EXAMPLES"] for ln in _term_list(block)]
    details = manual_parts(manual, name)
    if details:
        out += [".SH DETAILS"] + markdown(details)
    text = (parser.description or "") + "\n" + (parser.epilog or "") + "\n" + details
    refs = {(n, SCRIPT_SECTION) for n in script_names(text, scripts)}
    refs |= {("lvskit", "7"), ("lvskit.ini", "5")}
    if re.search(r"\bipvsadm\b", text):
        refs.add(("ipvsadm", "8"))
    out += see_also(refs, (name, SCRIPT_SECTION))
    return "\n".join(out) + "\n"


def scripts(bindir):
    """The scripts in bin/: executable files without a dot."""
    try:
        return sorted(n for n in os.listdir(bindir)
                      if "." not in n and os.access(os.path.join(bindir, n), os.X_OK))
    except OSError:
        return []


# --- pages from markdown ----------------------------------------------------------

def _cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _links(text):
    """[text](url) -> text; a link into this repository means nothing in a man page."""
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)


def markdown(text):
    """The markdown subset as man(7) lines: ## is .SH, ### and below .SS."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip():
            i += 1
            continue
        if re.fullmatch(r"\s*<!--.*-->\s*", ln):       # a note to the file's editors
            i += 1
            continue
        m = re.match(r"^(#+)\s+(.*)$", ln)
        if m:
            title = inline(_links(m.group(2)).replace("`", ""))
            if len(m.group(1)) == 1:
                pass                                    # the page's title: .TH and NAME say it
            elif len(m.group(1)) == 2:
                out.append(".SH " + _quote(title.upper()))
            else:
                out.append(".SS " + _quote(title))
            i += 1
            continue
        if ln.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out += [".PP", ".nf"] + [line(escape(x)) for x in lines[i + 1:j]] + [".fi"]
            i = j + 1
            continue
        if ln.startswith("    "):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            while not lines[j - 1].strip():
                j -= 1
            out += [".PP", ".nf"] + [line(escape(x[4:])) for x in lines[i:j]] + [".fi"]
            i = j
            continue
        if ln.startswith("|"):
            head = _cells(ln)
            j = i + 2                                   # past the | --- | row
            while j < len(lines) and lines[j].startswith("|"):
                cells = _cells(lines[j])
                term = inline(_links(cells[0]))
                extra = [f"{h} {inline(_links(c))}" for h, c in zip(head[1:-1], cells[1:-1]) if c]
                out += [".TP", line(term)]
                if extra:
                    out += [line("(" + "; ".join(extra) + ")"), ".br"]
                out.append(line(inline(_links(cells[-1]))))
                j += 1
            i = j
            continue
        m = re.match(r"^(\s*)([-*]|\d+\.)\s+(.*)$", ln)
        if m:
            bullet = r"\(bu" if m.group(2) in "-*" else m.group(2)
            item, j = [m.group(3)], i + 1
            while j < len(lines) and lines[j].strip() and lines[j].startswith("  ") \
                    and not re.match(r"^\s*([-*]|\d+\.)\s", lines[j]):
                item.append(lines[j].strip())
                j += 1
            out += [f".IP {bullet} 4", line(inline(_links(" ".join(item))))]
            i = j
            continue
        para, j = [], i
        while j < len(lines) and lines[j].strip() and not re.match(r"^(#|```|\||    |\s*([-*]|\d+\.)\s)", lines[j]):
            para.append(lines[j].strip())
            j += 1
        out += [".PP"] + [line(inline(_links(x))) for x in para]
        i = j
    return out


def markdown_part(text, heading):
    """The part of a markdown text under "## heading", without that line (to the next ##)."""
    m = re.search(r"^## +%s *$" % re.escape(heading), text, re.M)
    if not m:
        raise ValueError(f"no heading \"## {heading}\"")
    rest = text[m.end():]
    end = re.search(r"^## ", rest, re.M)
    return rest[:end.start()] if end else rest


def manual_parts(manual, name):
    """The "## " parts of docs/manual.md whose heading names script `name`, each under
    its heading as a "### " (they are subsections of the script page's DETAILS)."""
    out = []
    for m in re.finditer(r"^## +(.*)$", manual, re.M):
        if script_names(m.group(1), [name]):
            out.append("### " + m.group(1) + markdown_part(manual, m.group(1)).rstrip() + "\n")
    return "\n".join(out)


def markdown_page(name, section, summary, text, bindir):
    """A whole page from markdown: NAME, DESCRIPTION (what comes before the first ##), the
    sections, SEE ALSO (the scripts it names, lvskit(7) and lvskit.ini(5))."""
    body = markdown(text)
    out = header(name, section) + name_section(name, summary)
    if not body or not body[0].startswith(".SH "):
        out.append(".SH DESCRIPTION")
    out += body
    names = scripts(bindir)
    refs = {(n, SCRIPT_SECTION) for n in script_names(text, names)} | {("lvskit", "7"), ("lvskit.ini", "5")}
    out += see_also(refs, (name, section))
    return "\n".join(out) + "\n"


# The pages written from markdown: page -> (file, its "## " parts that make the page
# (None: the whole file), summary)
DOCS = {
    "lvskit.ini.5": ("docs/lvskit.ini.md", None, "configuration file of the lvskit scripts"),
    "lvskit.7": ("README.md", ("How it works", "Recipes", "Conventions"),
                 "keep services up on Linux Virtual Server (IPVS): overview and recipes"),
}
# The source of every script page's DETAILS, relative to the top of the tree
MANUAL = "docs/manual.md"


def doc_text(top, page):
    """The markdown a DOCS page is made from."""
    path, parts, _ = DOCS[page]
    with open(os.path.join(top, path), encoding="utf-8") as f:
        text = f.read()
    if parts is None:
        return text
    return "".join(f"## {p}\n" + markdown_part(text, p) for p in parts)


def main(argv):
    """manpage.py TOPDIR PAGE: write the page (a key of DOCS) made from TOPDIR's docs to stdout."""
    if len(argv) != 2 or argv[1] not in DOCS:
        print(f"usage: manpage.py TOPDIR {{{','.join(DOCS)}}}", file=sys.stderr)
        return 2
    top, page = argv
    name, _, section = page.rpartition(".")
    sys.stdout.write(markdown_page(name, section, DOCS[page][2], doc_text(top, page),
                                   os.path.join(top, "bin")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
