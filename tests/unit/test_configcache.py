"""The parsed-config cache: a hit only for the same text, parser and path; never trusted blindly."""
import os
import pickle

import pytest

from lvskit import config, configcache
from lvskit.errors import ConfigError

TEXT = """[global]
state_dir = {tmp}/state

[service www]
address = 10.0.0.1
port = 80
real.10.0.0.2 = weight=3
real.10.0.0.3 = weight=1
"""

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "lvskit.ini")

ODD = """[server a]
address = 10.0.1.1
[service web6]
address = 2001:db8::1
port = 443
scheduler = sh
sched_flags = sh-port
persistent = 300
netmask = 64
real.2001:db8::2 = weight=3 uthreshold=100 lthreshold=10
real.10.0.9.9 = forward=tun weight=0
check = http
check_path = /health
check_status = 200-204
sorry = [2001:db8::99]:443
[service mark]
fwmark = 7
family = inet
real.a = weight=2 port=8080 forward=nat
removal = delete
on_failure = remove
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(cache))
    path = tmp_path / "lvskit.ini"
    path.write_text(TEXT.format(tmp=tmp_path))
    parses = []
    real_parse = config.parse
    monkeypatch.setattr(config, "parse", lambda *a, **k: parses.append(1) or real_parse(*a, **k))
    return path, cache, parses


def test_same_text_is_not_parsed_again_and_gives_the_same_config(env):
    path, cache, parses = env
    first = configcache.load(path)
    second = configcache.load(path)
    assert parses == [1]
    assert second == first and second is not first
    assert second.services[0].reals[1].dest.weight == 1
    assert [f.name for f in cache.iterdir()] == ["config" + str(path).replace("_", "__").replace("/", "_") + ".pickle"]


def test_any_change_of_text_is_parsed_again(env):
    path, _, parses = env
    configcache.load(path)
    path.write_text(path.read_text().replace("weight=1", "weight=2"))
    assert configcache.load(path).services[0].reals[1].dest.weight == 2
    assert configcache.load(path).services[0].reals[1].dest.weight == 2
    assert parses == [1, 1]


@pytest.mark.parametrize("which", ["odd", "seed"])
def test_a_cached_config_is_the_config_a_parse_gives(env, which, tmp_path):
    path, _, parses = env
    text = ODD if which == "odd" else open(SEED).read().replace("/var/lib/lvskit", str(tmp_path))
    path.write_text(text)
    configcache.load(path)
    back = configcache.load(path)
    assert parses == [1]
    fresh = config.load(path)
    assert back == fresh
    assert [type(x) for x in back] == [type(x) for x in fresh]
    for vs, was in zip(back.services, fresh.services):
        assert vs.wanted().dests == was.wanted().dests
        assert vs.check == was.check and vs.sorry == was.sorry


def test_a_bad_config_is_never_cached_and_its_error_is_the_parser_s(env):
    path, cache, parses = env
    path.write_text(path.read_text().replace("weight=1", "weight=70000"))
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"lvskit.ini:8: \[service www\] real.10.0.0.3: weight 70000 out of range"):
            configcache.load(path)
    assert parses == [1, 1]
    assert list(cache.iterdir()) == []


def test_another_path_or_parser_version_misses(env, tmp_path, monkeypatch):
    path, _, parses = env
    configcache.load(path)
    other = tmp_path / "copy.ini"
    other.write_text(path.read_text())
    assert configcache.load(other).path == str(other)
    parser = tmp_path / "parser.py"         # stands for one of the parser's files
    parser.write_text("a")
    monkeypatch.setattr(configcache, "_PARSER", configcache._PARSER + [str(parser)])
    configcache.load(path)
    configcache.load(path)
    parser.write_text("ab")                 # an upgrade of the parser
    configcache.load(path)
    assert parses == [1, 1, 1, 1]


def test_a_relative_path_is_named_as_given(env, monkeypatch):
    path, _, parses = env
    configcache.load(path)
    monkeypatch.chdir(path.parent)
    assert configcache.load("lvskit.ini").path == "lvskit.ini"
    assert parses == [1]


def test_writable_by_others_or_corrupt_is_a_miss_then_repaired(env):
    path, cache, parses = env
    configcache.load(path)
    (entry,) = cache.iterdir()
    entry.chmod(0o664)
    configcache.load(path)
    assert parses == [1, 1]     # not read; rewritten privately
    assert entry.stat().st_mode & 0o077 == 0
    entry.write_bytes(entry.read_bytes()[:-40])
    configcache.load(path)
    configcache.load(path)
    assert parses == [1, 1, 1]
    cache.chmod(0o777)
    configcache.load(path)
    assert parses == [1, 1, 1, 1]


class _Planted:
    """Unpickling this makes a directory: the proof that a pickle was run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickle_planted_in_the_cache_file_is_never_run(env, tmp_path):
    path, cache, parses = env
    configcache.load(path)
    (entry,) = cache.iterdir()
    marker = tmp_path / "pickle-was-run"
    head = configcache._where(path, path.read_text())[1]
    for planted in (pickle.dumps(head) + pickle.dumps(_Planted(str(marker))),      # where the Config goes
                    pickle.dumps((head, _Planted(str(marker))))):                   # in the head
        entry.write_bytes(planted)
        entry.chmod(0o600)
        assert configcache.load(path).services[0].name == "www"
        assert not marker.exists()
    assert parses == [1, 1, 1]
    pickle.loads(pickle.dumps(_Planted(str(marker))))
    assert marker.exists()                          # (the payload does work when unpickled)


def test_something_else_than_a_config_in_the_file_is_a_miss(env):
    path, cache, parses = env
    cfg = configcache.load(path)
    (entry,) = cache.iterdir()
    head = configcache._where(path, path.read_text())[1]
    entry.write_bytes(pickle.dumps(head) + pickle.dumps(cfg.services[0]))
    assert configcache.load(path) == cfg and parses == [1, 1]


def test_no_directory_no_cache(env, monkeypatch, tmp_path):
    path, _, parses = env
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(tmp_path / "absent"))
    configcache.load(path)
    configcache.load(path)
    assert parses == [1, 1]
    assert not os.path.exists(tmp_path / "absent")


def test_a_missing_config_is_the_parser_s_error_even_with_a_cache(env, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        configcache.load(tmp_path / "absent.ini")


BIG = "[server a]\naddress = 10.0.1.1\n" + "".join(
    f"\n[service s{i}]\naddress = 10.0.0.{i + 1}\nport = 80\nreal.a = weight={i + 1}\n"
    f"real.10.0.2.{i + 1} = weight=2\n" for i in range(5))


@pytest.fixture
def validated(monkeypatch):
    """The names of the [service]s validated into a record, in order."""
    names = []
    real = config.service
    monkeypatch.setattr(config, "service", lambda sec, servers: names.append(sec.name) or real(sec, servers))
    return names


def test_resident_validates_only_the_edited_service_and_gives_what_load_gives(tmp_path, validated):
    path = tmp_path / "lvskit.ini"
    path.write_text(BIG)
    resident = configcache.Resident()
    assert resident.load(path) == config.load(path)
    validated.clear()
    text = "# a comment moves every line\n" + BIG.replace("real.a = weight=3", "real.a = weight=30")
    path.write_text(text)
    cfg = resident.load(path)
    assert validated == ["s2"]
    assert cfg == config.load(path) and cfg.service("s2").reals[0].dest.weight == 30
    validated.clear()
    path.write_text(text.replace("address = 10.0.1.1", "address = 10.0.1.9"))     # a [server] moved
    cfg = resident.load(path)
    assert validated == [f"s{i}" for i in range(5)]
    assert {vs.reals[0].dest.address for vs in cfg.services} == {"10.0.1.9"}


def test_resident_reports_errors_at_their_new_lines_and_keeps_its_memory(tmp_path, validated):
    path = tmp_path / "lvskit.ini"
    path.write_text(BIG)
    resident = configcache.Resident()
    resident.load(path)
    bad = "# one\n# two\n" + BIG.replace("[service s4]", "[service s4]\nbogus = 1")
    path.write_text(bad)
    with pytest.raises(ConfigError) as e:
        resident.load(path)
    assert str(e.value).startswith(f"{path}:{bad.splitlines().index('bogus = 1') + 1}: [service s4] bogus")
    again = BIG + BIG[BIG.index("[service s3]"):]         # a section given twice
    path.write_text(again)
    with pytest.raises(ConfigError, match=r"section \[service s3\] given twice"):
        resident.load(path)
    validated.clear()
    path.write_text(BIG)
    cfg = resident.load(path)
    assert validated == []          # what the last good load built, kept through the failures
    assert cfg == config.load(path)
