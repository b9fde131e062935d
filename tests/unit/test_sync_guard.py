"""ipvs-sync fails safe: an emptied or cut config, a killed load, an unwritable state file, foreign services."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lvskit import config, plan as P, sync
from lvskit.errors import CHECK_OK, CHECK_WARNING, NOT_CONFIGURED
from fakekernel import FakeKernel
from lvskit.model import Service, ServiceKey

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNC = os.path.join(ROOT, "bin", "ipvs-sync")


def table_text(n, state):
    """A config of n services (10.0.0.100, ports 1000...), two real servers each."""
    head = f"[global]\nstate_dir = {state}\nrun_dir = {state}\n"
    return head + "".join(f"[service s{i}]\naddress = 10.0.0.100\nport = {1000 + i}\n"
                          f"real.10.0.1.1 = weight=1\nreal.10.0.1.2 = weight=2\n" for i in range(n))


def loaded(tmp_path, n=3):
    k = FakeKernel()
    sync.reconcile(config.parse(table_text(n, tmp_path)), k)
    assert len(k.table) == n
    k.writes.clear()
    return k


def snapshot(k):
    return {key: dict(svc.dests) for key, svc in k.table.items()}


@pytest.mark.parametrize("text", ["", "  \n\t\n", "# only a comment\n; and another\n",
                                  "[global]\nstate_dir = {state}\nrun_dir = {state}\n"])
def test_a_config_without_services_deletes_nothing(tmp_path, text):
    k = loaded(tmp_path)
    before = snapshot(k)
    cfg = config.parse(text.format(state=tmp_path), "e.ini").replace(state_dir=str(tmp_path),
                                                                      run_dir=str(tmp_path))
    for dry_run in (True, False):
        with pytest.raises(sync.Refused) as e:
            sync.reconcile(cfg, k, dry_run=dry_run)
        assert e.value.code == NOT_CONFIGURED
        assert "refusing to delete all services ipvs-sync made" in str(e.value)
        assert "--force" in str(e.value)
    assert snapshot(k) == before and k.writes == []
    out = sync.reconcile(cfg, k, force=True)       # the deliberate act
    assert [op.kind for op in out.ops] == [P.DEL_SERVICE] * 3 and k.table == {}


def test_more_than_the_share_is_refused_one_service_is_not(tmp_path):
    k = loaded(tmp_path, 4)
    with pytest.raises(sync.Refused, match=r"refusing to delete 3 of the 4 services .*max_remove = 50%"):
        sync.reconcile(config.parse(table_text(1, tmp_path)), k)
    with pytest.raises(sync.Refused, match="2 of the 4"):      # half is more than 49%
        sync.reconcile(config.parse(table_text(2, tmp_path).replace(
            "[global]\n", "[global]\nmax_remove = 49%\n")), k)
    assert len(k.table) == 4 and k.writes == []
    out = sync.reconcile(config.parse(table_text(2, tmp_path)), k)     # 2 of 4: not more than half
    assert [op.kind for op in out.ops] == [P.DEL_SERVICE] * 2
    out = sync.reconcile(config.parse(table_text(1, tmp_path)), k)     # one at a time: always
    assert [op.kind for op in out.ops] == [P.DEL_SERVICE]
    with pytest.raises(sync.Refused, match="all services"):            # but never the last
        sync.reconcile(config.parse(table_text(0, tmp_path) + "[service other]\naddress = 10.0.0.9\n"
                                    "port = 1\nreal.10.0.1.1 =\n"), k)
    allow_all = table_text(1, tmp_path).replace("[global]\n", "[global]\nmax_remove = 100%\n")
    k = loaded(tmp_path, 4)
    assert len(sync.reconcile(config.parse(allow_all), k).ops) == 3


def test_foreign_services_do_not_count_and_are_never_touched(tmp_path):
    k = loaded(tmp_path, 2)
    foreign = Service(ServiceKey(2, 6, "10.9.9.9", 80), "rr")
    k.table[foreign.key] = foreign
    out = sync.reconcile(config.parse(table_text(1, tmp_path)), k)       # 1 of the 2 made: allowed
    assert [op.kind for op in out.ops] == [P.DEL_SERVICE] and foreign.key in k.table


class KilledKernel(FakeKernel):
    """Applies the first `survive` operations of the next execute, then the process 'dies'."""

    def __init__(self, survive):
        super().__init__()
        self.survive = survive

    def execute(self, ops):
        if self.survive is not None:
            done, self.survive = self.survive, None
            super().execute(ops[:done])
            raise KeyboardInterrupt     # no code of ipvs-sync's runs after this point
        return super().execute(ops)


def test_a_killed_load_leaves_no_orphan(tmp_path):
    k = KilledKernel(survive=40)        # 10 services and a half made, of 20 (3 operations each)
    with pytest.raises(KeyboardInterrupt):
        sync.reconcile(config.parse(table_text(20, tmp_path)), k)
    assert 10 <= len(k.table) < 20
    shrunk = config.parse(table_text(10, tmp_path).replace("[global]\n", "[global]\nmax_remove = 100%\n"))
    sync.reconcile(shrunk, k)
    assert sorted(key.port for key in k.table) == list(range(1000, 1010))
    assert sync.reconcile(shrunk, k).ops == []
    assert sync.check(shrunk, k) == CHECK_OK


def test_check_warns_of_services_nobody_accounts_for(tmp_path, capsys):
    cfg = config.parse(table_text(2, tmp_path))
    k = FakeKernel()
    sync.reconcile(cfg, k)
    assert sync.check(cfg, k) == CHECK_OK
    assert capsys.readouterr().out.startswith("IPVS_SYNC OK - 2 services in line with the config |")
    orphan = Service(ServiceKey(2, 6, "10.0.0.100", 7), "wlc")
    k.table[orphan.key] = orphan
    assert sync.check(cfg, k) == CHECK_WARNING
    line = capsys.readouterr().out
    assert line.startswith("IPVS_SYNC WARNING - 2 services in line with the config; 1 in the kernel")
    assert "tcp 10.0.0.100:7" in line and "foreign=1;;;0" in line
    assert sync.check(cfg.replace(foreign="ignore"), k) == CHECK_OK


def test_an_unwritable_state_dir_still_makes_the_table(tmp_path, capsys):
    """ipvs-sync.json cannot be written (a read-only state_dir): the table is made, the run says so."""
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(state)]).returncode:
        pytest.skip("needs root to mount a read-only tmpfs")
    try:
        cfg = config.parse(table_text(2, state)).replace(run_dir=str(tmp_path))
        k = FakeKernel()
        out = sync.reconcile(cfg, k)
        assert len(k.table) == 2 and out.unrecorded
        assert f"{state}/ipvs-sync.json: cannot record" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(state)])


def run_sync(*args, timeout=20):
    return subprocess.run([sys.executable, SYNC] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))


@pytest.mark.parametrize("text", ["", "\n \n", "# nothing\n", "[global]\n"])
def test_check_config_rejects_a_config_without_services(tmp_path, text):
    path = tmp_path / "e.ini"
    path.write_text(text)
    r = run_sync("--check-config", "-c", str(path))
    assert r.returncode == NOT_CONFIGURED and r.stdout == ""
    assert r.stderr == f"ipvs-sync: {path}: no [service] section: a director's config names at least " \
                       f"one (ipvs-sync --force applies it, deleting ipvs-sync's services)\n"


def test_config_must_be_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, "/dev/null"):
        r = run_sync("--check-config", "-c", str(path))       # a FIFO with no writer would hang
        assert (r.returncode, r.stderr) == (NOT_CONFIGURED, f"ipvs-sync: {path}: not a regular file\n")


HARNESS = r"""
import json, os, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "..", "tests", "unit")]
from lvskit import config, log, sync
from fakekernel import FakeKernel
class Kernel(FakeKernel):
    def execute(self, ops):
        for op in ops:
            print(json.dumps([op.kind, str(op.service.key), str(op.dest)]), flush=True)
        return super().execute(ops)
log.setup("ipvs-sync", verbose=True, use_syslog=False)
sync.run(config.load(sys.argv[2]), sys.argv[2], every=60, kernel=Kernel())
"""


def test_every_reads_an_edited_config_once_it_has_settled(tmp_path):
    """A config rewritten in place, in pieces: --every never acts on a piece."""
    path = tmp_path / "lvskit.ini"
    full = table_text(3, tmp_path)
    path.write_text(full)
    loop = subprocess.Popen([sys.executable, "-c", HARNESS, os.path.join(ROOT, "lib"), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, loop.kill)       # a loop that never answers fails the test, not hangs it
    watchdog.start()
    try:
        def ops(n):
            got = [json.loads(loop.stdout.readline()) for _ in range(n)]
            assert all(got), got
            return got
        assert [k for k, _, _ in ops(9)].count(P.ADD_SERVICE) == 3        # the first load
        edited = full.replace("real.10.0.1.2 = weight=2\n", "real.10.0.1.2 = weight=5\n")
        with open(path, "r+") as f:             # rewritten in place, as `cat new > lvskit.ini` does
            f.truncate(0)
            for i in range(0, len(edited), 40):
                f.write(edited[i:i + 40])
                f.flush()
                time.sleep(0.02)                # a slow writer: far less than the settle time
        assert ops(3) == [[P.EDIT_DEST, "tcp 10.0.0.100:%d" % p, "10.0.1.2:%d" % p] for p in (1000, 1001, 1002)]
    finally:
        watchdog.cancel()
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=20)
    assert out == ""            # nothing else reached the kernel: no piece of the file was applied
    assert f"{path} changed: reading it once it has not changed for 1 s" in err
    assert "Traceback" not in err


def read_until(stream, text, timeout=20):
    """What the stream says until it has said text (or the timeout)."""
    import select
    got, deadline = "", time.monotonic() + timeout
    while text not in got and select.select([stream], [], [], max(0, deadline - time.monotonic()))[0]:
        chunk = os.read(stream.fileno(), 4096).decode()
        if not chunk:
            break
        got += chunk
    return got


def test_every_keeps_the_previous_config_when_the_new_one_is_refused(tmp_path):
    path = tmp_path / "lvskit.ini"
    path.write_text(table_text(3, tmp_path))
    loop = subprocess.Popen([sys.executable, "-c", HARNESS, os.path.join(ROOT, "lib"), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, loop.kill)
    watchdog.start()
    try:
        for _ in range(9):
            loop.stdout.readline()
        tmp = tmp_path / "new"
        tmp.write_text(table_text(1, tmp_path).replace("weight=2", "weight=7"))
        os.replace(tmp, path)                   # 2 of 3 services gone, and an edit
        err = read_until(loop.stderr, "refusing to delete")
        assert "refusing to delete 2 of the 3 services" in err and "(keeping the previous config)" in err
        tmp.write_text(table_text(3, tmp_path).replace("port = 1002", "port = 1003"))
        os.replace(tmp, path)                   # one service replaced: allowed
        assert [json.loads(loop.stdout.readline())[0] for _ in range(4)] == \
            [P.ADD_SERVICE, P.ADD_DEST, P.ADD_DEST, P.DEL_SERVICE]
    finally:
        watchdog.cancel()
        loop.send_signal(signal.SIGTERM)
        out, _ = loop.communicate(timeout=20)
    assert out == ""


def test_check_real_never_deletes_a_service(tmp_path):
    """Its config lost two of three services: check-real goes on with the rest, deleting none."""
    from lvskit import checkreal
    k = loaded(tmp_path, 3)
    cfg = config.parse(table_text(1, tmp_path).replace("weight=2", "weight=4"))
    out = checkreal.update_kernel(cfg, k, {})
    assert [op.kind for op in out.ops] == [P.EDIT_DEST] and len(k.table) == 3
    follower = sync.Follower(k)
    for full in (True, False):
        assert checkreal.update_kernel(cfg, follower, {}, full=full).ops == []
    assert len(k.table) == 3
