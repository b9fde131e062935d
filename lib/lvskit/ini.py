"""A strict, flat INI reader that remembers where every value came from.

Why not configparser: we want the file and line of every key in error
messages, ``kind name`` section headers, and no interpolation surprises.

Format: ``[kind]`` or ``[kind name]`` headers; ``key = value`` lines; ``#`` or
``;`` starts a comment at the start of a line or after white space; keys are
case-sensitive; a key given twice in one section, or a section given twice, is
an error.  Values run to the end of the line (no continuation lines).
"""
import os
import re
import stat

from .errors import ConfigError

_HEADER = re.compile(r"^\[\s*([A-Za-z][\w-]*)(?:\s+([^\]\s]+))?\s*\]$")
_KEY = re.compile(r"^[A-Za-z0-9_.:\[\]/-]+$")
_COMMENT = re.compile(r"\s[#;].*$")


class Section:
    """One section; ``take`` marks keys as used so leftovers can be reported."""

    built = None        # see Reused

    def __init__(self, path, kind, name, line, values=None, shift=0):
        self.path, self.kind, self.name, self.line = path, kind, name, line
        self.values = {} if values is None else values     # key -> (value, line - shift)
        self.shift = shift
        self._used = set()

    def moved(self, lines):
        """The same section, found `lines` further down in a later text (values shared, read only)."""
        return Section(self.path, self.kind, self.name, self.line + lines, self.values, self.shift + lines)

    @property
    def title(self):
        return f"{self.kind} {self.name}" if self.name else self.kind

    def error(self, message, key=None):
        line = self.values[key][1] + self.shift if key in self.values else self.line
        return ConfigError(message, self.path, line, self.title, key)

    def has(self, key):
        return key in self.values

    def keys(self, prefix=""):
        return [k for k in self.values if k.startswith(prefix)]

    def take(self, key, default=None):
        self._used.add(key)
        return self.values[key][0] if key in self.values else default

    def took(self, keys):
        """Mark keys as used (their values were read in bulk)."""
        self._used.update(keys)

    def unused(self):
        return [k for k in self.values if k not in self._used]


class Reused(Section):
    """A section whose text is exactly that of one already validated: its record, not parsed.

    built: what the config built from that text before; parsed() is the
    Section itself, for when the record may not be reused after all (it
    depends on other sections that changed).
    """

    def __init__(self, path, kind, name, line, built, text):
        super().__init__(path, kind, name, line)
        self.built, self.text = built, text

    def parsed(self):
        out = []
        _parse_into(self.text, self.path, self.line, out, {})
        return out[0]


def parse(text, path="<config>", memo=None, reuse=None):
    """Return the sections of an INI text, in file order.

    memo: a dict a long-running program keeps between parses of its config
    (--every): the text of a section that has not changed since the last
    parse is not parsed again, only moved to its new line numbers.
    reuse: {section text: (kind, name, built)} of a text parsed and built
    before (see chunks()); a section of exactly that text comes back as a
    Reused with its built record.
    """
    sections = []
    if any(c in text for c in _ODD_BREAKS):
        _parse_into(text, path, 1, sections, {})
        return sections
    if memo is not None or reuse:
        return _parse_chunks(text, path, memo, reuse or {})
    seen, first = {}, 1
    for chunk in _split(text):      # a chunk: one section's lines
        sections += _chunk(chunk, path, first, seen)
        first += chunk.count("\n")
    return sections


# Line breaks that splitlines() knows and "\n" is not: with one of them in the
# text, counting "\n" would misnumber lines, so the memo stands aside.
_ODD_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# A section starts at a line whose first non-blank is "[" (blank: what strip() takes, but "\n")
_SECTION_START = re.compile(r"^(?=[^\S\n]*\[)", re.M)
_NEXT_SECTION = re.compile(r"\n(?=[^\S\n]*\[)")


def _split(text):
    """_SECTION_START.split(text): the text cut before every section header.

    Found from the line breaks (the regex engine jumps from one to the next)
    rather than tried at every character as a multi-line ``^`` is: 0.5
    instead of 1.7 ms for 1,000 x 10 on the test host, and an edit splits
    two texts.
    """
    cuts = [0] + [m.end() for m in _NEXT_SECTION.finditer(text)] + [len(text)]
    out = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    if _SECTION_START.match(text):     # a header on the first line: split() starts with ""
        out.insert(0, "")
    return out


def chunks(text):
    """[(kind, name, section text)] of a text that parsed without error; None with odd line breaks.

    Each section text runs from its header line to the next header; text
    before the first header (comments) has kind None.
    """
    if any(c in text for c in _ODD_BREAKS):
        return None
    out = []
    for chunk in _split(text):
        m = _HEADER.match(chunk.partition("\n")[0].strip())
        out.append((m.group(1).lower(), m.group(2) or "", chunk) if m else (None, None, chunk))
    return out


def _parse_chunks(text, path, memo, reuse):
    sections, seen, fresh, first = [], {}, {}, 1
    for chunk in _split(text):      # a chunk: one section's lines
        old = reuse.get(chunk)
        if old is not None:
            kind, name, built = old
            _see(seen, kind, name, path, first)
            sections.append(Reused(path, kind, name, first, built, chunk))
            first += chunk.count("\n")
            continue
        hit = memo.get(chunk) if memo is not None else None
        if hit is None:
            parsed = _chunk(chunk, path, first, seen)
            hit = (first, parsed)
        else:
            base, parsed = hit
            parsed = [sec.moved(first - base) for sec in parsed]
            for sec in parsed:
                _see(seen, sec.kind, sec.name, path, sec.line)
        fresh[chunk] = hit
        sections += parsed
        first += chunk.count("\n")
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    return sections


# One line of a plain section: key = value, a comment, or nothing.  A value
# with "#" or ";" (maybe a comment), a bad key, anything else: not plain.
# The blanks after "=" are taken possessively ("*+"): the value may start with
# blanks too, and a line that fails at a "#" would otherwise be retried at
# every split of a long run of them (quadratic).
_PLAIN_LINE = re.compile(r"^[^\S\n]*(?:([A-Za-z0-9_.:\[\]/-]+)[^\S\n]*=[^\S\n]*+([^\n#;]*)|[#;][^\n]*|)$", re.M)
_NOTHING = ("", "")


def _chunk(chunk, path, first, seen):
    """[the Section] of one chunk (a header and its lines) that starts at line `first`.

    A plain chunk (see _PLAIN_LINE) is read by one regex pass; any other is
    read line by line by _parse_into, which names what is wrong.  Both read
    a plain chunk alike (tests/unit/test_config_plain.py): the first run after an
    install parses a big table whole (1,000 x 10: 12 ms instead of 15 on the
    test host).
    """
    head, _, body = chunk.partition("\n")
    m = _HEADER.match(head.strip())
    if m is None and _PLAIN:        # the text before the first header (or a bad one): only comments?
        lines = _PLAIN_LINE.findall(chunk)
        if len(lines) == chunk.count("\n") + 1 and lines.count(_NOTHING) == len(lines):
            return []
    elif _PLAIN:
        lines = _PLAIN_LINE.findall(body)
        if len(lines) == body.count("\n") + 1:     # every line is plain
            values = {k: (v.rstrip(), n) for n, (k, v) in enumerate(lines, first + 1) if k}
            if len(values) == len(lines) - lines.count(_NOTHING):      # no key twice
                kind, name = m.group(1).lower(), m.group(2) or ""
                _see(seen, kind, name, path, first)
                return [Section(path, kind, name, first, values)]
    parsed = []
    _parse_into(chunk, path, first, parsed, seen)
    return parsed


_PLAIN = True       # tests turn the one-pass reading off, to compare


def _see(seen, kind, name, path, number):
    if (kind, name) in seen:
        raise ConfigError(f"section [{kind}{' ' + name if name else ''}] given twice "
                          f"(first at line {seen[kind, name]})", path, number)
    seen[kind, name] = number


def _parse_into(text, path, first, sections, seen):
    """Append the sections of text, whose first line is line `first` of the file."""
    current = None
    for number, raw in enumerate(text.splitlines(), first):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            m = _HEADER.match(line)
            if not m:
                raise ConfigError(f"bad section header {line!r} (want [kind] or [kind name])", path, number)
            kind, name = m.group(1).lower(), m.group(2) or ""
            _see(seen, kind, name, path, number)
            current = Section(path, kind, name, number)
            sections.append(current)
            continue
        key, eq, value = line.partition("=")
        if "#" in value or ";" in value:
            value = _COMMENT.sub("", value)
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ConfigError(f"expected 'key = value', got {line!r}", path, number,
                              current.title if current else None)
        if current is None:
            raise ConfigError(f"key {key!r} before any [section]", path, number)
        if not _KEY.match(key):
            raise ConfigError(f"bad key name {key!r}", path, number, current.title)
        if key in current.values:
            raise ConfigError(f"given twice (first at line {current.values[key][1] + current.shift})",
                              path, number, current.title, key)
        current.values[key] = (value, number)


def read(path):
    return parse(read_text(path), path)


def read_text(path):
    """The file's text; only a regular file (a FIFO or a device would hang or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("no such file", path) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError("not a regular file", path)
        with open(fd, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {getattr(e, 'strerror', None) or e}", path) from None
    return text
