import os
import stat
import struct

import pytest

from lvskit import heartbeat as hb
from lvskit.errors import Fatal, PERMISSION
from lvskit.heartbeat import ACTIVE, HELD, STANDBY, BadBeat, Beat, Receiver, ReplayWindow

KEY = b"k" * 32
PEERS = {"midas": {"lan": "10.0.0.1", "cross": "10.9.0.1"}}


def beat(seq=1, generation=7, path="lan", state=ACTIVE, name="midas", priority=200):
    return Beat(name, state, priority, path, generation, seq)


def test_round_trip_every_state():
    for state in (ACTIVE, STANDBY, HELD):
        b = beat(state=state, seq=2 ** 63, generation=2 ** 40, priority=65535, path="p" * hb.MAX_NAME,
                 name="n" * hb.MAX_NAME)
        data = hb.encode(b, KEY)
        assert hb.decode(data, KEY) == b and len(data) == hb.MAX_SIZE
    assert hb.decode(hb.encode(beat(path="x", name="y"), KEY), KEY).path == "x"
    for bad in ("", "p" * (hb.MAX_NAME + 1), "cåble"):
        with pytest.raises(ValueError):
            hb.encode(beat(path=bad), KEY)


def test_tampered_bytes_are_rejected_anywhere():
    data = hb.encode(beat(), KEY)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(BadBeat):
            hb.decode(bytes(bad), KEY)


def test_truncated_oversized_and_garbage():
    data = hb.encode(beat(), KEY)
    for n in range(len(data)):
        with pytest.raises(BadBeat):
            hb.decode(data[:n], KEY)
    with pytest.raises(BadBeat, match="oversized"):
        hb.decode(data + b"x" * hb.MAX_SIZE, KEY)
    with pytest.raises(BadBeat):
        hb.decode(os.urandom(90), KEY)


def test_wrong_key():
    with pytest.raises(BadBeat, match="signature"):
        hb.decode(hb.encode(beat(), KEY), b"other key 0123456789")


def test_validly_signed_nonsense_is_rejected_without_crash():
    import hashlib
    import hmac
    head = struct.Struct("!4sBBBBHQQ")
    for fields, names in [((b"LVHB", 9, 1, 3, 5, 1, 1, 1), b"midaslan"),   # version
                          ((b"LVHB", 1, 1, 3, 5, 1, 1, 1), b"midaslan"),   # version 1 (path index)
                          ((b"XXXX", 2, 1, 3, 5, 1, 1, 1), b"midaslan"),   # magic
                          ((b"LVHB", 2, 9, 3, 5, 1, 1, 1), b"midaslan"),   # state
                          ((b"LVHB", 2, 1, 3, 9, 1, 1, 1), b"midaslan"),   # name length
                          ((b"LVHB", 2, 1, 9, 5, 1, 1, 1), b"midaslan"),   # path length
                          ((b"LVHB", 2, 1, 0, 8, 1, 1, 1), b"midaslan"),   # no path
                          ((b"LVHB", 2, 1, 3, 5, 1, 1, 1), b"m\xffdaslan"),   # not ASCII
                          ((b"LVHB", 2, 1, 3, 5, 1, 1, 1), b"midasl\xffn")]:
        body = head.pack(*fields) + names
        with pytest.raises(BadBeat):
            hb.decode(body + hmac.new(KEY, body, hashlib.sha256).digest(), KEY)


def test_receiver_drops_replays_and_old_generations():
    r = Receiver(KEY, PEERS, "estepe")
    assert r.accept(hb.encode(beat(seq=1), KEY), "10.0.0.1").seq == 1
    with pytest.raises(BadBeat, match="replayed"):
        r.accept(hb.encode(beat(seq=1), KEY), "10.0.0.1")
    r.accept(hb.encode(beat(seq=3), KEY), "10.0.0.1")
    r.accept(hb.encode(beat(seq=2), KEY), "10.0.0.1")       # late, inside the window
    with pytest.raises(BadBeat, match="replayed"):
        r.accept(hb.encode(beat(seq=2), KEY), "10.0.0.1")
    # the same numbers on the other path are separate datagrams, not replays
    r.accept(hb.encode(beat(seq=3, path="cross"), KEY), "10.9.0.1")
    # a restart of the sender: new generation, numbers start over
    r.accept(hb.encode(beat(seq=1, generation=8), KEY), "10.0.0.1")
    with pytest.raises(BadBeat, match="old generation"):
        r.accept(hb.encode(beat(seq=100, generation=7), KEY), "10.0.0.1")


def test_window_too_old():
    w = ReplayWindow()
    w.accept(1, 1000)
    with pytest.raises(BadBeat, match="too old"):
        w.accept(1, 1000 - hb.WINDOW)
    w.accept(1, 1000 - hb.WINDOW + 1)
    w.accept(1, 5000)       # a big jump clears the window
    with pytest.raises(BadBeat):
        w.accept(1, 5000)


def test_wrong_peer_wrong_path_wrong_source_and_self():
    r = Receiver(KEY, PEERS, "estepe")
    with pytest.raises(BadBeat, match="unknown peer"):
        r.accept(hb.encode(beat(name="mallory"), KEY), "10.0.0.1")
    with pytest.raises(BadBeat, match="not a peer's path address"):
        r.accept(hb.encode(beat(), KEY), "10.0.0.66")
    with pytest.raises(BadBeat, match="no path"):
        r.accept(hb.encode(beat(path="wifi"), KEY), "10.0.0.1")
    with pytest.raises(BadBeat, match="expected 10.9.0.1"):     # lan's address, cross's name
        r.accept(hb.encode(beat(path="cross"), KEY), "10.0.0.1")
    with pytest.raises(BadBeat, match="this node"):
        r.accept(hb.encode(beat(name="estepe"), KEY), "10.0.0.1")
    # v4-mapped source from a dual-stack socket is the same sender
    assert r.accept(hb.encode(beat(seq=9), KEY), "::ffff:10.0.0.1").seq == 9


def test_rejected_datagram_does_not_move_the_window():
    r = Receiver(KEY, PEERS, "estepe")
    forged = hb.encode(beat(seq=10 ** 6, generation=10 ** 9), b"attacker's key!!")
    with pytest.raises(BadBeat):
        r.accept(forged, "10.0.0.1")
    assert r.accept(hb.encode(beat(seq=1), KEY), "10.0.0.1")


def test_generation_grows_even_when_the_clock_goes_back(tmp_path):
    path = str(tmp_path / "gen.json")
    g1 = hb.next_generation(path, 1_700_000_000)
    g2 = hb.next_generation(path, 1_000)          # clock set back
    assert g2 == g1 + 1
    os.unlink(path)                                 # state deleted: the clock is the floor
    assert hb.next_generation(path, 1_800_000_000) == 1_800_000_000


class _St:
    def __init__(self, uid, mode):
        self.st_uid, self.st_mode = uid, stat.S_IFREG | mode


def test_key_file_refused_unless_root_owned_and_private(tmp_path):
    key = tmp_path / "hb.key"
    key.write_bytes(b"0123456789abcdef0123\n")
    with pytest.raises(Fatal) as e:
        hb.check_key_file(str(key), _St(1000, 0o600))
    assert e.value.code == PERMISSION and "owned by root" in str(e.value)
    for mode in (0o644, 0o604, 0o660, 0o602):
        with pytest.raises(Fatal) as e:
            hb.check_key_file(str(key), _St(0, mode))
        assert e.value.code == PERMISSION
    assert hb.check_key_file(str(key), _St(0, 0o640)) == b"0123456789abcdef0123"
    os.chmod(key, 0o644)
    if os.geteuid() == 0:       # a real file, really world-readable
        with pytest.raises(Fatal) as e:
            hb.check_key_file(str(key))
        assert e.value.code == PERMISSION


def test_strangers_are_dropped_before_the_hmac(monkeypatch):
    r = Receiver(KEY, PEERS, "estepe")
    data = hb.encode(beat(), KEY)
    calls = []
    real = hb.sign
    monkeypatch.setattr(hb, "sign", lambda *a: calls.append(1) or real(*a))
    with pytest.raises(BadBeat, match="not a peer's path address"):
        r.accept(os.urandom(90), "192.0.2.66")
    with pytest.raises(BadBeat, match="not a peer's path address"):
        r.accept(data, "10.0.0.66")
    assert calls == []
    assert r.accept(data, "10.0.0.1") and calls == [1]


# midas, active, priority 200, path lan, generation 7, seq 42, key b"k" * 32: the bytes
# every version 2 sender puts on the wire for that beat (so old and new nodes hear each other).
WIRE = bytes.fromhex("4c5648420201030500c80000000000000007000000000000002a6d696461736c616e"
                     "2ce22578e6d4568cec36cbf3a9693fc9f00cb421cfbb924bc14952cf0b45b6d7")


def test_the_wire_format_is_the_documented_one():
    import hashlib
    import hmac
    # Built from the module docstring's layout by hand, signed by hmac itself.
    body = (b"LVHB" + bytes([2, 1, len("lan"), len("midas")]) + (200).to_bytes(2, "big")
            + (7).to_bytes(8, "big") + (42).to_bytes(8, "big") + b"midas" + b"lan")
    assert WIRE == body + hmac.new(KEY, body, hashlib.sha256).digest()
    assert hb.encode(beat(seq=42), KEY) == WIRE
    assert hb.decode(WIRE, KEY) == beat(seq=42)
    for key in (b"k" * 16, os.urandom(64), os.urandom(65), os.urandom(200)):   # < = > SHA-256's block
        data = hb.encode(beat(), key)
        assert data[-32:] == hmac.new(key, data[:-32], hashlib.sha256).digest()
        assert hb.decode(data, key) == beat()


def test_floors_refuse_every_beat_up_to_them_on_every_path():
    r = Receiver(KEY, PEERS, "estepe", floors={"midas": (7, 500), "nobody": (1, 1)})
    assert r.floors == {"midas": (7, 500)}             # peers not configured are dropped
    for seq, path, source in [(500, "lan", "10.0.0.1"), (1, "lan", "10.0.0.1"), (437, "cross", "10.9.0.1"),
                              (400, "cross", "10.9.0.1")]:    # 400: older than the 64-wide window
        with pytest.raises(BadBeat, match="replayed|too old"):
            r.accept(hb.encode(beat(seq=seq, generation=7, path=path), KEY), source)
    with pytest.raises(BadBeat, match="old generation 6"):
        r.accept(hb.encode(beat(seq=10 ** 6, generation=6), KEY), "10.0.0.1")
    assert r.tops == {}
    assert r.accept(hb.encode(beat(seq=501, generation=7), KEY), "10.0.0.1").seq == 501
    assert r.accept(hb.encode(beat(seq=1, generation=8, path="cross"), KEY), "10.9.0.1").seq == 1
    assert r.tops == {"midas": (8, 1)}
