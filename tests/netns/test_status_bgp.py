"""lvs-status in [announce] mode = bgp against real BIRDs: what the router is told.

Which side is real:
- real: two BIRD 2 of ours, each in a network namespace of ours, one veth
  between them: a "router" BIRD and a "director" BIRD with lvskit's include
  file (ipvs-sync writes it), a BGP session between them with BFD on both
  sides; lvs-announce switching the director's protocols; lvs-status run as
  the script, asking the director's BIRD through `[announce] birdc`; the
  router's own table (`birdc show route`) as the proof of what it was told;
- fake: the IPVS table (this host has no IPVS): filekernel.py's table in a
  file, shared by ipvs-sync, lvs-announce and lvs-status.
The services have no check (no health to fake: check-real's real servers
would be outside addresses).  Addresses are the namespaces' own; BGP's port
179 is each namespace's own, nothing is guessed.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from birdns import Bird  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                       reason="BIRD 2 not installed (bird2: make apt-deps)"),
]

ROUTER, DIRECTOR = "10.255.0.1", "10.255.0.2"
VIPS = ["192.0.2.26/32", "2001:db8::26/128"]
SERVICES = """\
[service www]
address = 192.0.2.26
port = 80
scheduler = mh
sched_flags = mh-port
real.198.51.100.13 = weight=1
[service www6]
address = 2001:db8::26
port = 80
scheduler = mh
sched_flags = mh-port
real.2001:db8::13 = weight=1
"""
BFD = ('protocol bfd { interface "eth0" { min rx interval 100 ms; min tx interval 100 ms; '
       'multiplier 3; }; }\n')
TIMERS = "bfd on; connect delay time 1; connect retry time 1; error wait time 1, 2;"
ROUTER_CONF = BFD + f"""protocol bgp director1 {{
  local {ROUTER} as 65000; neighbor {DIRECTOR} as 65001;
  ipv4 {{ import all; export none; }}; ipv6 {{ import all; export none; }};
  {TIMERS}
}}
"""
DIRECTOR_CONF = BFD + f"""protocol bgp router1 {{
  local {DIRECTOR} as 65001; neighbor {ROUTER} as 65000;
  ipv4 {{ import none; export where proto = "lvskit_vip"; }};
  ipv6 {{ import none; export where proto = "lvskit_vip_v6"; }};
  {TIMERS}
}}
"""
ENV = {**os.environ, "LVSKIT_NO_SYSLOG": "1"}


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Lab:
    """The two namespaces and their BIRDs; the director's lvskit config on a file table."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.ns = {"router": f"lvskit-bgp-r-{os.getpid()}", "director": f"lvskit-bgp-d-{os.getpid()}"}
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            ip("netns", "add", ns)
        veth = f"lvbgp{os.getpid() % 100000}"
        ip("link", "add", veth + "r", "type", "veth", "peer", "name", veth + "d")
        for side, end, addr in (("router", "r", ROUTER), ("director", "d", DIRECTOR)):
            ns = self.ns[side]
            ip("link", "set", veth + end, "netns", ns, "name", "eth0")
            ip("-n", ns, "addr", "add", addr + "/30", "dev", "eth0")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", "eth0", "up")
        for d in ("router", "director", "etc-bird"):
            (tmp / d).mkdir()
        empty = tmp / "etc-bird" / "empty.conf"
        empty.write_text("")
        self.router = Bird(tmp / "router", empty, netns=self.ns["router"], router_id=ROUTER,
                           extra=ROUTER_CONF)
        self.director = Bird(tmp / "director", tmp / "etc-bird" / "lvskit-vips.conf",
                             netns=self.ns["director"], router_id=DIRECTOR, extra=DIRECTOR_CONF)
        self.table = str(tmp / "ipvs-table.pickle")
        self.config = str(tmp / "lvskit.ini")
        with open(self.config, "w") as f:
            f.write(self.director.lvskit_config(tmp, SERVICES))

    def run(self, script, *args):
        argv = [sys.executable, "-S", os.path.join(HERE, "filekernel.py"), self.table,
                os.path.join(ROOT, "bin", script), "-c", self.config, *args]
        return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60)

    def status(self):
        r = self.run("lvs-status", "--json")
        assert r.returncode == 0 and r.stderr == "", r
        return json.loads(r.stdout)["announce"]

    def check(self):
        r = self.run("lvs-status", "--check")
        assert r.stderr == "" and r.stdout.count("\n") == 1, r
        return r.returncode, r.stdout.strip()

    def session(self):
        """lvs-status's view of the one BGP session (its JSON)."""
        sessions = self.status()["bird"]["sessions"]
        assert [s["name"] for s in sessions] == ["router1"], sessions
        return sessions[0]

    def router_routes(self):
        """The prefixes the router's BIRD holds from the director: what it was told."""
        return sorted(line.split()[0] for line in self.router.birdc("show", "route").splitlines()
                      if line[:1].isalnum() and not line.startswith("Table"))

    def close(self):
        self.router.close()
        self.director.close()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def until(what, timeout=30):
    """what()'s value once it is true (polled); fails after timeout, naming the last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s; last: {got!r}"
        time.sleep(0.05)


def test_status_shows_the_session_its_bfd_and_what_the_router_is_told(lab):
    r = lab.run("ipvs-sync")                    # the table, and BIRD's include file
    assert r.returncode == 1 and "configure" in r.stderr      # no BIRD yet: the file is there all the same
    lab.router.start()
    lab.director.start()
    s = until(lambda: (lambda s: s if s["established"] and s["bfd"] == "Up" else None)(lab.session()))
    assert (s["neighbor"], s["bgp_state"], s["exported"]) == (ROUTER, "Established", [])
    assert lab.router_routes() == []
    # the gate announces: BIRD exports both VIPs on the session, and the router has them
    r = lab.run("lvs-announce")
    assert r.returncode == 0, r
    s = until(lambda: (lambda s: s if s["exported"] == VIPS else None)(lab.session()))
    assert until(lambda: lab.router_routes() == ["192.0.2.26/32"])    # (no IPv6 next hop on an IPv4 session)
    a = lab.status()
    assert (a["announced"], a["bird"]["protocols"]) == (True, {"lvskit_vip": "up", "lvskit_vip_v6": "up"})
    r = lab.run("lvs-status")
    assert f"  BGP router1 {ROUTER}: Established since {s['since']}, BFD Up; exports {', '.join(VIPS)}" \
        in r.stdout.splitlines(), r.stdout
    code, line = lab.check()
    assert code == 0 and line.startswith("LVS_STATUS OK - 2/2 real servers up; announced; BGP 1/1 up"), line
    prom = lab.tmp / "lvskit.prom"
    assert lab.run("lvs-status", "--textfile", str(prom)).returncode == 0
    labels = f'{{session="router1",neighbor="{ROUTER}"}}'
    body = prom.read_text().splitlines()
    assert {f"lvskit_bgp_session_up{labels} 1", f"lvskit_bgp_session_bfd_up{labels} 1",
            f"lvskit_bgp_session_exported_vips{labels} 2", "lvskit_bird_available 1"} <= set(body)

    # drained, then enabled by hand behind the gate's back: the router is told, the check is CRITICAL
    assert lab.run("lvs-announce", "--drain", "upgrade").returncode == 0
    until(lambda: lab.session()["exported"] == [] and lab.router_routes() == [])
    assert lab.check() == (0, "LVS_STATUS OK - 2/2 real servers up; withdrawn: drained "
                              f"({lab.tmp}/state/announce-drain: upgrade); BGP 1/1 up | up=2;;;0;2 "
                              "active=0;;;0 bgp_up=1;;;0;1")
    lab.director.birdc("enable", "lvskit_vip")
    until(lambda: lab.session()["exported"] == VIPS[:1])
    code, line = lab.check()
    assert code == 2 and "VIPs EXPORTED to router1 while lvs-announce says withdrawn" in line, line
    assert lab.run("lvs-announce", "--undrain").returncode == 0
    assert lab.run("lvs-announce").returncode == 0
    until(lambda: lab.session()["exported"] == VIPS)

    # the router's BIRD stopped: the session and its BFD go down, nothing is exported, and the
    # gate's announcement reaches nobody
    lab.router.close()
    s = until(lambda: (lambda s: s if not s["established"] else None)(lab.session()))
    assert s["bgp_state"] in ("Active", "Connect", "Idle") and s["exported"] == [], s
    s = until(lambda: (lambda s: s if s["bfd"] == "Down" else None)(lab.session()))
    assert lab.run("lvs-announce").returncode == 0          # still announcing: BIRD answers, the table is right
    code, line = lab.check()
    assert code == 1 and "; announced; BGP 0/1 up; announced to nobody: no BGP session Established; " \
                         "BGP router1 " in line, line
    r = lab.run("lvs-status", "--textfile", str(prom))
    assert r.returncode == 0 and f"lvskit_bgp_session_up{labels} 0" in prom.read_text().splitlines()


def test_a_director_bird_that_is_gone_is_one_line(lab):
    lab.run("ipvs-sync")
    r = lab.run("lvs-status")                       # no BIRD behind the socket
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    said = [l for l in r.stdout.splitlines() if "BIRD" in l or "BGP" in l]
    assert len(said) == 1 and said[0].startswith("  BIRD does not answer: ") and \
        "Unable to connect to server control socket" in said[0], r.stdout
