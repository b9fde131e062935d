"""The bulk readings of plain sections (ini._chunk, config._plain_reals) equal the line-by-line ones.

Each text is parsed twice, bulk readings on and off; the Configs, or the
error lines, must be the same.  The bulk readings must also really be
taken for plain text, or these comparisons would prove nothing.
"""
import os
import time

import pytest

from lvskit import config, ini
from lvskit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = os.path.join(ROOT, "conf", "lvskit.ini")


def table(services=20, reals=6):
    """A generated table like the benchmark's, with [server] names and an IPv6 service."""
    out = ["# generated\n", "[global]\ndirector = d\n"]
    out += [f"[server r{j}]\naddress = 10.9.0.{j + 1}\n" for j in range(reals)]
    for i in range(services):
        out.append(f"\n[service s{i}]\naddress = 10.10.{i // 250}.{i % 250 + 1}\nport = {80 + i % 3}\n"
                   f"scheduler = wlc\nforward = dr\n")
        out += [f"real.10.20.{i}.{j + 1} = weight={(i + j) % 5}\n" for j in range(reals)]
        out.append(f"real.r{i % reals} = weight=7\n")
    out.append("[service v6]\naddress = 2001:db8::1\nport = 443\n"
               "real.2001:db8::5 = weight=3\nreal.2001:db8:0:0::6 = weight=2\n")
    return "".join(out)


def parse(text, bulk):
    old = ini._PLAIN, config._PLAIN
    ini._PLAIN = config._PLAIN = bulk
    try:
        return config.parse(text, "/etc/lvskit/t.ini")
    except ConfigError as e:
        return f"error: {e}"
    finally:
        ini._PLAIN, config._PLAIN = old


def same(text):
    bulk, lines = parse(text, True), parse(text, False)
    assert bulk == lines
    return bulk


def test_bulk_readings_are_taken_for_plain_text(monkeypatch):
    def refuse(*a):
        raise AssertionError("read line by line")
    monkeypatch.setattr(ini, "_parse_into", refuse)
    monkeypatch.setattr(config, "_real", refuse)
    cfg = config.parse(table(), "t.ini")
    assert len(cfg.services) == 21 and len(cfg.services[0].reals) == 7


def test_seed_and_generated_tables_read_alike():
    with open(SEED) as f:
        assert not isinstance(same(f.read()), str)
    cfg = same(table())
    assert cfg.service("s3").reals[-1].dest.address == "10.9.0.4"       # a [server] name
    assert [r.dest.address for r in cfg.service("v6").reals] == ["2001:db8::5", "2001:db8::6"]


BASE = table(3, 3)
EDITS = [
    ("weight=1\n", "weight=1 # a comment\n"),
    ("weight=1\n", "weight=1\t;comment\n"),
    ("weight=1\n", "weight=1#not a comment\n"),
    ("weight=1\n", "weight=01\n"),
    ("weight=1\n", "weight=+1\n"),
    ("weight=1\n", "weight=65535\n"),
    ("weight=1\n", "weight=65536\n"),
    ("weight=1\n", "weight=123456\n"),
    ("weight=1\n", "weight=\u0661\n"),          # an Arabic-Indic digit: int() takes it
    ("weight=1\n", "weight=1 port=81\n"),
    ("weight=1\n", "weight=1 forward=nat port=8080\n"),
    ("weight=1\n", "weight=1 weight=2\n"),
    ("weight=1\n", "uthreshold=5 weight=1\n"),
    ("weight=1\n", "\n"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2  =\tweight=1 \u00a0"),
    ("real.10.20.0.2 = weight=1", "\u3000real.10.20.0.2 = weight=1"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.1 = weight=1"),            # the same key twice
    ("real.10.20.0.2 = weight=1", "real.10.20.000.2 = weight=1"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.1.0 = weight=1"),
    ("real.10.20.0.2 = weight=1", "real.[10.20.0.2] = weight=1"),
    ("real.10.20.0.2 = weight=1", "real.r1 = weight=1"),                    # r1 is 10.9.0.2
    ("real.10.20.0.2 = weight=1", "real.10.9.0.1 = weight=1"),              # r0's address: twice
    ("real.10.20.0.2 = weight=1", "real.nosuch = weight=1"),
    ("real.10.20.0.2 = weight=1", "real. = weight=1"),
    ("real.10.20.0.2 = weight=1", "real.2001:db8::9 = weight=1"),          # another family
    ("real.10.20.0.2 = weight=1", "real.2001:db8::9 = weight=1 forward=tun"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\nsorry = 10.20.0.2"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\nsorry = 10.20.0.99"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 weight=1"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\n# a comment\n; another\n\n"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\nreal@x = 1"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\n= 1"),
    ("real.10.20.0.2 = weight=1", "real.10.20.0.2 = weight=1\nscheduler = rr"),   # scheduler twice
    ("scheduler = wlc\n", "scheduler = wlc \t\u00a0\n"),                  # blanks after a value
    ("forward = dr\n", "forward = tun\n"),
    ("forward = dr\n", "forward = nat\n"),
    ("[service s1]", "[service  s1 ]"),
    ("[service s1]", "  [service s1]"),
    ("[service s1]", "[service s0]"),
    ("[service s1]", "[service s1] # x"),
    ("[service v6]", "[service v6]\nfamily = inet6"),
    ("[global]", "director = x\n[global]"),
    ("# generated\n", ""),
    ("2001:db8::1\n", "2001:db8::1\nfwmark = 3\n"),
]


@pytest.mark.parametrize("old,new", EDITS)
def test_edited_tables_read_alike(old, new):
    assert old in BASE
    same(BASE.replace(old, new, 1))


def test_odd_endings_read_alike():
    same(BASE.rstrip("\n"))                         # no line break at the end
    same(BASE + "\n\n\n")
    same(BASE.replace("\n", "\r\n"))               # odd breaks: line by line, whole
    same("[service a]\naddress = 10.0.0.1\nport = 80\nreal.10.0.0.2 = weight=2")


def test_blanks_before_a_commented_value_are_read_in_linear_time():
    """The bulk regex once retried every split of the blanks after "=" when a comment
    followed (quadratic: 60,000 blanks took 13 s on the test host); now milliseconds.  The
    bound is 2 s, far from both."""
    text = "[service a]\naddress = 10.0.0.1\nport = 80\nscheduler =" + " " * 60_000 + "wlc # the default\n"
    start = time.perf_counter()
    cfg = same(text)
    assert time.perf_counter() - start < 2 and cfg.services[0].service.scheduler == "wlc"
