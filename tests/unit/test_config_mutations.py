"""conf/lvskit.ini mutated in hundreds of ways: every broken copy is named, file:line [section] key, exit 6.

Each mutation is loaded the way the scripts load a config (config.load: a file,
through the parsed-config cache, after the shipped file was cached), and a
sample of each kind is run through the real `ipvs-sync --check-config`.  A cut
of the file at a section boundary is often a valid smaller config: those go
through ipvs-sync's guard against a table loaded from the whole file.
"""
import os
import re
import subprocess
import sys

import pytest

from lvskit import config, sync
from lvskit.errors import NOT_CONFIGURED, ConfigError
from fakekernel import FakeKernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = open(os.path.join(ROOT, "conf", "lvskit.ini")).read()
LINES = SEED.split("\n")
HEADERS = [i for i, line in enumerate(LINES) if line.startswith("[")]


def _keys():
    """[(line index, section title, key)] of every key line of the shipped file."""
    out, title = [], None
    for i, line in enumerate(LINES):
        text = line.strip()
        if text.startswith("["):
            title = text
        elif text and text[0] not in "#;" and "=" in text:
            out.append((i, title, text.partition("=")[0].strip()))
    return out


KEYS = _keys()

# Values no key of that kind may take: ASCII digits only, in range, of the right type.
INTEGER = ["x", "1_0", "\uff11", "-1", "99999999999999999999999", "1.5"]
DURATION = ["soon", "1_0", "-1", "\uff12s", "5h"]
NUMBER = ["x", "nan", "inf", "1e999", "1_0", "-0.5"]
CHOICE = ["bogus", ""]
BAD = {
    "port": INTEGER + ["0", "65536"], "agent_port": INTEGER + ["0"], "persistent": INTEGER,
    "check_rise": INTEGER + ["0"], "check_fall": INTEGER + ["0"], "max_sessions": INTEGER,
    "scale": INTEGER + ["0"], "priority": INTEGER,
    "check_interval": DURATION + ["0"], "check_timeout": DURATION + ["0"],
    "interval": DURATION + ["0"], "deadtime": DURATION + ["0"], "handover_grace": DURATION + ["61s"],
    "timeout": NUMBER, "alpha": NUMBER, "deadband": NUMBER, "max_step": NUMBER, "floor": NUMBER,
    "ceiling": NUMBER, "slow_start": NUMBER, "cpu_full": NUMBER,
    "address": ["300.1.2.3", "hades", "1.2.3", "::g"],
    "path.lan": ["300.1.2.3", "estepe"], "path.cross": ["10.254.0.256"],
    "protocol": CHOICE[:1], "scheduler": CHOICE[:1], "forward": CHOICE[:1], "check": CHOICE[:1],
    "reweight": CHOICE[:1], "memory": CHOICE[:1], "load_avg": ["2", "x"],
    "auto_failback": ["maybe"],
    "check_status": ["99", "700", "2xx", "\uff1200"],
    "state_dir": ["relative/dir"], "run_dir": ["relative/dir"], "maint_dir": ["relative/dir"],
    "key_file": ["relative/hb.key"], "vip_interface": ["eth 0"], "sync_interface": ["eth 0"],
    "expire_nodest_conn": ["1", "bogus"], "expire_quiescent_template": ["maybe"],
    "tcp_timeout": INTEGER + ["0", "2678401", "kept"], "tcpfin_timeout": INTEGER + ["0"],
    "udp_timeout": INTEGER + ["0"],
}
WEIGHTS = ["weight=70000", "weight=-1", "weight=x", "wieght=2", "weight=\uff11", "weight=1_0"]
# Keys whose value is free text: a director's name, an HTTP path or host.
FREE = {"director", "check_path", "check_host"}

# The keys and sections without which the shipped file is not a config.
REQUIRED_KEYS = {
    ("[server hades]", "address"), ("[server kama]", "address"), ("[server apolo]", "address"),
    ("[server cronos]", "address"), ("[service www]", "address"), ("[service www]", "port"),
    ("[service ssh]", "address"), ("[service ssh]", "port"), ("[service xdmcp]", "address"),
    ("[service xdmcp]", "port"), ("[service www]", "check"), ("[service xdmcp]", "check"),
    ("[heartbeat]", "key_file"), ("[heartbeat]", "vip_interface")}
REQUIRED_SECTIONS = {"[server hades]", "[server kama]", "[server apolo]", "[server cronos]",
                     "[heartbeat]", "[node midas]", "[node estepe]"}


def mutations():
    """(name, text, line) of broken copies; line: the 1-based line the error must name, or None."""
    for i, title, key in KEYS:          # a key given twice
        yield f"{title} {key} twice", "\n".join(LINES[:i + 1] + [LINES[i]] + LINES[i + 1:]), i + 2
    for h in HEADERS:                   # a section given twice
        yield f"{LINES[h]} twice", SEED + "\n" + LINES[h] + "\n", len(LINES) + 1
    for i, title, key in KEYS:          # a bad value of the key's kind
        if key in FREE:
            continue
        values = WEIGHTS if key.startswith("real.") else BAD[key]
        for value in values:
            yield f"{title} {key} = {value!r}", "\n".join(LINES[:i] + [f"{key} = {value}"] + LINES[i + 1:]), i + 1
    for i, title, key in KEYS:          # a required key deleted
        if (title, key) in REQUIRED_KEYS:
            yield f"{title} {key} deleted", "\n".join(LINES[:i] + LINES[i + 1:]), None
    for j, h in enumerate(HEADERS):     # a required section deleted
        if LINES[h] in REQUIRED_SECTIONS:
            end = HEADERS[j + 1] if j + 1 < len(HEADERS) else len(LINES)
            yield f"{LINES[h]} deleted", "\n".join(LINES[:h] + LINES[end:]), None
    yield "a header without its bracket", SEED.replace("[service ssh]", "[service ssh"), None
    yield "a line without '='", SEED.replace("port = 22", "port 22"), None
    yield "an unknown key", SEED.replace("port = 22", "port = 22\nprot = 22"), None
    yield "an unknown section kind", SEED + "\n[servce x]\naddress = 10.0.0.1\n", None
    yield "two services, one identity", SEED.replace("port = 22", "port = 80"), None


MUTATIONS = list(mutations())


def test_there_are_hundreds_of_them():
    assert len(MUTATIONS) >= 200
    assert {key for _, _, key in KEYS} - FREE <= set(BAD) | {k for _, _, k in KEYS if k.startswith("real.")}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A file path whose shipped text has been loaded once: later loads go through the cache."""
    path = tmp_path_factory.mktemp("mut") / "lvskit.ini"
    path.write_text(SEED)
    config.load(str(path))
    return path


WHERE = re.compile(r"^(?P<file>\S+\.ini):(?P<line>\d+): (\[(?P<section>[^\]]+)\]( (?P<key>[^:\s]+))?: |section \[|bad section header )")


@pytest.mark.parametrize("name,text,line", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_broken_copy_is_named_where_it_is(cached, name, text, line):
    cached.write_text(text)
    try:
        with pytest.raises(ConfigError) as e:
            config.load(str(cached))
    finally:
        cached.write_text(SEED)
    message = str(e.value)
    assert e.value.code == NOT_CONFIGURED
    assert "\n" not in message
    m = WHERE.match(message)
    assert m and m.group("file") == str(cached), message
    if line is not None:
        assert int(m.group("line")) == line, message


def test_the_required_keys_and_sections_are_exactly_those():
    """Every other key or section of the shipped file may be deleted: its default applies."""
    for i, title, key in KEYS:
        text = "\n".join(LINES[:i] + LINES[i + 1:])
        try:
            config.parse(text, "t.ini")
            required = False
        except ConfigError:
            required = True
        assert required == ((title, key) in REQUIRED_KEYS), (title, key)
    for j, h in enumerate(HEADERS):
        end = HEADERS[j + 1] if j + 1 < len(HEADERS) else len(LINES)
        try:
            config.parse("\n".join(LINES[:h] + LINES[end:]), "t.ini")
            required = False
        except ConfigError:
            required = True
        assert required == (LINES[h] in REQUIRED_SECTIONS), LINES[h]


def test_a_sample_through_the_real_script(cached, tmp_path):
    sample = MUTATIONS[::25]
    for name, text, _ in sample:
        path = tmp_path / "m.ini"
        path.write_text(text)
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "--check-config",
                            "-c", str(path)], capture_output=True, text=True,
                           env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
        assert r.returncode == NOT_CONFIGURED and r.stdout == "", name
        assert re.match(rf"ipvs-sync: {re.escape(str(path))}:\d+: ", r.stderr), (name, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def _state_config(text, tmp_path):
    return text.replace("/var/lib/lvskit", str(tmp_path)).replace("/run/lvskit", str(tmp_path))


CUTS = [h for h in HEADERS[1:]] + [len(LINES)]


@pytest.mark.parametrize("cut", CUTS, ids=[LINES[c] if c < len(LINES) else "whole" for c in CUTS])
def test_a_file_cut_at_a_section_boundary_never_empties_the_table(tmp_path, cut):
    """Loaded from the whole file, then the file cut short: invalid, refused, or harmless."""
    k = FakeKernel()
    sync.reconcile(config.parse(_state_config(SEED, tmp_path), "w.ini"), k)
    before = {key: dict(s.dests) for key, s in k.table.items()}
    text = _state_config("\n".join(LINES[:cut]), tmp_path)
    try:
        cfg = config.parse(text, "w.ini")
        if not cfg.services:
            outcome = "no services"         # ipvs-sync refuses it (test_sync_guard)
        else:
            sync.reconcile(cfg, k)
            outcome = f"{len(cfg.services)} services"
    except ConfigError:
        outcome = "invalid"
    except sync.Refused:
        outcome = "refused"
    after = {key: dict(s.dests) for key, s in k.table.items()}
    services = [LINES[h] for h in HEADERS if h < cut and LINES[h].startswith("[service")]
    if len(services) == 3:
        assert after == before              # every service still there: nothing was deleted
    elif len(services) == 2:
        # one service of three gone looks exactly like an admin deleting it: allowed
        assert outcome == "2 services" and len(after) == 2
    else:
        assert outcome in ("no services", "refused") and after == before
