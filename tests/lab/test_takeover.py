"""Takeover on a real IPVS kernel (the guest): the spare's table serves, synced connections survive.

Director and spare (tests/netns/hbtopo.py) with one direct-routing real
server r1 running a TCP line echo on VIP:80.  ipvs-sync runs on both
directors through takeover (the standby loads the table too), and the IPVS
connection-sync daemon is master on the active one, backup on the spare.
Longer timings than on the host: the guest emulates its CPUs, far slower.
"""
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netns"))
from hbtopo import PY, VIP, Pair  # noqa: E402

TIMINGS = "interval = 200ms\ndeadtime = 3s\nwarntime = 1s\ninitdead = 20s\nrealtime = no\n"

ECHO = r"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(16)
def serve(c):
    f = c.makefile("rw")
    for line in f:
        f.write(line); f.flush()
print("READY", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# One TCP connection to the VIP, kept open: each stdin line is sent, the echo printed.
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=15)
f = s.makefile("rw")
for line in sys.stdin:
    try:
        f.write(line); f.flush()
        print(f.readline().strip() or "EOF", flush=True)
    except OSError as e:
        print("ERR", e, flush=True)
"""


def ipvsadm(p, node, *args):
    return p.run(node, ["ipvsadm"] + list(args)).stdout


@pytest.mark.parametrize("sync", [True, False], ids=["sync-on", "sync-off"])
def test_spare_table_serves_and_synced_connection_survives(tmp_path, sync):
    extra = "sync_interface = eth1\nsyncid = 7\n" if sync else ""
    with Pair(f"hbl{int(sync)}", str(tmp_path), timings=TIMINGS, extra=extra, reals=1) as p:
        echo = p.popen("r1", [PY, "-c", ECHO], stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "READY"
        p.start("director")
        p.start("spare")
        assert p.wait(lambda: p.holds_vip("director"), 90, 0.5), p.log("director")
        # the standby has the table loaded too, and the sync daemons have their roles
        assert p.wait(lambda: f"{VIP}:80" in ipvsadm(p, "spare", "-Ln"), 60, 0.5), p.log("spare")
        assert f"{VIP}:80" in ipvsadm(p, "director", "-Ln")
        if sync:
            assert p.wait(lambda: "backup" in ipvsadm(p, "spare", "-Ln", "--daemon"), 30, 0.5), p.log("spare")
            assert p.wait(lambda: "master" in ipvsadm(p, "director", "-Ln", "--daemon"), 30, 0.5)
        client = p.popen("client", [PY, "-c", CLIENT, VIP], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
        for n in range(1, 6):       # a few packets, so the connection gets synced
            client.stdin.write(f"{n}\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == str(n)
        if sync:
            assert p.wait(lambda: "ESTABLISHED" in ipvsadm(p, "spare", "-Lnc"), 30, 0.5), \
                ipvsadm(p, "spare", "-Lnc")
        p.kill("director")
        assert p.wait(lambda: p.holds_vip("spare"), 60, 0.5), p.log("spare")
        assert p.wait(lambda: p.client_neigh_mac() == p.mac("spare"), 30, 0.5)
        # the spare's table serves new connections
        fresh = p.run("client", [PY, "-c", CLIENT, VIP], input="new\n", timeout=60)
        assert fresh.stdout.strip() == "new", fresh.stderr
        # and the old connection lives on exactly when connection sync is on
        client.stdin.write("after\n")
        client.stdin.flush()
        answer = client.stdout.readline().strip()
        client.kill()
        echo.kill()
        if sync:
            assert answer == "after", p.log("spare")
            assert "master" in ipvsadm(p, "spare", "-Ln", "--daemon")
        else:
            assert answer != "after"
