"""lvskit.inherited's messages reach this host's sync-group sockets and never its wire.

Two namespaces joined by a veth pair: in "spare", a socket joined to the IPVS
sync group on eth0 stands where the kernel's backup thread listens, and
count_as_inactive runs there on a connection table of 1000 entries (25
messages, two windows).  The socket must get every message, byte for byte what
inherited.messages makes; the "wire" namespace, listening on the veth's other
end to every frame, must see none of them: a frame sent afterwards over the
same link arrives first (a veth keeps order), so nothing is waited for.
(The kernel's reading of the messages is tested in the lab guest:
tests/lab/test_takeover.py.)
"""
import json
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")
PY = "/usr/bin/python3"

LINE = "TCP 0AC80102 {port:04X} 0AC80164 0050 0AC8010B 0050 ESTABLISHED SYNC       897\n"

# In "spare": the backup daemon's stand-in, then count_as_inactive; prints JSON
# {"said": n, "heard": [hex...], "made": [hex...]}.
SPARE = r"""
import json, socket, struct, sys
sys.path.insert(0, sys.argv[1])
from lvskit import inherited, log
log.setup("test", verbose=True)
ear = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ear.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ear.bind((inherited.GROUP, inherited.PORT))
ear.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
               struct.pack("=4s4si", socket.inet_aton(inherited.GROUP), b"\0" * 4, socket.if_nametoindex("eth0")))
with open(sys.argv[2]) as f:
    made = inherited.messages(inherited.established(f.read().splitlines()[1:]), 9)
said = inherited.count_as_inactive("eth0", 9, conn_table=sys.argv[2])
ear.settimeout(2)
heard = [ear.recv(65536).hex() for _ in made]
# then one datagram over the wire, which the other end waits for
w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
w.sendto(b"MARKER", ("10.77.0.2", 9))
print(json.dumps({"said": said, "heard": heard, "made": [m.hex() for m in made]}), flush=True)
"""

# In "wire": every IPv4 frame on eth0 until the marker; prints JSON [destination port...] of UDP.
WIRE = r"""
import json, socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind(("eth0", 0))
s.settimeout(30)
print("LISTENING", flush=True)
ports = []
while True:
    p = s.recv(65536)
    if p[9] == 17:
        at = (p[0] & 15) * 4
        ports.append(struct.unpack_from("!H", p, at + 2)[0])
        if p[at + 8:] == b"MARKER":
            break
print(json.dumps(ports), flush=True)
"""


@pytest.fixture
def pair():
    tag = uuid.uuid4().hex[:6]
    ns = {"spare": f"inh-{tag}-s", "wire": f"inh-{tag}-w"}
    try:
        for n in ns.values():
            subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", ns["spare"], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                        "netns", ns["wire"]], check=True)
        for n, a in (("spare", "10.77.0.1"), ("wire", "10.77.0.2")):
            for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{a}/24", "dev", "eth0"],
                        ["link", "set", "eth0", "up"]):
                subprocess.run(["ip", "-n", ns[n]] + cmd, check=True)
        yield ns
    finally:
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)


def test_messages_reach_the_group_on_this_host_and_never_the_wire(pair, tmp_path):
    table = tmp_path / "ip_vs_conn_sync"
    table.write_text("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"
                     + "".join(LINE.format(port=40000 + i) for i in range(1000)))
    wire = subprocess.Popen(["ip", "netns", "exec", pair["wire"], PY, "-c", WIRE],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert wire.stdout.readline().strip() == "LISTENING"
        env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
        spare = subprocess.run(["ip", "netns", "exec", pair["spare"], PY, "-c", SPARE,
                                os.path.join(ROOT, "lib"), str(table)],
                               capture_output=True, text=True, timeout=60, env=env)
        assert spare.returncode == 0, spare.stderr
        got = json.loads(spare.stdout)
        seen_on_wire = json.loads(wire.stdout.readline())
    finally:
        wire.kill()
        wire.wait()
    assert got["said"] == 1000, spare.stderr
    assert len(got["made"]) == 25            # 40 connections a message; windows of 16
    assert got["heard"] == got["made"]
    assert "1000 inherited established connections count as inactive" in spare.stderr
    assert seen_on_wire == [9]          # the marker only: no sync message left the host
