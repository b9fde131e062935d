"""The strict, flat INI reader: sections of ``key = value`` lines, each value with its line.

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

from ..errors import ConfigError

_HEADER = re.compile(r"^\[\s*([A-Za-z][\w-]*)(?:\s+([^\]\s]+))?\s*\]$")
_KEY = re.compile(r"^[A-Za-z0-9_.:\[\]/-]+$")
_COMMENT = re.compile(r"\s[#;].*$")


class Section:
    """One section; ``take`` marks keys as used so leftovers can be reported."""

    def __init__(self, path, kind, name, line):
        self.path, self.kind, self.name, self.line = path, kind, name, line
        self.values = {}        # key -> value, in file order
        self.lines = {}         # key -> its line number
        self._used = set()

    @property
    def title(self):
        return f"{self.kind} {self.name}" if self.name else self.kind

    def error(self, message, key=None):
        line = self.lines.get(key, self.line)
        return ConfigError(message, self.path, line, self.title, key)

    def has(self, key):
        return key in self.values

    def keys(self, prefix=""):
        return [k for k in self.values if k.startswith(prefix)]

    def take_all(self, prefix):
        """[(key, value)] of the keys that start with prefix, in file order, taken."""
        out = [(k, v) for k, v in self.values.items() if k.startswith(prefix)]
        self._used.update(k for k, _ in out)
        return out

    def take(self, key, default=None):
        self._used.add(key)
        return self.values.get(key, default)

    def unused(self):
        return [k for k in self.values if k not in self._used]


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


def parse(text, path="<config>"):
    """The sections of an INI text, in file order; ConfigError at the first bad line."""
    sections, seen, current = [], {}, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            m = _HEADER.match(line)
            if not m:
                raise ConfigError(f"bad section header {line!r} (want [kind] or [kind name])", path, number)
            kind, name = m.group(1).lower(), m.group(2) or ""
            if (kind, name) in seen:
                raise ConfigError(f"section [{kind}{' ' + name if name else ''}] given twice "
                                  f"(first at line {seen[kind, name]})", path, number)
            seen[kind, name] = number
            current = Section(path, kind, name, number)
            values, lines = current.values, current.lines
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
        if key in values:
            raise ConfigError(f"given twice (first at line {lines[key]})", path, number, current.title, key)
        values[key] = value
        lines[key] = number
    return sections
