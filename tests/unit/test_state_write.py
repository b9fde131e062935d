"""A STATE_DIR that cannot be written (read-only, or full) never stops failure detection.

Real file systems: a tmpfs mounted read-only, and a tmpfs of one page filled
up (root ignores a chmod, so nothing else would really refuse the write).
The kernel is the fake one (MemoryTable); the check is real TCP on loopback.
"""
import os
import socket
import subprocess

import pytest

from lvskit import checkreal, config, reweight, state, sync
from lvskit.desired import desired_table
from lvskit.errors import CHECK_UNKNOWN
from fakekernel import FakeKernel as MemoryTable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, ro, before): a tmpfs at tmp_path/name; before(dir) fills it while writable."""
    mounted = []

    def mount(name, size="1m", ro=False, before=None):
        d = tmp_path / name
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)], check=True)
        mounted.append(d)
        if before:
            before(d)
        if ro:
            subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        return d
    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", str(d)], check=True)


def fill(d):
    """Take the tmpfs's every block (and a temp file's first write fails)."""
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.fixture
def up():
    """A TCP listener on 127.0.0.1 (an up server); 127.0.0.2 on its port is a down one."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s
    s.close()


def make_cfg(tmp_path, state_dir, port):
    path = tmp_path / "lvskit.ini"
    path.write_text(f"""[global]
state_dir = {state_dir}
run_dir = {tmp_path}/run
[service web]
address = 10.0.0.100
port = {port}
check = tcp
check_timeout = 0.5
check_interval = 0.1
check_rise = 1
check_fall = 1
check_flap_changes = 0
real.127.0.0.1 = weight=3
real.127.0.0.2 = weight=2
""")
    return config.load(str(path))


def owned(cfg):
    """What ipvs-sync would have recorded: so only health.json's write is at stake."""
    def before(d):
        sync.save_owned(cfg, set(desired_table(cfg)))
    return before


def weights(kernel):
    (svc,) = kernel.table.values()
    return {d.address: d.weight for d in svc.dests.values()}


def loaded(cfg):
    """A fake kernel holding the config's table, as ipvs-sync left it."""
    return MemoryTable(desired_table(cfg))


def test_save_names_the_state_file_and_what_failed(tmpfs):
    ro = tmpfs("ro", ro=True)
    with pytest.raises(state.WriteError) as e:
        state.save(str(ro / "health.json"), {"services": {}})
    assert str(e.value) == (f"{ro}/health.json: cannot write it (creating a temp file beside it): "
                            "Read-only file system")
    full = tmpfs("full", size="4k", before=fill)
    with pytest.raises(state.WriteError) as e:
        state.save(str(full / "health.json"), {"services": {}})
    assert str(e.value) == f"{full}/health.json: cannot write it (writing its temp file): No space left on device"
    assert sorted(os.listdir(full)) == ["filler"]       # no temp file left behind


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_check_real_takes_the_dead_server_out_and_says_which_file(tmp_path, tmpfs, up, capsys, kind):
    port = up.getsockname()[1]
    cfg = make_cfg(tmp_path, tmp_path / "state", port)
    if kind == "read-only":
        d = tmpfs("state", ro=True, before=owned(cfg))
        why = "(creating a temp file beside it): Read-only file system"
    else:
        d = tmpfs("state", size="8k", before=lambda d: (owned(cfg)(d), fill(d)))
        why = "(writing its temp file): No space left on device"
    kernel, lines = loaded(cfg), []
    capsys.readouterr()
    code = checkreal.run(cfg, cfg.path, kernel=kernel, out=lines.append)
    assert weights(kernel) == {"127.0.0.1": 3, "127.0.0.2": 0}      # the dead one is out
    assert code == CHECK_UNKNOWN            # a server down (WARNING), the state unwritable (UNKNOWN)
    problem = f"{d}/health.json: cannot write it {why}"
    assert lines[0].startswith("CHECK_REAL UNKNOWN - 1/2 down; web 127.0.0.2 down")
    assert f"; state: {problem} |" in lines[0]
    assert capsys.readouterr().err.splitlines() == [f"{__import__('lvskit').log.program()}: {problem}"]


def test_check_real_all_up_with_a_read_only_state_dir_is_unknown(tmp_path, tmpfs, up):
    port = up.getsockname()[1]
    cfg = make_cfg(tmp_path, tmp_path / "state", port)
    tmpfs("state", ro=True, before=owned(cfg))
    up2 = socket.socket()
    up2.bind(("127.0.0.2", port))
    up2.listen(16)
    try:
        lines = []
        assert checkreal.run(cfg, cfg.path, kernel=loaded(cfg), out=lines.append) == CHECK_UNKNOWN
        assert lines[0].startswith("CHECK_REAL UNKNOWN - 2/2 up; state: ")
    finally:
        up2.close()


class Rounds(Exception):
    pass


def test_check_real_every_keeps_going_and_keeps_the_kernel_right(tmp_path, tmpfs, up, capsys, monkeypatch):
    """Round 1: the dead server goes out; then it comes back, and round 2 puts it back:
    no state file was ever written, the loop never stopped."""
    port = up.getsockname()[1]
    cfg = make_cfg(tmp_path, tmp_path / "state", port)
    d = tmpfs("state", ro=True, before=owned(cfg))
    kernel, seen, back = loaded(cfg), [], []
    real_once = checkreal.once

    def once(*a, **kw):
        rnd, tracks, checked = real_once(*a, **kw)
        if rnd.probes:
            seen.append((weights(kernel), rnd.state_error))
            if len(seen) == 1:
                s = socket.socket()
                s.bind(("127.0.0.2", port))
                s.listen(16)
                back.append(s)
            if len(seen) == 2:
                raise Rounds
        return rnd, tracks, checked
    monkeypatch.setattr(checkreal, "once", once)
    capsys.readouterr()
    try:
        with pytest.raises(Rounds):
            checkreal.run(cfg, cfg.path, every=0.1, kernel=kernel)
    finally:
        for s in back:
            s.close()
    problem = f"{d}/health.json: cannot write it (creating a temp file beside it): Read-only file system"
    assert seen == [({"127.0.0.1": 3, "127.0.0.2": 0}, problem), ({"127.0.0.1": 3, "127.0.0.2": 2}, problem)]
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "health.json" in line] == [f"{__import__('lvskit').log.program()}: {problem}"] * 2
    assert not os.path.exists(state.health_path(cfg))


def reweight_cfg(tmp_path):
    path = tmp_path / "lvskit.ini"
    path.write_text(f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[reweight]
scale = 1
max_step = 1
deadband = 0
alpha = 1
floor = 0
[service web]
address = 10.0.0.100
port = 80
reweight = agent
real.127.0.0.1 = weight=10
""")
    return config.load(str(path))


def test_reweight_sets_the_kernel_then_names_weights_json(tmp_path, tmpfs, monkeypatch):
    cfg = reweight_cfg(tmp_path)
    d = tmpfs("state", ro=True)
    monkeypatch.setattr(reweight, "ask", lambda queries, timeout: {q: b"up 50%\n" for q in queries})
    kernel = loaded(cfg)
    with pytest.raises(state.WriteError) as e:      # bin/reweight: cli.run makes it one line, exit 1
        reweight.run(cfg, cfg.path, kernel=kernel)
    assert weights(kernel) == {"127.0.0.1": 5}
    assert str(e.value) == (f"{d}/weights.json: cannot write it (creating a temp file beside it): "
                            "Read-only file system")


def test_reweight_every_keeps_going(tmp_path, tmpfs, monkeypatch, capsys):
    cfg = reweight_cfg(tmp_path)
    d = tmpfs("state", ro=True)
    answers = iter([b"up 50%\n", b"up 20%\n"])

    def ask(queries, timeout):
        try:
            answer = next(answers)
        except StopIteration:
            raise Rounds from None
        return {q: answer for q in queries}
    monkeypatch.setattr(reweight, "ask", ask)
    kernel = loaded(cfg)
    capsys.readouterr()
    with pytest.raises(Rounds):
        reweight.run(cfg, cfg.path, every=0.01, kernel=kernel)
    assert weights(kernel) == {"127.0.0.1": 2}      # the second round's answer reached the kernel
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"{d}/weights.json: cannot write it" in line for line in err)
