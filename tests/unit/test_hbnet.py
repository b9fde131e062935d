"""hb-listen's loop and hb-send's role file without sockets: a fake worker, a config in tmp_path."""
import contextlib
import os
import socket

import pytest

from lvskit import config, hbnet, rolefile, state
from lvskit.hbnet import floors, listener, sockets
from lvskit.hbnet import sender as sender_module
from lvskit.heartbeat import ACTIVE, HELD, STANDBY

KEY = b"0123456789abcdef0123456789abcdef"


def hb_config(tmp_path, timing="initdead = 0"):
    return config.parse(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lo
vips = 127.0.0.99/32
{timing}
[node a]
priority = 200
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
""", "t.ini")


@pytest.fixture
def cfg(tmp_path):
    return hb_config(tmp_path)


@contextlib.contextmanager
def reserved_port():
    """A UDP port no one else can take while the block runs: a wildcard socket holds it.

    SO_REUSEADDR on it and on the listener's sockets lets those bind their
    own addresses on the same port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 0))
        yield s.getsockname()[1]


class FakeWorker:
    def __init__(self, role):
        self.role, self.pending, self.sent, self.answers = role, None, [], []

    def send(self, command):
        self.sent.append(command)
        self.pending = command

    def overdue(self):
        return False

    def answer(self):
        self.pending = None
        return self.answers.pop(0)


def beat_of_b(state, seq, key=KEY):
    """Node b's datagram on path lo, generation 1."""
    from lvskit import heartbeat
    return heartbeat.encode(heartbeat.Beat("b", state, 100, "lo", 1, seq), key)


def test_deleted_role_file_keeps_the_last_role(cfg):
    rolefile.write_role(cfg, ACTIVE)
    asked = []
    rf = rolefile.RoleFile(cfg, interface=lambda: asked.append(1) or ACTIVE)
    assert rf.get() == ACTIVE and not rf.lost and asked == [1]
    os.unlink(state.role_path(cfg))
    assert rf.get() == ACTIVE and rf.lost          # not "standby" while we hold the VIPs
    with open(state.role_path(cfg), "w") as f:
        f.write("{garbage")
    assert rf.get() == ACTIVE and rf.lost
    rolefile.write_role(cfg, STANDBY)
    assert rf.get() == STANDBY and not rf.lost
    assert asked == [1]             # the interface is asked at the start only


def test_no_role_file_at_start_asks_the_interface(cfg):
    assert rolefile.RoleFile(cfg, interface=lambda: ACTIVE).get() == ACTIVE
    assert rolefile.RoleFile(cfg).get() == STANDBY


def test_a_stale_active_role_file_is_not_advertised(cfg):
    """Left by a crash without a reboot: the file says active, the VIPs are gone."""
    rolefile.write_role(cfg, ACTIVE)
    rf = rolefile.RoleFile(cfg, interface=lambda: STANDBY)
    assert rf.get() == STANDBY
    assert rf.get() == STANDBY              # the same stale file: still standby
    rolefile.write_role(cfg, ACTIVE)        # takeover wrote it again, after adding the VIPs
    assert rf.get() == ACTIVE


@pytest.mark.parametrize("role", [STANDBY, HELD])
def test_a_role_file_that_claims_nothing_is_taken_as_it_is(cfg, role):
    rolefile.write_role(cfg, role)
    assert rolefile.RoleFile(cfg, interface=lambda: pytest.fail("asked")).get() == role


def test_listener_has_the_worker_rewrite_a_deleted_role_file(cfg):
    rolefile.write_role(cfg, ACTIVE)
    worker = FakeWorker(ACTIVE)
    li = hbnet.Listener(cfg, cfg.node("a"), KEY, [], worker, clock=lambda: 100.0)
    li.step(100.0)
    assert worker.sent == []                        # active, nobody else: nothing to do
    os.unlink(state.role_path(cfg))
    li.step(100.1)
    assert worker.sent == ["status"] and li.role == ACTIVE


def _no_nonlocal_bind():
    # With ip_nonlocal_bind the "missing" address would bind and the test
    # would send to it, off this machine: refuse to run then.
    for v in (4, 6):
        try:
            with open(f"/proc/sys/net/ipv{v}/ip_nonlocal_bind") as f:
                if f.read().strip() != "0":
                    return False
        except OSError:
            return False
    return True


def _two_paths(tmp_path, port, extra=""):
    # path "a0" sorts first and its address (TEST-NET-1) is not on this machine
    return config.parse(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = lo
vips = 127.0.0.99/32
port = {port}
{extra}
[node a]
priority = 200
path.a0 = 192.0.2.1
path.lo = 127.0.0.1
[node b]
path.a0 = 192.0.2.2
path.lo = 127.0.0.2
""", "t.ini")


@pytest.mark.skipif(not _no_nonlocal_bind(), reason="ip_nonlocal_bind is on")
def test_a_path_whose_address_is_missing_does_not_silence_the_others(tmp_path, capsys):
    import socket
    from lvskit import heartbeat
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.2", 0))
        rx.settimeout(5)
        cfg = _two_paths(tmp_path, rx.getsockname()[1])
        sender = hbnet.Sender(cfg, cfg.node("a"), KEY, 1)
        sender.send(STANDBY)
        sender.send(STANDBY)
        data, source = rx.recvfrom(512)
        beat = heartbeat.decode(data, KEY)
        assert (source[0], beat.seq) == ("127.0.0.1", 1)
        assert [p.sock is None for p in sender.paths] == [True, False]
    assert capsys.readouterr().err.count("path a0: cannot send from 192.0.2.1") == 1


def test_a_multicast_group_that_cannot_be_joined_on_one_path_does_not_stop_listening(tmp_path, capsys):
    with reserved_port() as port:
        cfg = _two_paths(tmp_path, port, "multicast = 239.255.0.94")
        sockets, joins = hbnet.listen_sockets(cfg, cfg.node("a"))
    try:
        # each path its own sockets (its address, the group), the missing address's too
        assert sorted(s.getsockname() for s in sockets) == sorted(
            [("192.0.2.1", port), ("127.0.0.1", port), ("239.255.0.94", port), ("239.255.0.94", port)])
        assert [name for _, name, _ in joins.pending] == ["a0"]
        joins.retry()                       # within the second: not tried again, not logged again
        assert capsys.readouterr().err.count("path a0: cannot join") == 1
    finally:
        for s in sockets:
            s.close()


def test_inetd_with_stdin_not_a_socket_is_one_line(tmp_path):
    import subprocess
    import sys
    cfg_file = tmp_path / "c.ini"
    key = tmp_path / "hb.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    cfg_file.write_text(f"[global]\nstate_dir = {tmp_path}/s\nrun_dir = {tmp_path}/r\n"
                        f"[heartbeat]\nkey_file = {key}\nvip_interface = lo\nvips = 127.0.0.99/32\n"
                        "[node a]\npath.lo = 127.0.0.1\n[node b]\npath.lo = 127.0.0.2\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.geteuid() != 0:
        pytest.skip("the key file must be root's")
    r = subprocess.run([sys.executable, os.path.join(root, "bin", "hb-listen"), "-c", str(cfg_file),
                        "--node", "a", "--inetd"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    assert r.returncode == 2 and "not a socket" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_path_added_on_one_node_first_keeps_the_old_paths_heard(tmp_path):
    """Rolling config change: b knows a new path 'aaa' (sorting first), a does not yet."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        port = rx.getsockname()[1]
        text = (f"[global]\nstate_dir = {tmp_path}/state\nrun_dir = {tmp_path}/run\n"
                f"[heartbeat]\nkey_file = /etc/lvskit/hb.key\nvip_interface = lo\n"
                f"vips = 127.0.0.99/32\nport = {port}\n"
                "[node a]\npriority = 200\n{a}path.lo = 127.0.0.1\n"
                "[node b]\n{b}path.lo = 127.0.0.2\n")
        before = config.parse(text.format(a="", b=""), "old.ini")
        after = config.parse(text.format(a="path.aaa = 127.0.0.3\n", b="path.aaa = 127.0.0.4\n"), "new.ini")
        hbnet.Sender(after, after.node("b"), KEY, 1).send(STANDBY)
        li = hbnet.Listener(before, before.node("a"), KEY, [], FakeWorker(STANDBY), clock=lambda: 1.0)
        data, source = rx.recvfrom(512)
    beat = li.receiver.accept(data, source[0])
    assert (beat.name, beat.path, source[0]) == ("b", "lo", "127.0.0.2")


# A stand-in for `takeover --serve`: "ready" after SLEEP s, "hang" never answers.
WORKER = r"""
import sys, time
time.sleep(float(sys.argv[1]))
print("ready standby", flush=True)
for line in sys.stdin:
    if line.strip() == "hang":
        time.sleep(60)
    print("done active", flush=True)
"""


def _worker(sleep, **kw):
    import sys
    return hbnet.Worker([sys.executable, "-c", WORKER, str(sleep)], **kw)


def _wait_answer(worker, timeout=10):
    import select
    assert select.select([worker], [], [], timeout)[0], "no answer"
    return worker.answer()


def test_a_worker_restart_does_not_block_the_loop():
    import time
    w = _worker(0)
    try:
        assert w.role == STANDBY and w.pending is None
        w.argv[-1] = "1.0"              # the restarted one takes a second to be ready
        t = time.monotonic()
        w.restart("test")
        assert time.monotonic() - t < 0.5       # heartbeats go on being read meanwhile
        assert w.pending == "start"
        assert _wait_answer(w) == (True, STANDBY) and w.pending is None
        w.send("acquire")
        assert _wait_answer(w) == (True, ACTIVE)
    finally:
        w.proc.kill()


def test_a_command_without_answer_restarts_the_worker(cfg, capsys):
    import time
    w = _worker(0, timeout=0.2)
    try:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [], w, clock=time.monotonic)
        w.send("hang")
        first = w.proc.pid
        li.step(time.monotonic())
        assert w.proc.pid == first                  # not yet overdue
        deadline = time.monotonic() + 5
        while not w.overdue():                      # 0.2 s without an answer
            assert time.monotonic() < deadline
            time.sleep(0.01)
        li.step(time.monotonic())
        assert w.proc.pid != first and w.pending == "start"
        assert "gave no answer to 'hang' in 0.2 s; restarting" in capsys.readouterr().err
        assert _wait_answer(w) == (True, STANDBY)
    finally:
        w.proc.kill()


def test_a_failed_release_is_tried_again(cfg):
    from lvskit.heartbeat import Beat
    rolefile.write_role(cfg, ACTIVE)
    worker = FakeWorker(ACTIVE)
    li = hbnet.Listener(cfg, cfg.node("a"), KEY, [], worker, clock=lambda: 10.0)
    li.heard(Beat("b", ACTIVE, 300, "lo", 1, 1), 10.0)     # a better active peer: release
    li.step(10.0)
    assert worker.sent == ["release"]
    worker.answers.append((False, "release failed, still holding 127.0.0.99/32"))
    li._answer()                    # the worker left the role file at active
    assert li.role == ACTIVE
    li.heard(Beat("b", ACTIVE, 300, "lo", 1, 2), 10.6)
    li.step(10.6)
    assert worker.sent == ["release", "release"]


def _datagram(generation, seq, path="lo"):
    from lvskit import heartbeat
    from lvskit.heartbeat import Beat
    return heartbeat.encode(Beat("b", ACTIVE, 100, path, generation, seq), KEY)


def _listener(cfg, now):
    return hbnet.Listener(cfg, cfg.node("a"), KEY, [], FakeWorker(STANDBY), clock=lambda: now)


def _hear(li, generation, seqs, now):
    for seq in seqs:
        li.heard(li.receiver.accept(_datagram(generation, seq), "127.0.0.2"), now)
    li.step(now)


def _refused(li, generation, seq):
    from lvskit.heartbeat import BadBeat
    try:
        li.receiver.accept(_datagram(generation, seq), "127.0.0.2")
    except BadBeat:
        return True
    return False


def test_older_generations_stay_refused_after_a_restart(cfg):
    first = _listener(cfg, 1.0)
    _hear(first, 9, [1], 1.0)
    _hear(first, 10, [1], 1.0)      # b restarted
    # hb-listen crashes and restarts; generation 9's datagrams, captured, come back
    again = _listener(cfg, 2.0)
    assert _refused(again, 9, 2)
    assert _refused(again, 10, 1 + again.floors.span)      # reserved after the beat 1 it heard
    assert not _refused(again, 10, 2 + again.floors.span)
    # the file is state: deleted, we are back to what memory alone knows
    os.unlink(state.replay_path(cfg))
    third = _listener(cfg, 3.0)
    assert not _refused(third, 9, 2)


def test_no_beat_accepted_before_a_crash_is_accepted_after_it(cfg):
    first = _listener(cfg, 1.0)
    span = first.floors.span
    assert span == 25           # half of initdead (none here: at least 0.5 s) in beats of 20 ms
    accepted = []
    for seq in range(1, 4 * span):      # b's beats, one step per beat: the file stays ahead
        _hear(first, 7, [seq], 1.0)
        accepted.append(seq)
        kept = floors.load_floors(first.floors.path, {"b": {}})["b"]
        assert kept[0] == 7 and seq < kept[1] <= seq + span
    # SIGKILL: no close().  Every number ever accepted is refused, on every path,
    # and the live sender's next numbers are heard within a span
    again = _listener(cfg, 2.0)
    assert all(_refused(again, 7, seq) for seq in accepted)
    assert not _refused(again, 7, accepted[-1] + span + 1)
    assert not _refused(again, 8, 1)                # b's hb-send restarted meanwhile


def test_a_clean_exit_keeps_the_exact_newest_beat(cfg):
    first = _listener(cfg, 1.0)
    _hear(first, 7, range(1, 40), 1.0)
    first.close()
    again = _listener(cfg, 2.0)
    assert _refused(again, 7, 39) and _refused(again, 7, 1)
    assert not _refused(again, 7, 40)               # the live peer's next beat: heard at once


def test_a_long_initdead_reserves_further_ahead_and_writes_less(tmp_path):
    cfg = hb_config(tmp_path, "initdead = 10s")
    li = _listener(cfg, 1.0)
    assert li.floors.span == 250               # 5 s of beats
    writes = []
    li.floors.save = lambda kept, now: (writes.append(kept), setattr(li.floors, "kept", kept))
    for seq in range(1, 1001):
        _hear(li, 7, [seq], 1.0)
    assert len(writes) == 8             # every half span: 1,000 beats, 8 writes


def test_floors_that_cannot_be_written_are_one_line_and_beats_go_on(tmp_path, capsys):
    (tmp_path / "plainfile").write_text("")
    cfg = hb_config(tmp_path / "plainfile")        # state_dir under a plain file
    li = _listener(cfg, 1.0)
    _hear(li, 7, range(1, 100), 1.0)
    assert li.receiver.tops["b"] == (7, 99)
    err = capsys.readouterr().err
    # one line for the read, one for the writes (rate-limited), no traceback
    assert err.count("may accept heartbeats captured") == 1 and "Traceback" not in err, err


WRONG_SHAPES = ["", "null", "5", '"x"', "true", "[1]", "[]", "{", '{"b": 5}', '{"b": null}', '{"b": []}',
                '{"b": {}}', '{"b": {"generation": 1}}', '{"b": {"seq": 1}}',
                '{"b": {"generation": "1", "seq": 1}}', '{"b": {"generation": 1, "seq": 1.0}}',
                '{"b": {"generation": true, "seq": 1}}', '{"b": {"generation": -1, "seq": 1}}',
                '{"b": {"generation": 18446744073709551616, "seq": 1}}', '{"b": {"generation": 1, "seq": 1e308}}',
                '{"b": {"generation": NaN, "seq": 1}}', '{"b": {"generation": Infinity, "seq": 1}}',
                '{"b": {"generation": 1, "seq": ' + "9" * 5000 + '}}', '{"b": {"generation": [[[[1]]]], "seq": 1}}',
                '{"b": {"generation": 1, "seq": 2}, "zz": 7}', '{"b": {"generation": 1, "seq": 2}',
                "\x00\xff\xfe binary", "\xef\xbb\xbf{}x",
                "[" * 100_000, '{"b": ' + "[" * 100_000 + "]" * 100_000 + "}"]


@pytest.mark.parametrize("text", WRONG_SHAPES)
def test_floors_of_the_wrong_shape_are_absent_with_one_warning(cfg, capsys, text):
    path = state.replay_path(cfg)
    os.makedirs(cfg.state_dir, exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    li = _listener(cfg, 1.0)
    assert li.receiver.floors == {}
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hb-replay.json" in err and "Traceback" not in err, err
    _hear(li, 3, [1], 1.0)                  # and it runs, and writes a good file again
    assert floors.load_floors(path, {"b": {}})["b"][0] == 3


def test_one_wake_reads_every_queued_datagram_and_stops(cfg):
    import socket
    enc = beat_of_b
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.bind(("127.0.0.2", 0))
        for seq in (1, 2, 3):
            tx.sendto(enc(STANDBY, seq), rx.getsockname())
        tx.sendto(b"", rx.getsockname())            # reads as "nothing queued": left for the next wake
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx], FakeWorker(STANDBY), clock=lambda: 5.0)
        assert li._receive([rx.fileno()], 5.0) is True     # b is new
        assert li.receiver.windows["b", "lo"].top == 3 and li.peers["b"].last == 5.0
        li.step(5.0)
        assert rx.recvfrom(10)[0] == b""
        tx.sendto(enc(STANDBY, 4), rx.getsockname())
        assert li._receive([rx.fileno()], 5.0) is False    # routine: nothing changed
        assert li.receiver.windows["b", "lo"].top == 4


def test_an_oversized_datagram_is_logged_with_its_real_size_once(cfg, capsys):
    rx, tx = _pair()
    with rx, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx], FakeWorker(STANDBY), clock=lambda: 5.0)
        for _ in range(3):
            tx.sendto(b"x" * 65000, rx.getsockname())
        tx.sendto(beat_of_b(STANDBY, 1), rx.getsockname())
        assert li._receive([rx.fileno()], 5.0) is True     # the beat behind them is heard
        assert li.quiet_until == 5.0                        # no gathering after a bad one
    err = capsys.readouterr().err
    assert err.count("from 127.0.0.2: oversized datagram (65000 bytes)") == 1, err


def test_a_flooded_socket_does_not_keep_the_loop_from_the_others(cfg, capsys):
    flooded, tx = _pair()
    rx, _tx = _pair()
    _tx.close()
    with flooded, rx, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [flooded, rx], FakeWorker(STANDBY), clock=lambda: 5.0)
        for _ in range(listener.READ_AT_ONCE + 10):
            tx.sendto(b"garbage", flooded.getsockname())
        tx.sendto(beat_of_b(STANDBY, 1), rx.getsockname())
        li._receive([flooded.fileno(), rx.fileno()], 5.0)
        assert "b" in li.peers                              # read in the same wake
        assert sockets.queued(flooded)                       # the rest: later
        # a full read and not one good beat: left unread for a while, the others read meanwhile
        assert li.paused == {flooded.fileno(): 5.0 + listener.PAUSE}
        tx.sendto(beat_of_b(ACTIVE, 2), rx.getsockname())
        li._receive([], 5.0 + listener.PAUSE / 2)
        assert li.peers["b"].state == ACTIVE and sockets.queued(flooded)
        li._receive([], 5.0 + listener.PAUSE)
        assert not sockets.queued(flooded)
    assert capsys.readouterr().err.count("a flood of bad datagrams to 127.0.0.1") == 1


def test_a_full_read_with_a_good_beat_in_it_is_no_flood(cfg):
    rx, tx = _pair()
    with rx, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx], FakeWorker(STANDBY), clock=lambda: 5.0)
        tx.sendto(beat_of_b(STANDBY, 1), rx.getsockname())
        for _ in range(listener.READ_AT_ONCE):
            tx.sendto(b"garbage", rx.getsockname())
        li._receive([rx.fileno()], 5.0)
        assert li.paused == {} and "b" in li.peers


@pytest.mark.parametrize("family, me, peers, strangers", [
    (socket.AF_INET, "127.0.0.1", ["127.0.0.2", "127.0.0.4"], ["127.0.0.3", "127.0.0.5"]),
    (socket.AF_INET6, "::1", ["::2", "::1"], []),
    (socket.AF_INET6, "::1", ["::2", "::3"], ["::1"]),
], ids=["v4", "v6-peer", "v6-stranger"])
def test_the_kernel_queues_only_the_peers_datagrams(family, me, peers, strangers):
    with socket.socket(family, socket.SOCK_DGRAM) as rx:
        sockets.only_from(rx, peers)
        rx.bind((me, 0))
        rx.setblocking(False)
        for source in [a for a in peers if family == socket.AF_INET or a == "::1"] + strangers:
            with socket.socket(family, socket.SOCK_DGRAM) as tx:
                tx.bind((source, 0))
                tx.sendto(source.encode(), rx.getsockname()[:2])
        got = []
        while sockets.queued(rx):
            got.append(rx.recv(100).decode())
    assert got == [a for a in peers if family == socket.AF_INET or a == "::1"]


def test_too_many_peers_for_the_filter_leave_the_socket_unfiltered():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx:
        sockets.only_from(rx, [f"fd00::{i}" for i in range(1, 40)])      # no struct.error
        rx.bind(("::1", 0))
        rx.setblocking(False)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"x", rx.getsockname()[:2])
        assert rx.recv(10) == b"x"


def test_arrival_is_the_kernel_stamp_on_the_monotonic_clock_clamped_to_the_read_window():
    # stamped 0.6 s before the wall clock was read: 0.6 s before now
    assert listener.arrival((100, 400_000_000), 50.0, 101.0, 40.0) == pytest.approx(49.4)
    # the wall clock stepped forward an hour since: not before the previous read
    assert listener.arrival((100, 0), 50.0, 3700.0, 49.9) == 49.9
    # stepped back: not in the future
    assert listener.arrival((100, 0), 50.0, 90.0, 49.9) == 50.0


@pytest.fixture(scope="module")
def kernel_stamps():
    """Datagrams stamped as they arrive, from the first one on.

    The kernel turns stamping on in deferred work after the first socket asks
    for it; until then a stamp is taken when the datagram is read.  A socket
    asking for it, kept open, and a datagram seen stamped early: then it is on.
    """
    import socket
    import time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, sockets.SO_TIMESTAMPNS, 1)
    for _ in range(200):
        s.sendto(b"x", s.getsockname())
        time.sleep(0.01)
        ancillary = s.recvmsg(16, sockets.ANCILLARY)[1]
        sec, ns = sockets.TIMESPEC.unpack(ancillary[0][2])
        if time.time() - (sec + ns * 1e-9) >= 0.009:
            break
    yield
    s.close()


def _pair():
    import socket
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.2", 0))
    return rx, tx


def test_a_beat_read_late_counts_from_when_it_arrived(cfg, kernel_stamps):
    import time
    rx, tx = _pair()
    with rx, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx], FakeWorker(STANDBY))
        tx.sendto(beat_of_b(STANDBY, 1), rx.getsockname())
        time.sleep(0.07)
        now = time.monotonic()
        assert li._receive([], now) is True        # not woken by it: found queued all the same
        heard = li.paths["b", "lo"]
        assert heard == li.peers["b"].last and now - 0.5 < heard <= now - 0.07
        # its deadline runs from the arrival: a late read does not buy the peer time
        li.next_look = now + 10
        li._timeout(now)
        assert li.wake == pytest.approx(heard + cfg.heartbeat.deadtime)


def test_heartbeats_gather_only_while_good_ones_flow(cfg):
    import time
    rx, tx = _pair()
    with rx, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx], FakeWorker(STANDBY))
        assert li.gather == listener.GATHER        # interval 20 ms, deadtime 120 ms
        now = time.monotonic()
        li._receive([], now)
        assert li.quiet_until == now            # nothing read: the next datagram wakes us
        enc = beat_of_b
        tx.sendto(enc(STANDBY, 1), rx.getsockname())
        li._receive([rx.fileno()], now)
        assert li.quiet_until == now + listener.GATHER
        tx.sendto(enc(STANDBY, 2), rx.getsockname())
        tx.sendto(beat_of_b(STANDBY, 3, key=b"x" * 32), rx.getsockname())   # wrong key
        li._receive([], now)
        assert li.quiet_until == now and li.receiver.windows["b", "lo"].top == 2


def test_no_gathering_without_kernel_stamps_or_when_beats_are_slower(cfg, tmp_path):
    class NoStamps:
        def fileno(self):
            return 99

        def setsockopt(self, *args):
            raise OSError(92, "Protocol not available")
    assert hbnet.Listener(cfg, cfg.node("a"), KEY, [NoStamps()], FakeWorker(STANDBY)).gather == 0
    slow = hb_config(tmp_path, "interval = 100ms")
    assert hbnet.Listener(slow, slow.node("a"), KEY, [], FakeWorker(STANDBY)).gather == 0


def test_beats_read_from_several_sockets_are_heard_in_arrival_order(cfg, kernel_stamps):
    import time
    rx1, tx = _pair()
    rx2, _tx = _pair()
    _tx.close()
    with rx1, rx2, tx:
        li = hbnet.Listener(cfg, cfg.node("a"), KEY, [rx1, rx2], FakeWorker(STANDBY))
        enc = beat_of_b
        tx.sendto(enc(STANDBY, 1), rx2.getsockname())
        time.sleep(0.01)
        tx.sendto(enc(ACTIVE, 2), rx1.getsockname())    # read first (rx1 comes first), arrived last
        li._receive([], time.monotonic())
        assert li.peers["b"].state == ACTIVE


def test_each_beat_is_the_datagram_encode_makes_with_the_role_of_that_beat(tmp_path):
    import socket
    from lvskit import heartbeat
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.2", 0))
        rx.settimeout(5)
        cfg = config.parse(f"[global]\nstate_dir = {tmp_path}/s\nrun_dir = {tmp_path}/r\n"
                           f"[heartbeat]\nkey_file = /k\nvip_interface = lo\nvips = 127.0.0.99/32\n"
                           f"port = {rx.getsockname()[1]}\n"
                           "[node a]\npriority = 200\npath.lo = 127.0.0.1\n[node b]\npath.lo = 127.0.0.2\n",
                           "t.ini")
        sender = hbnet.Sender(cfg, cfg.node("a"), KEY, 7)
        # a change, past a batch of beats signed ahead, and a change back
        roles = [STANDBY] * 3 + [ACTIVE] * (sender_module.AHEAD + 2) + [STANDBY]
        for role in roles:
            sender.send(role)
        for seq, role in enumerate(roles, 1):
            assert rx.recvfrom(512)[0] == heartbeat.encode(heartbeat.Beat("a", role, 200, "lo", 7, seq), KEY)


def test_send_loop_advertises_a_role_change_at_the_next_beat(cfg):
    rolefile.write_role(cfg, STANDBY)

    class Recorder:
        def __init__(self):
            self.roles = []

        def send(self, role):
            self.roles.append(role)
            if len(self.roles) == 3:        # takeover's worker, between two beats
                rolefile.write_role(cfg, ACTIVE)

    r = Recorder()
    hbnet.send_loop(cfg, r, 0.001, count=6)
    assert r.roles == [STANDBY] * 3 + [ACTIVE] * 3


class VirtualTime:
    """time.monotonic and time.sleep for sender's loop: a sleep moves the clock, at once and exactly."""

    def __init__(self):
        self.now, self.events = 100.0, []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


class Pings:
    """An sdnotify.Notifier's loop-facing half, recording what it is told and when."""

    def __init__(self, clock, period):
        self.clock, self.period = clock, period

    def ready(self, status):
        self.clock.events.append(("ready", self.clock.now))
        return self.clock.now + self.period

    def ping(self, now):
        self.clock.events.append(("ping", now))
        return now + self.period


@pytest.mark.parametrize("interval, period", [(0.02, 1.0), (0.01, 0.05), (5.0, 1.0), (0.5, 0.5)])
def test_send_loop_is_ready_after_the_first_beat_and_pings_from_the_loop_at_its_period(
        cfg, monkeypatch, interval, period):
    """READY=1 once a beat is out; then a ping every period at most, and not much less (a
    ping goes out at the last beat before it is due), even with beats further apart than that."""
    clock = VirtualTime()
    monkeypatch.setattr(sender_module, "time", clock)

    class Sender:
        def send(self, role):
            clock.events.append(("beat", clock.now))

    count = round(10 / interval)
    hbnet.send_loop(cfg, Sender(), interval, count=count, notify=Pings(clock, period), status="x")
    kinds = [k for k, _ in clock.events]
    assert kinds[:2] == ["beat", "ready"] and kinds.count("ready") == 1
    beats = [t for k, t in clock.events if k == "beat"]
    assert beats == pytest.approx([100.0 + i * interval for i in range(count)])     # on time still
    alive = [t for k, t in clock.events if k in ("ready", "ping")]
    gaps = [b - a for a, b in zip(alive, alive[1:])]
    assert len(gaps) >= 10 / period - 2
    assert all(max(period - interval, 0) - 1e-9 <= g <= period + 1e-9 for g in gaps), gaps


def test_send_loop_without_systemd_never_pings(cfg, monkeypatch):
    clock = VirtualTime()
    monkeypatch.setattr(sender_module, "time", clock)
    sent = []

    class Sender:
        def send(self, role):
            sent.append(clock.now)
    from lvskit import sdnotify
    hbnet.send_loop(cfg, Sender(), 0.5, count=5, notify=sdnotify.Notifier({"WATCHDOG_USEC": "1"}))
    assert sent == [100.0, 100.5, 101.0, 101.5, 102.0]


# --- role transitions: what is sent to the worker, and the one log line each -------------

@pytest.fixture
def said(monkeypatch):
    """The log lines hb-listen writes, in order."""
    lines = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(listener.log, level, lines.append)
    return lines


def _node(cfg, me, role):
    """hb-listen of node me (a: priority 200, b: 100), its worker saying role, the role file too."""
    rolefile.write_role(cfg, role)
    worker = FakeWorker(role)
    return hbnet.Listener(cfg, cfg.node(me), KEY, [], worker, clock=lambda: 10.0), worker


def _answers(cfg, li, role):
    """The worker did its command (it writes the role file first) and answers."""
    rolefile.write_role(cfg, role)
    li.worker.answers.append((True, role))
    li._answer()


def _beat(name, role, seq, generation=1):
    from lvskit.heartbeat import Beat
    return Beat(name, role, 200 if name == "a" else 100, "lo", generation, seq)


@pytest.mark.parametrize("generation, why", [
    (2, "failback, peer a (priority 200) took the VIPs"),      # restarted, took the VIPs on hearing us
    (1, "split brain, peer a (priority 200) was active too"),  # the same run: it took them unheard
])
def test_a_peer_back_active_is_a_split_brain_only_if_it_never_stopped(cfg, said, generation, why):
    li, worker = _node(cfg, "b", ACTIVE)
    li.heard(_beat("a", STANDBY, 1), 8.0)
    li.step(8.0)
    assert worker.sent == []
    li.heard(_beat("a", ACTIVE, 2, generation), 10.0)      # silent for 2 s, back active
    li.step(10.0)
    assert worker.sent[-1] == "release"
    _answers(cfg, li, STANDBY)
    assert said[-1] == f"now standby: {why}"


def test_failback_at_the_spare_no_announcement_then_one_line(cfg, said):
    li, worker = _node(cfg, "b", ACTIVE)
    li.heard(_beat("a", STANDBY, 1), 10.0)      # the director back after a reboot
    li.step(10.0)
    assert worker.sent == []        # an announcement now would race the director's own
    li.heard(_beat("a", ACTIVE, 2), 10.02)      # it took the VIPs
    li.step(10.02)
    assert worker.sent == ["release"]
    _answers(cfg, li, STANDBY)
    transitions = [line for line in said if line.startswith("now ")]
    assert transitions == ["now standby: failback, peer a (priority 200) took the VIPs"], said
    assert not any("split brain" in line for line in said), said


def test_failback_at_the_director_is_one_line_and_no_split_brain(cfg, said):
    li, worker = _node(cfg, "a", STANDBY)
    li.heard(_beat("b", ACTIVE, 1), 10.0)
    li.step(10.0)
    assert worker.sent == ["acquire b"]        # from b, alive: the worker forwards to it a while
    _answers(cfg, li, ACTIVE)
    for seq, t in enumerate((10.02, 10.04, 10.06), 2):     # b not let go yet
        li.heard(_beat("b", ACTIVE, seq), t)
        li.step(t)
    assert worker.sent == ["acquire b"]        # our acquire just announced: no second one yet
    li.heard(_beat("b", STANDBY, 5), 10.08)   # b let go: we announce again, quietly
    li.step(10.08)
    assert worker.sent == ["acquire b", "announce"]
    _answers(cfg, li, ACTIVE)
    transitions = [line for line in said if line.startswith("now ")]
    assert transitions == ["now active: failback, peer b (priority 100) was active"], said
    assert not any("split brain" in line for line in said), said


def test_a_healed_split_brain_is_said_once_on_both_sides(cfg, said):
    a, worker_a = _node(cfg, "a", ACTIVE)
    for seq in range(1, 61):        # b, active, heard for the first time, for 1.2 s
        t = 10.0 + (seq - 1) * 0.02
        a.heard(_beat("b", ACTIVE, seq), t)
        a.step(t)
        if worker_a.pending:
            _answers(cfg, a, ACTIVE)
    assert worker_a.sent == ["announce", "announce"]      # again after a second
    assert said == ["peer b alive (active, priority 100)",
                    "split brain: peer b (priority 100) active too; staying active, announcing again"]
    said.clear()
    b, worker_b = _node(cfg, "b", ACTIVE)
    b.heard(_beat("a", ACTIVE, 1), 10.0)
    b.step(10.0)
    assert worker_b.sent == ["release"]
    _answers(cfg, b, STANDBY)
    assert said[-1] == "now standby: split brain, peer a (priority 200) was active too"


def test_a_takeover_says_who_went_silent(cfg, said):
    li, worker = _node(cfg, "b", STANDBY)
    li.heard(_beat("a", ACTIVE, 1), 10.0)
    li.step(10.0)
    li.step(10.0 + cfg.heartbeat.deadtime + 0.01)
    assert worker.sent == ["acquire"]
    assert not any(line.startswith("now ") for line in said)     # not before the VIPs are held
    _answers(cfg, li, ACTIVE)
    assert said[-1] == "now active: peer a silent for 130 ms (was active)"


def test_systemd_status_follows_the_role_by_the_worker_or_by_hand(cfg, said):
    class Status:
        def __init__(self):
            self.said = []

        def status(self, text):
            self.said.append(text)
    li, worker = _node(cfg, "b", STANDBY)
    li.notify = Status()
    assert li.status() == f"b: listening on port {cfg.heartbeat.port}, role standby"
    li.step(10.0 + cfg.heartbeat.deadtime)      # a never heard: b takes the VIPs
    assert worker.sent == ["acquire"] and li.notify.said == []
    _answers(cfg, li, ACTIVE)
    assert li.notify.said == [f"b: listening on port {cfg.heartbeat.port}, role active"]
    rolefile.write_role(cfg, HELD)              # takeover --release by hand
    li.step(11.0)
    assert li.notify.said[-1].endswith("role held") and len(li.notify.said) == 2


def test_a_handover_by_hand_is_said_on_both_sides(cfg, said):
    a, _ = _node(cfg, "a", ACTIVE)
    rolefile.write_role(cfg, HELD)                          # takeover --release
    a.step(10.0)
    assert said == ["now held: takeover --release by hand"]
    said.clear()
    b, worker = _node(cfg, "b", STANDBY)
    b.heard(_beat("a", HELD, 1), 10.0)
    b.step(10.0)
    assert worker.sent == ["acquire a"]
    _answers(cfg, b, ACTIVE)
    assert said[-1] == "now active: handover, peer a (priority 200) held"


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_realtime_is_for_the_loop_only_its_children_start_normal():
    import subprocess
    import sys
    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib")
    child = ("import os; s = os.sched_getscheduler(0); "
             "lck = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmLck')][0]; "
             "print(s, os.sched_getparam(0).sched_priority, lck)")
    code = ("import os, subprocess, sys; sys.path.insert(0, sys.argv[1]); from lvskit import hbnet; "
            "hbnet.realtime(); print(os.sched_getscheduler(0), flush=True); "
            "subprocess.run([sys.executable, '-c', sys.argv[2]])")
    out = subprocess.run([sys.executable, "-c", code, lib, child], capture_output=True, text=True, timeout=30)
    parent, policy, priority, locked = out.stdout.split()
    assert int(parent) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, out
    assert (int(policy), int(priority), locked) == (os.SCHED_OTHER, 0, "0"), out


@pytest.mark.parametrize("generation, announce", [(1, ["announce"]), (2, [])])
def test_a_peer_back_as_standby_is_announced_to_only_if_it_never_restarted(cfg, generation, announce):
    """The same run: it may have taken the VIPs unheard (a partition) and let go.
    Restarted (a reboot): it holds nothing, and is about to take them back."""
    li, worker = _node(cfg, "a", ACTIVE)
    li.heard(_beat("b", STANDBY, 1), 8.0)
    li.step(8.0)
    li.heard(_beat("b", STANDBY, 2, generation), 10.0)
    li.step(10.0)
    assert worker.sent == announce
