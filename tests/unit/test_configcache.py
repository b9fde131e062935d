"""The parsed-config cache: a hit only for the same text, parser and path; never trusted blindly."""
import marshal
import os
import pickle

import pytest

from lvskit import config, configcache, ini
from lvskit.errors import ConfigError

TEXT = """[global]
state_dir = {tmp}/state

[service www]
address = 10.0.0.1
port = 80
real.10.0.0.2 = weight=3
real.10.0.0.3 = weight=1
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(cache))
    path = tmp_path / "lvskit.ini"
    path.write_text(TEXT.format(tmp=tmp_path))
    builds = []
    real_build = config._build
    monkeypatch.setattr(config, "_build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    return path, cache, builds


def test_same_text_is_not_parsed_again_and_gives_the_same_config(env):
    path, cache, builds = env
    first = config.load(path)
    second = config.load(path)
    assert builds == [1]
    assert second == first
    assert second.services[0].reals[1].dest.weight == 1
    assert [f.name for f in cache.iterdir()] == ["config" + str(path).replace("_", "__").replace("/", "_") + ".marshal"]


def test_any_change_of_text_is_built_again(env):
    path, _, builds = env
    config.load(path)
    path.write_text(path.read_text().replace("weight=1", "weight=2"))
    assert config.load(path).services[0].reals[1].dest.weight == 2
    assert config.load(path).services[0].reals[1].dest.weight == 2
    assert builds == [1, 1]


def full(path):
    return config._build(config.ini.parse(path.read_text(), str(path)), str(path))


@pytest.fixture
def validated(monkeypatch):
    """The names of the [service]s validated (parsed into a record), in order."""
    names = []
    real = config._service
    monkeypatch.setattr(config, "_service", lambda sec, servers: names.append(sec.name) or real(sec, servers))
    return names


def test_an_edit_validates_only_the_changed_sections_against_the_cache(env, validated):
    path, _, _ = env
    path.write_text(BIG)
    config.load(path)
    assert validated == ["s0", "s1", "s2", "s3", "s4"]
    validated.clear()
    path.write_text("# a comment moves every line\n" + BIG.replace("weight=3", "weight=9"))
    cfg = config.load(path)
    assert validated == ["s2"]
    assert cfg == full(path)
    assert cfg.service("s2").reals[0].dest.weight == 9
    validated.clear()
    assert config.load(path) == cfg and validated == []         # and that is now the cached text
    path.write_text(BIG.replace("10.0.1.1", "10.0.1.9"))       # a [server] they name: all again
    assert config.load(path).service("s0").reals[0].dest.address == "10.0.1.9"
    assert len(validated) == 5


def test_after_an_edit_only_the_changed_service_is_encoded_again(env, monkeypatch):
    path, cache, _ = env
    path.write_text(BIG)
    config.load(path)
    pickled = []
    real = marshal.dumps
    monkeypatch.setattr(configcache.marshal, "dumps", lambda obj: pickled.append(obj) or real(obj))
    path.write_text(BIG.replace("weight=3", "weight=9"))
    config.load(path)
    assert [f[0] for f in pickled if isinstance(f, tuple) and f and f[0] in ("s0", "s1", "s2", "s3", "s4")] == ["s2"]
    kept = configcache.get(path)        # the file read back whole: the old bytes and the new
    assert kept.text == path.read_text() and kept.cfg == full(path)
    (entry,) = cache.iterdir()
    entry.write_bytes(entry.read_bytes() + b"x")       # sizes that do not add up: a miss
    assert configcache.get(path) is None


def test_errors_after_an_edit_name_the_new_lines_and_nothing_is_cached(env, validated):
    path, cache, _ = env
    path.write_text(BIG)
    good = config.load(path)
    text = "# one\n# two\n" + BIG + "\n[service dup]\naddress = 10.0.0.3\nport = 80\n"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:         # the duplicate is the new section; s2 is reused
        config.load(path)
    assert str(e.value).startswith(f"{path}:{text.splitlines().index('[service dup]') + 1}: [service dup]")
    assert "same virtual service" in str(e.value) and "s2" in str(e.value)
    text = BIG.replace("[service s4]\naddress = 10.0.0.5", "[service s4]\naddress = 10.0.0.1")
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf":{text.splitlines().index('[service s4]') + 1}: "
                                          r"\[service s4\].*same virtual service"):
        config.load(path)
    path.write_text(BIG + BIG[BIG.index("[service s3]"):])        # a reused section given twice
    again = len(BIG.splitlines()) + 1
    with pytest.raises(ConfigError, match=rf":{again}: section \[service s3\] given twice"):
        config.load(path)
    (entry,) = cache.iterdir()
    kept = configcache.get(path)
    assert (kept.text, kept.cfg) == (BIG, good)        # the last good parse is still the one kept
    path.write_text(BIG.replace("[server a]\naddress = 10.0.1.1\n", "[server b]\naddress = 10.0.1.2\n"))
    with pytest.raises(ConfigError, match=r"\[service s0\] real.a: 'a' is neither"):
        config.load(path)                          # reused sections are parsed again for it


def test_a_header_behind_unusual_blanks_still_starts_a_section(env, validated):
    path, _, _ = env
    text = BIG.replace("[service s3]", "\u00a0\t[service s3]")
    for edit, name in (("weight=4", "s3"), ("weight=3", "s2")):    # s2's text ends where s3's header is
        path.write_text(text)
        config.load(path)
        validated.clear()
        path.write_text(text.replace(edit, "weight=7"))
        cfg = config.load(path)
        assert validated == [name]
        assert cfg == full(path)


def test_a_bad_config_is_never_cached(env):
    path, cache, builds = env
    path.write_text(path.read_text().replace("weight=1", "weight=70000"))
    for _ in range(2):
        with pytest.raises(ConfigError, match="weight"):
            config.load(path)
    assert builds == [1, 1]
    assert list(cache.iterdir()) == []


def test_another_path_or_parser_version_misses(env, tmp_path, monkeypatch):
    path, _, builds = env
    config.load(path)
    other = tmp_path / "copy.ini"
    other.write_text(path.read_text())
    assert config.load(other).path == str(other)
    monkeypatch.setattr(configcache, "_parser_stamp", lambda: "a newer lvskit")
    config.load(path)
    assert builds == [1, 1, 1]


def test_writable_by_others_or_corrupt_is_a_miss_then_repaired(env):
    path, cache, builds = env
    config.load(path)
    (entry,) = cache.iterdir()
    entry.chmod(0o664)
    config.load(path)
    assert builds == [1, 1]     # not read; rewritten privately
    assert entry.stat().st_mode & 0o077 == 0
    entry.write_bytes(entry.read_bytes()[:-40])
    config.load(path)
    config.load(path)
    assert builds == [1, 1, 1]
    cache.chmod(0o777)
    config.load(path)
    assert builds == [1, 1, 1, 1]


class _Planted:
    """Unpickling this makes a directory: the proof that a pickle was run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickle_planted_in_the_cache_file_is_never_run(env, tmp_path):
    path, cache, builds = env
    config.load(path)
    (entry,) = cache.iterdir()
    marker = tmp_path / "pickle-was-run"
    stamp = configcache._where(path)[1]       # (parser stamp, real path): what get() compares
    with open(entry, "wb") as f:        # the right head, then a pickle where the Config goes
        f.write(marshal.dumps((stamp, path.read_text())))
        f.write(pickle.dumps(_Planted(str(marker))))
    assert configcache.get(path) is None            # bad marshal data: a miss
    assert config.load(path).services[0].name == "www"
    assert builds == [1, 1] and not marker.exists()
    pickle.loads(pickle.dumps(_Planted(str(marker))))
    assert marker.exists()                          # (the payload does work when unpickled)


def test_a_record_of_the_wrong_size_in_the_file_is_a_miss(env):
    path, cache, builds = env
    cfg = config.load(path)
    (entry,) = cache.iterdir()
    plain = configcache._plain(cfg.replace(services=()))       # ["Config", field, ...]
    plain = [["Reweight", 1] if isinstance(v, list) and v[0] == "Reweight" else v for v in plain]
    with open(entry, "wb") as f:
        f.write(marshal.dumps((configcache._where(path)[1], path.read_text())))
        f.write(marshal.dumps((plain, [])))
    assert configcache.get(path) is None
    assert config.load(path).reweight == cfg.reweight and builds == [1, 1]


def test_no_directory_no_cache(env, monkeypatch, tmp_path):
    path, _, builds = env
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(tmp_path / "absent"))
    config.load(path)
    config.load(path)
    assert builds == [1, 1]
    assert not os.path.exists(tmp_path / "absent")


BIG = "[server a]\naddress = 10.0.1.1\n" + "".join(
    f"\n[service s{i}]\naddress = 10.0.0.{i + 1}\nport = 80\nreal.a = weight={i + 1}\n"
    f"real.10.0.2.{i + 1} = weight=2\n" for i in range(5))


def test_memo_rebuilds_only_the_edited_service(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(tmp_path / "absent"))
    built = []
    real = config._service
    monkeypatch.setattr(config, "_service", lambda sec, servers: built.append(sec.name) or real(sec, servers))
    path = tmp_path / "lvskit.ini"
    path.write_text(BIG)
    memo = {}
    config.load(path, memo)
    assert built == ["s0", "s1", "s2", "s3", "s4"]
    built.clear()
    path.write_text("# a comment moves every line\n" + BIG.replace("weight=3", "weight=9"))
    cfg = config.load(path, memo)
    assert built == ["s2"]
    assert cfg == config._build(config.ini.parse(path.read_text(), str(path)), str(path))
    assert cfg.service("s2").reals[0].dest.weight == 9
    built.clear()
    path.write_text(BIG.replace("10.0.1.1", "10.0.1.9"))       # a [server] they name: all again
    assert config.load(path, memo).service("s0").reals[0].dest.address == "10.0.1.9"
    assert len(built) == 5


def test_memo_survives_a_bad_edit_and_still_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LVSKIT_CACHE_DIR", str(tmp_path / "absent"))
    path = tmp_path / "lvskit.ini"
    path.write_text(BIG)
    memo = {}
    config.load(path, memo)
    path.write_text(BIG.replace("real.a = weight=2", "real.a = weight=-2"))
    with pytest.raises(ConfigError, match=r"lvskit.ini:\d+: \[service s1\] real.a"):
        config.load(path, memo)
    path.write_text(BIG + "\n[service dup]\naddress = 10.0.0.1\nport = 80\n")
    with pytest.raises(ConfigError, match="same virtual service"):
        config.load(path, memo)
    path.write_text(BIG)
    assert config.load(path, memo).service("s1").reals[0].dest.weight == 2


def snapshot(sections):
    return [(s.kind, s.name, s.line, {k: (v, n + s.shift) for k, (v, n) in s.values.items()})
            for s in sections]


def test_ini_memo_gives_what_a_full_parse_gives_with_moved_line_numbers():
    memo = {}
    assert snapshot(config.ini.parse(BIG, "x", memo)) == snapshot(config.ini.parse(BIG, "x"))
    moved = "# three\n# new\n# lines\n" + BIG.replace("weight=3", "weight=9")
    first = config.ini.parse(moved, "x", memo)
    assert snapshot(first) == snapshot(config.ini.parse(moved, "x"))
    assert sum(1 for s in first if s.shift) >= 5        # unchanged sections were reused, moved
    crlf = BIG.replace("\n", "\r\n")                    # other line breaks: no memo, same answer
    assert snapshot(config.ini.parse(crlf, "x", memo)) == snapshot(config.ini.parse(crlf, "x"))


def test_errors_in_reused_sections_name_their_new_lines(tmp_path):
    path = tmp_path / "lvskit.ini"
    memo = {}
    path.write_text(BIG)
    config.load(path, memo)
    # [server a] goes: every [service] is re-validated, from reused (moved) ini sections
    text = "# one\n# two\n" + BIG.replace("[server a]\naddress = 10.0.1.1\n", "[server b]\naddress = 10.0.1.2\n")
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(path, memo)
    line = text.splitlines().index("real.a = weight=1") + 1
    assert str(e.value).startswith(f"{path}:{line}: [service s0] real.a")
    path.write_text(BIG + BIG[BIG.index("[service s3]"):])        # a section given twice
    first, again = BIG.splitlines().index("[service s3]") + 1, len(BIG.splitlines()) + 1
    with pytest.raises(ConfigError, match=rf":{again}: section \[service s3\] given twice "
                                          rf"\(first at line {first}\)"):
        config.load(path, memo)


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


def test_a_service_kept_as_plain_tuples_comes_back_equal(tmp_path):
    for text in (ODD, open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "lvskit.ini")).read()):
        cfg = config.parse(text.replace("/var/lib/lvskit", str(tmp_path)))
        for vs in cfg.services:
            back = config.VirtualService.from_flat(marshal.loads(marshal.dumps(vs.flat())))
            assert back == vs and type(back.check) is type(vs.check)
            assert [type(r.dest) for r in back.reals] == [type(r.dest) for r in vs.reals]
            assert back.service.dests == {} and back.wanted().dests == vs.wanted().dests
    odd = config.parse(ODD)
    assert odd.service("web6").check.path == "/health" and odd.service("web6").sorry.port == 443


@pytest.mark.parametrize("text", [
    "", "\n", "# only a comment\n", "[a]", "[a]\nk = v\n", "# c\n[a]\nk = v\n[b]\n",
    "[a]\nk = v\n  [b]\n\tk = v\n\u00a0[c]\n\u3000[d]\nk = [not a header]\n",
    " [a]\n[b]\n", "\n\n[a]\n\n[b]", "[a]\nk = v\n[b", "k = v\n[\n"])
def test_sections_are_cut_where_the_multi_line_pattern_cuts(text):
    assert ini._split(text) == ini._SECTION_START.split(text)


def test_the_rest_of_a_config_goes_through_marshal_and_back(tmp_path):
    """Records (heartbeat, nodes, servers, reweight ...) as [name, fields] lists and back."""
    seed = open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "lvskit.ini")).read()
    for text in (ODD, seed):
        cfg = config.parse(text.replace("/var/lib/lvskit", str(tmp_path)))
        back = configcache._record(marshal.loads(marshal.dumps(configcache._plain(cfg))))
        assert back == cfg
        assert [type(x) for x in back] == [type(x) for x in cfg]
    assert cfg.heartbeat is not None and type(back.heartbeat) is config.Heartbeat
    assert type(back.services[0].service.key) is config.ServiceKey
    with pytest.raises(TypeError):
        configcache._plain(cfg.replace(director=object()))
