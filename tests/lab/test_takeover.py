"""Takeover on a real IPVS kernel (the guest): the spare's table serves, synced connections survive,
and the ghost of a connection whose close died with the director does not steer the spare's wlc.

Director and spare (tests/netns/hbtopo.py) with one direct-routing real
server r1 running a TCP line echo on VIP:80.  ipvs-sync runs on both
directors through takeover (the standby loads the table too), and the IPVS
connection-sync daemon is master on the active one, backup on the spare.
Longer timings than on the host: the guest emulates its CPUs, far slower.
"""
import ipaddress
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netns"))
from hbtopo import FRONT, HOST, PY, VIP, Pair  # noqa: E402

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


# A line echo that says who answers: "r1 line".
NAMED_ECHO = ECHO.replace("f.write(line)", "f.write(sys.argv[1] + ' ' + line)").replace(
    "import socket, threading", "import socket, sys, threading")

# One connection: prints its local port, then sends each stdin line and prints the answer;
# stdin's end closes the connection (FIN) and the program says CLOSED.
HELD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=15)
print(s.getsockname()[1], flush=True)
f = s.makefile("rw")
for line in sys.stdin:
    try:
        f.write(line); f.flush()
        print(f.readline().strip() or "EOF", flush=True)
    except OSError as e:
        print("ERR", e, flush=True)
s.close()
print("CLOSED", flush=True)
"""


def conn_lines(p, node, port):
    """NODE's ipvsadm -Lnc lines of the client's connection from PORT."""
    return [line for line in ipvsadm(p, node, "-Lnc").splitlines() if f":{port} " in line]


def test_ghost_of_a_connection_closed_as_the_director_died_does_not_steer_the_spare(tmp_path):
    """The director syncs in batches (at the latest every 2 s): a connection closed just
    before it dies stays ESTABLISHED on the spare, a ghost, which wlc counts as 256
    connections.  After the takeover the ghost and a live inherited connection count
    as inactive: new connections are shared by the weights (without that, all went to
    the third server), and the live one still gets its answers."""
    extra = "sync_interface = eth1\nsyncid = 7\n"
    with Pair("hbg", str(tmp_path), timings=TIMINGS, extra=extra, reals=3, scheduler="wlc") as p:
        echoes = []
        for r in p.reals:
            echoes.append(p.popen(r, [PY, "-c", NAMED_ECHO, r], stdout=subprocess.PIPE, text=True))
            assert echoes[-1].stdout.readline().strip() == "READY"
        p.start("director")
        p.start("spare")
        assert p.wait(lambda: p.holds_vip("director"), 90, 0.5), p.log("director")
        assert p.wait(lambda: "backup" in ipvsadm(p, "spare", "-Ln", "--daemon"), 60, 0.5), p.log("spare")
        assert p.wait(lambda: "master" in ipvsadm(p, "director", "-Ln", "--daemon"), 30, 0.5)

        def held():
            c = p.popen("client", [PY, "-c", HELD, VIP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True, bufsize=1)
            port = int(c.stdout.readline())
            for n in range(1, 6):       # a few packets, so the director syncs it as ESTABLISHED
                c.stdin.write(f"{n}\n")
                c.stdin.flush()
                assert c.stdout.readline().split()[-1] == str(n)
            return c, port
        live, live_port = held()
        ghost, ghost_port = held()
        for port in (live_port, ghost_port):
            assert p.wait(lambda: "ESTABLISHED" in "".join(conn_lines(p, "spare", port)), 30, 0.2), \
                ipvsadm(p, "spare", "-Lnc")
        # the ghost: closed, the director saw the close, and it dies before its next batch
        # (its batch holding the close is at most 2 s old when sent)
        ghost.stdin.close()
        assert ghost.stdout.readline().strip() == "CLOSED"
        assert p.wait(lambda: "ESTABLISHED" not in "".join(conn_lines(p, "director", ghost_port)), 30, 0.02)
        p.kill("director")
        ghost_line = conn_lines(p, "spare", ghost_port)
        assert "ESTABLISHED" in "".join(ghost_line), f"no ghost to test with: {ghost_line}"

        assert p.wait(lambda: p.holds_vip("spare"), 60, 0.5), p.log("spare")
        assert p.wait(lambda: "master" in ipvsadm(p, "spare", "-Ln", "--daemon"), 30, 0.5), p.log("spare")
        assert "inherited established connections count as inactive" in p.log("spare"), \
            p.log("spare") + p.run("spare", ["cat", "/proc/net/ip_vs_conn_sync"]).stdout
        # the ghost is still in the table, and counts as inactive: no server has an active connection
        assert "ESTABLISHED" in "".join(conn_lines(p, "spare", ghost_port))
        table = ipvsadm(p, "spare", "-Ln")
        dests = [line.split() for line in table.splitlines() if line.strip().startswith("->")
                 and line.split()[1].endswith(":80") and line.split()[1] != "RemoteAddress:Port"]
        assert len(dests) == 3 and all(d[4] == "0" for d in dests), table      # ActiveConn

        # New connections follow the (equal) weights.  The live connection and the ghost are on
        # two servers: counted active, they would send every new one to the third.
        got = []
        for n in range(21):
            r = p.run("client", [PY, "-c", HELD, VIP], input=f"new{n}\n", timeout=60)
            got.append(r.stdout.split()[1] if len(r.stdout.split()) > 2 else r.stderr.strip()[-80:])
        assert min(got.count(r) for r in p.reals) >= 5, got
        # and the live inherited connection still gets its answers
        live.stdin.write("after\n")
        live.stdin.flush()
        assert live.stdout.readline().strip().split()[-1] == "after", p.log("spare")
        live.stdin.close()
        live.wait(10)
        for e in echoes:
            e.kill()


def kernel_conn(p, node, port):
    """NODE's /proc/net/ip_vs_conn lines of the client's connection from PORT (ports in hex)."""
    table = p.run(node, ["cat", "/proc/net/ip_vs_conn"]).stdout
    return [line for line in table.splitlines()[1:] if line.split()[2] == f"{port:04X}"]


# The client's ACK of the handshake held back: the connection is established at the client,
# half-open (SYN_RECV) at the real server and in the spare's IPVS entry.
HOLD_ACK = f"""table ip hold_ack {{
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {VIP} tcp dport 80 tcp flags == ack drop
  }}
}}
"""


@pytest.mark.parametrize("grace", [True, False], ids=["grace", "no-grace"])
@pytest.mark.parametrize("straddle", ["established", "handshake"])
def test_a_connection_the_failback_holder_was_never_told_of_is_not_reset(tmp_path, grace, straddle):
    """A connection opened through the spare and still unknown to the director when it takes
    the VIPs back finds no IPVS entry there: established (two packets, SYN and ACK: the sync
    daemon sends an entry at its third), or still in its handshake (the client's ACK held back
    until the switch: a SYN_RECV entry is never sent).  With the handover grace the director
    forwards its packets to the spare, which keeps the VIP on lo without ARP, and the same real
    server answers; the spare, still sync master, then tells the director, which serves it alone
    after the grace.  Without it (handover_grace = 0) the director's own TCP resets it."""
    extra = f"sync_interface = eth1\nsyncid = 7\nhandover_grace = {'20s' if grace else '0'}\n"
    # initdead short: the spare starts alone and takes the VIPs; the director comes later (failback)
    timings = TIMINGS.replace("initdead = 20s", "initdead = 4s")
    with Pair(f"hbh{int(grace)}{straddle[0]}", str(tmp_path), timings=timings, extra=extra, reals=2) as p:
        echoes = []
        for r in p.reals:
            echoes.append(p.popen(r, [PY, "-c", NAMED_ECHO, r], stdout=subprocess.PIPE, text=True))
            assert echoes[-1].stdout.readline().strip() == "READY"
        p.start("spare")
        assert p.wait(lambda: p.holds_vip("spare"), 90, 0.5), p.log("spare")
        assert p.wait(lambda: "master" in ipvsadm(p, "spare", "-Ln", "--daemon"), 60, 0.5), p.log("spare")
        assert p.wait(lambda: p.client_neigh_mac() in (None, p.mac("spare")), 30, 0.5)
        if straddle == "handshake":
            held = p.run("client", ["nft", "-f", "-"], input=HOLD_ACK)
            assert held.returncode == 0, held.stderr
        client = p.popen("client", [PY, "-c", HELD, VIP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, bufsize=1)
        port = int(client.stdout.readline())        # connected (at the client), through the spare
        entry = kernel_conn(p, "spare", port)
        state = "ESTABLISHED" if straddle == "established" else "SYN_RECV"
        assert entry and entry[0].split()[7] == state, entry
        dest = str(ipaddress.ip_address(int(entry[0].split()[5], 16)))
        real = next(r for r in p.reals if dest == f"{FRONT}{HOST[r]}")      # the real server it names

        p.start("director")                         # it outranks the spare: failback
        assert p.wait(lambda: p.holds_vip("director"), 90, 0.5), p.log("director")
        assert p.wait(lambda: not p.holds_vip("spare"), 30, 0.2), p.log("spare")
        assert p.wait(lambda: p.client_neigh_mac() == p.mac("director"), 30, 0.2)
        # the straddle: the director holds the VIP and has no entry for the connection
        assert kernel_conn(p, "director", port) == [], p.run("director", ["cat", "/proc/net/ip_vs_conn"]).stdout
        if grace:
            lo = p.run("spare", ["ip", "-o", "addr", "show", "dev", "lo"]).stdout
            assert f"{VIP}/32" in lo and "lo:lvskit" in lo, lo + p.log("spare")   # local, on lo, for the grace
            assert "dup to" in p.run("director", ["nft", "list", "table", "ip", "lvskit_grace"]).stdout
        if straddle == "handshake":
            assert kernel_conn(p, "spare", port)[0].split()[7] == "SYN_RECV"
            assert p.run("client", ["nft", "delete", "table", "ip", "hold_ack"]).returncode == 0

        client.stdin.write("after\n")
        client.stdin.flush()
        answer = client.stdout.readline().strip()
        if not grace:
            assert answer.startswith("ERR") and "reset" in answer, answer
            client.kill()
            for e in echoes:
                e.kill()
            return
        assert answer == f"{real} after", (answer, p.log("director"), p.log("spare"))
        # the spare, still sync master, told the director: after the grace it serves the connection alone
        assert p.wait(lambda: kernel_conn(p, "director", port), 30, 0.5), p.log("spare")
        assert p.wait(lambda: "handover grace ended" in p.log("director")
                      and "handover grace ended" in p.log("spare"), 60, 0.5), p.log("director") + p.log("spare")
        assert p.run("director", ["nft", "list", "table", "ip", "lvskit_grace"]).returncode != 0
        assert p.run("spare", ["nft", "list", "table", "arp", "lvskit_grace"]).returncode != 0
        assert f"{VIP}/32" not in p.run("spare", ["ip", "-o", "addr", "show", "dev", "lo"]).stdout
        assert "master" not in ipvsadm(p, "spare", "-Ln", "--daemon")
        assert "backup" not in ipvsadm(p, "director", "-Ln", "--daemon")
        client.stdin.write("later\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == f"{real} later", p.log("director")
        client.stdin.close()
        assert client.stdout.readline().strip() == "CLOSED"
        for e in echoes:
            e.kill()
