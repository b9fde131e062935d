"""Captured heartbeats replayed after the spare's hb-listen restarts: refused, and the spare keeps the VIP.

Real processes and real datagrams: the director's beats are captured off the
spare's interfaces (AF_PACKET), the director dies, the spare takes over, its
hb-listen is restarted (SIGTERM, or SIGKILL as in a crash), and the capture is
sent again from the director's own addresses at the pace it was sent.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hbtopo import PY, VIP, Pair  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")

# Every UDP datagram to port 694 that arrives on this namespace's interfaces for
# SECONDS: printed as JSON [[source, destination, payload hex, arrival], ...].
CAPTURE = r"""
import json, socket, struct, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(0.05)
print("capturing", flush=True)
end, out = time.monotonic() + seconds, []
while time.monotonic() < end:
    try:
        packet, where = s.recvfrom(2048)
    except socket.timeout:
        continue
    if where[2] != socket.PACKET_HOST or packet[9] != 17:
        continue
    at = (packet[0] & 15) * 4
    if struct.unpack_from("!H", packet, at + 2)[0] == 694:
        out.append([socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]),
                    packet[at + 8:].hex(), time.monotonic()])
print(json.dumps(out), flush=True)
"""

# Sends a capture again, each datagram from its own source address, at the pace it came.
REPLAY = r"""
import json, socket, sys, time
capture = json.load(open(sys.argv[1]))
socks = {}
start, first = time.monotonic(), capture[0][3]
for source, dest, payload, at in capture:
    if source not in socks:
        socks[source] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks[source].bind((source, 0))
    delay = start + (at - first) - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    socks[source].sendto(bytes.fromhex(payload), (dest, 694))
print(len(capture))
"""


@pytest.fixture
def pair(tmp_path):
    p = Pair(f"hbr{os.getpid() % 10000}", str(tmp_path))
    yield p
    p.close()


def up(p):
    p.start("director")
    p.start("spare")
    assert p.wait(lambda: p.holds_vip("director") and p.role("spare") == 7, 10), p.log("director")
    assert p.wait(lambda: "peer director alive" in p.log("spare"), 10), p.log("spare")


def restart_listener(p, how):
    """The spare's hb-listen ended by signal how and started again; the log's length before the start."""
    listener = p.procs["spare"][0]          # `ip netns exec` execs: this is hb-listen itself
    listener.send_signal(how)
    listener.wait(timeout=10)
    mark = len(p.log("spare"))
    err = open(os.path.join(p.dir, "spare.log"), "a")
    p.procs["spare"][0] = p.popen("spare", p.tool("spare", "hb-listen", "-v"), stdout=err, stderr=err,
                                  env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    assert p.wait(lambda: "spare: listening on port" in p.log("spare")[mark:], 10), p.log("spare")[mark:]
    return mark


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_capture_replayed_after_a_listener_restart_leaves_the_spare_active(pair, how):
    p = pair
    up(p)
    capture = p.popen("spare", [PY, "-c", CAPTURE, "2.0"], stdout=subprocess.PIPE, text=True)
    assert capture.stdout.readline().strip() == "capturing"
    beats = json.loads(capture.communicate(timeout=20)[0])
    p.kill("director")
    assert len(beats) >= 100, len(beats)        # 2 s of two paths at 20 ms, less what a loaded host lost
    with open(os.path.join(p.dir, "capture.json"), "w") as f:
        json.dump(beats, f)
    assert p.wait(lambda: p.holds_vip("spare"), 3), p.log("spare")
    mark = restart_listener(p, how)
    # The director's addresses back, its daemons not: the replay comes from where its beats came.
    p.run("director", ["ip", "addr", "del", f"{VIP}/32", "dev", "eth0"])
    p.links("director", "up")
    replay = p.popen("director", [PY, "-c", REPLAY, os.path.join(p.dir, "capture.json")],
                     stdout=subprocess.PIPE, text=True)
    held = []
    while replay.poll() is None:
        held.append(p.holds_vip("spare"))
    assert replay.returncode == 0 and int(replay.stdout.read()) == len(beats)
    after = p.log("spare")[mark:]
    assert all(held) and p.holds_vip("spare"), after
    assert "releasing" not in after and "peer director alive" not in after, after
    # and the replay did reach it: refused, not unheard
    assert p.wait(lambda: "replayed sequence" in p.log("spare")[mark:] or "too old" in p.log("spare")[mark:], 3)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_listener_restart_with_the_director_alive_takes_nothing(pair, how):
    p = pair
    up(p)
    time.sleep(1.0)         # well into the director's numbers: a crash then leaves a reservation behind
    mark = restart_listener(p, how)
    assert p.wait(lambda: "peer director alive" in p.log("spare")[mark:], 5), p.log("spare")[mark:]
    deadline = time.monotonic() + 2.0       # initdead 1 s, and twice that
    while time.monotonic() < deadline:
        assert p.holds_vip("director") and not p.holds_vip("spare")
    assert ": now active" not in p.log("spare")[mark:], p.log("spare")[mark:]
