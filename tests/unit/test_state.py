"""State files: atomic replacement, nothing left behind, unreadable ones are the default."""
import os

import pytest

from lvskit import state


def test_save_replaces_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "s.json"
    state.save(str(path), {"b": 1, "a": [1, 2]})
    state.save(str(path), {"c": 3}, durable=False)
    assert state.load(str(path)) == {"c": 3}
    assert os.listdir(path.parent) == ["s.json"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = tmp_path / "s.json"
    state.save(str(path), {"ok": True})
    with pytest.raises(TypeError):
        state.save(str(path), {"bad": object()})        # not JSON: fails before the file is touched
    with pytest.raises(TypeError):
        state.replace(str(path), "not bytes")           # fails while writing the temp file
    assert state.load(str(path)) == {"ok": True}
    assert os.listdir(tmp_path) == ["s.json"]


def test_unreadable_state_is_the_default(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{torn")
    assert state.load(str(path), {"d": 1}) == {"d": 1}
    assert state.load(str(tmp_path / "absent")) is None


def test_a_file_of_the_wrong_shape_is_the_default_with_one_warning_per_version(tmp_path, capsys):
    path = str(tmp_path / "s.json")

    def shape(data):
        return state.integer(state.obj(data, "the file").get("n"), "n", 0, 10)
    capsys.readouterr()
    for text in ('{"n": 11}', '{"n": NaN}', "[" * 100_000, '{"n": 1e400}'):
        with open(path, "w") as f:
            f.write(text)
        assert state.load(path, -1, shape) == -1
        assert state.load(path, -1, shape) == -1        # a poll: the same version, no second warning
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"{path}: ignoring this state file: " in err[0], err
    with open(path, "w") as f:
        f.write('{"n": 3}')
    assert state.load(path, -1, shape) == 3
    os.unlink(path)
    os.mkfifo(path)     # no writer: must not wait for one
    assert state.load(path, -1, shape) == -1
    assert "ignoring this state file: not a regular file" in capsys.readouterr().err
