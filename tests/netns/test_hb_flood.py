"""A garbage flood on one heartbeat path costs the other path no beat.

Director and spare in namespaces with two paths (front: br0, hb: br1).  The
spare runs hb-listen's own loop (listen_sockets, Listener.run, real time as
hb-listen runs it) with a stand-in worker, and counts the beats it accepts by
path and sequence number.  The director runs hb-send for a fixed number of
beats while the client floods the spare's front address, port 694, with
garbage as fast as one process can send: from its own address, or forging
the director's front address (which passes the kernel's source filter and
fills the front path's queue).
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hbtopo import FRONT, HOST, PY, ROOT, Pair  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")

BEATS = 250         # 5 s at 20 ms

# hb-listen's loop, counting what it accepts; it ends when the last beat came on
# path hb, or at SIGTERM.  Prints {path: [seq, ...]} on stdout; logs on stderr.
LISTEN = r"""
import json, os, signal, sys
sys.path.insert(0, os.path.join(sys.argv[1], "lib"))
from lvskit import config, hbnet, log
log.setup("hb-listen", verbose=True)
cfg = config.load(sys.argv[2])
me = cfg.node("spare")
last = int(sys.argv[3])

class Worker:           # takeover's stand-in: never answers, never asked (the spare stays standby)
    role, pending = "standby", None
    def __init__(self):
        self.fd = os.pipe()[0]
    def send(self, command):
        self.pending = command
    def overdue(self):
        return False

heard = {}
class Done(Exception):
    pass

def stop(signum, frame):
    raise Done()

sockets, joins = hbnet.listen_sockets(cfg, me)
hbnet.realtime()
listener = hbnet.Listener(cfg, me, open(cfg.heartbeat.key_file, "rb").read().strip(), sockets, Worker(),
                          joins=joins)
accept = listener.receiver.accept
def counting(data, source):
    beat = accept(data, source)
    heard.setdefault(beat.path, []).append(beat.seq)
    if beat.path == "hb" and beat.seq == last:
        raise Done()
    return beat
listener.receiver.accept = counting
signal.signal(signal.SIGTERM, stop)
print("listening", flush=True)
try:
    listener.run()
except Done:
    pass
print(json.dumps(heard), flush=True)
"""

# Garbage to ADDRESS:694 as fast as one process can, until SIGTERM; prints how many.
# A second argument: the source address to forge (IP_TRANSPARENT: any address).
FLOOD = r"""
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 2:
    s.setsockopt(socket.IPPROTO_IP, 19, 1)
    s.bind((sys.argv[2], 0))
s.setblocking(False)
target, data, sent = (sys.argv[1], 694), b"\x00garbage" * 16, 0
running = True
def stop(signum, frame):
    global running
    running = False
signal.signal(signal.SIGTERM, stop)
print("flooding", flush=True)
while running:
    try:
        s.sendto(data, target)
        sent += 1
    except BlockingIOError:
        pass
print(sent, flush=True)
"""


@pytest.mark.parametrize("forged", [False, True], ids=["stranger", "forged-source"])
def test_a_flood_on_one_path_costs_the_other_path_no_beat(tmp_path, forged):
    with Pair(f"hbf{os.getpid() % 10000}", str(tmp_path)) as p:
        log = open(os.path.join(p.dir, "listen.log"), "w")
        listen = p.popen("spare", [PY, "-c", LISTEN, ROOT, p.config["spare"], str(BEATS)],
                         stdout=subprocess.PIPE, stderr=log, text=True,
                         env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
        flood = None
        try:
            assert listen.stdout.readline().strip() == "listening", p.log("spare")
            source = [FRONT + str(HOST["director"])] if forged else []
            flood = p.popen("client", [PY, "-c", FLOOD, FRONT + str(HOST["spare"])] + source,
                            stdout=subprocess.PIPE, text=True)
            assert flood.stdout.readline().strip() == "flooding"
            send = p.run("director", p.tool("director", "hb-send", "--count", str(BEATS)), timeout=60)
            assert send.returncode == 0, send.stderr
            try:        # it ends at the last beat on path hb; when that never came, at our word
                out = listen.communicate(timeout=5)[0]
            except subprocess.TimeoutExpired:
                listen.send_signal(signal.SIGTERM)
                out = listen.communicate(timeout=10)[0]
            heard = json.loads(out)
        finally:
            for proc in (listen, flood):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        sent = int(flood.communicate(timeout=10)[0])
        with open(os.path.join(p.dir, "listen.log")) as f:
            logged = f.read()
    print(f"flood: {sent} datagrams; front heard {len(heard.get('front', []))}, "
          f"hb heard {len(heard.get('hb', []))} of {BEATS}")
    assert sent > 50_000                            # it was a flood
    assert sorted(heard.get("hb", [])) == list(range(1, BEATS + 1)), logged
    assert "warntime" not in logged, logged
    if not forged:      # the kernel drops it before any queue: the flooded path loses nothing either
        assert sorted(heard.get("front", [])) == list(range(1, BEATS + 1)), logged
