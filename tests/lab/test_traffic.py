"""What a client sees through a direct-routing director when a real server dies and heals,
and when the spare takes the VIP over: answers counted per server, not kernel weights.

One scenario, in the order of the demo's story (lab/demo.py): www on wlc 2/1/3
(hades/kama/apolo) with check-real --every 1 on the director, the spare
loaded by ipvs-sync and fed by the connection-sync daemon, and the demo's
client (lab/demo_node.py: a new HTTP connection to the VIP every 0.1 s).

1. hades's service is killed.  Until check-real takes it out, the client's
   connections to it are refused, straight from hades to the client: the
   director never sees the reset, and without help its entries of those
   handshakes stay in the kernel (SYN_RECV, counted as active connections)
   long after hades is back.  No request may fail once check-real has taken
   hades out, and within 10 s after check-real puts it back hades must get at
   least 80 % of its weight share of the new connections.
2. The spare takes the VIP over (the VIP moves, a gratuitous ARP tells the
   client); over its first 20 s its new connections must follow the weights
   within 10 points.
"""
import collections
import json
import os
import subprocess
import sys
import time

from conftest import PY, ROOT, ipvsadm_ln

NODE = os.path.join(ROOT, "lab", "demo_node.py")
WEIGHTS = {"hades": 2, "kama": 1, "apolo": 3}
INTERVAL, FALL, RISE = 1.0, 2, 2
BACK_WINDOW = 10.0        # seconds after check-real puts the server back
SPARE_WINDOW = 20.0       # seconds of the spare's traffic judged
MIN_SHARE = 0.8           # of the weight share, for the healed server
TOLERANCE = 0.10          # share points, for the spare


def config(lab, tmp_path, node):
    reals = "\n".join(f"real.{n} = weight={w}" for n, w in WEIGHTS.items())
    servers = "\n".join(f"[server {n}]\naddress = {lab.addr[n]}" for n in WEIGHTS)
    path = tmp_path / node / "lvskit.ini"
    path.parent.mkdir()
    path.write_text(f"""[global]
state_dir = {path.parent}/state
run_dir = {path.parent}/run
{servers}
[service www]
address = {lab.vip}
port = 80
scheduler = wlc
forward = dr
{reals}
check = http
check_interval = {INTERVAL}
check_timeout = 0.5
check_fall = {FALL}
check_rise = {RISE}
""")
    return str(path)


def wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Client:
    """demo_node's client in the client namespace: one JSON line per www request."""

    def __init__(self, lab, tmp_path):
        self.log = str(tmp_path / "client.jsonl")
        open(self.log, "w").close()
        # xdmcp and ssh once a day: this test is about www
        self.proc = lab.popen("client", [PY, NODE, "client", self.log, lab.vip, "--xdmcp", "86400",
                                         "--ssh", "86400"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def records(self):
        with open(self.log) as f:
            lines = f.read().splitlines()
        recs = [json.loads(line) for line in lines if line.endswith("}")]
        return [r for r in recs if r["svc"] == "www"]

    def window(self, t1, t2=float("inf")):
        """Requests started in [t1, t2) (CLOCK_MONOTONIC, which every namespace shares)."""
        return [r for r in self.records() if t1 <= r["t"] < t2]

    def answered_after(self, t, n):
        return len([r for r in self.window(t) if r["server"]]) >= n

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def shares(recs):
    got = collections.Counter(r["server"] for r in recs if r["server"])
    total = sum(got.values())
    return {n: got[n] / total for n in WEIGHTS} if total else {}


def test_healed_server_and_spare_serve_their_weight_share(tmp_path):
    from topo import Lab, unique_prefix
    total = sum(WEIGHTS.values())
    want = {n: w / total for n, w in WEIGHTS.items()}
    env = {**os.environ, "LVSKIT_NO_SYSLOG": "1"}
    with Lab(prefix=unique_prefix("tt"), mode="dr", reals=tuple(WEIGHTS), spare=True) as lab:
        servers = {}

        def start(name):
            p = lab.popen(name, [PY, NODE, "serve", name], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
            assert p.stdout.readline().strip() == "READY"
            servers[name] = p
        for name in WEIGHTS:
            start(name)
        cfg = {node: config(lab, tmp_path, node) for node in ("director", "spare")}

        def script(node, name, *args):
            r = lab.run(node, [PY, os.path.join(ROOT, "bin", name), "-c", cfg[node]] + list(args), env=env)
            assert r.returncode == 0, f"{name} on {node}: {r.stdout}{r.stderr}"
        for node in ("director", "spare"):
            script(node, "ipvs-sync")
        lab.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0")
        lab.ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth0", node="spare")
        svc, hades = f"TCP {lab.vip}:80", f"{lab.addr['hades']}:80"

        def hades_weight(node="director"):
            return ipvsadm_ln(lambda argv: lab.run(node, argv)).get(svc, ("", "", {}))[2].get(hades, ("", -1))[1]
        checker = lab.popen("director", [PY, os.path.join(ROOT, "bin", "check-real"), "-c", cfg["director"],
                                         "--every", str(INTERVAL)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        client = Client(lab, tmp_path)
        try:
            start_t = time.monotonic()
            wait(lambda: client.answered_after(start_t, 30), 60, "30 answers in steady state")

            # 1. hades dies: at least one connection refused (the entry it leaves is the trap)
            killed = time.monotonic()
            servers.pop("hades").kill()
            wait(lambda: any(r["server"] is None for r in client.window(killed)), 30,
                 "a connection refused by the dead hades")
            wait(lambda: hades_weight() == 0, FALL * INTERVAL + 20, "check-real taking hades out")
            out = time.monotonic()
            start("hades")
            wait(lambda: hades_weight() == WEIGHTS["hades"], RISE * INTERVAL + 20, "check-real putting hades back")
            back = time.monotonic()
            wait(lambda: client.window(back + BACK_WINDOW), BACK_WINDOW + 30, "the window after the return")
            after = client.window(back, back + BACK_WINDOW)
            failed = [r for r in client.window(out, back + BACK_WINDOW) if r["server"] is None]
            assert not failed, f"requests failed after check-real took hades out: {failed[:3]}"
            got = shares(after)
            assert got.get("hades", 0) >= MIN_SHARE * want["hades"], \
                f"healed hades got {got.get('hades', 0):.0%} of {len(after)} new connections in " \
                f"{BACK_WINDOW:g} s, want >= {MIN_SHARE:.0%} of {want['hades']:.0%}: {got}"

            # 2. the spare takes the VIP over, the director lets it go
            lab.run("spare", ["ip", "addr", "add", f"{lab.vip}/32", "dev", "eth0"], check=True)
            r = lab.run("spare", [PY, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from lvskit import arp; "
                                  "arp.Announcer('eth0').announce([sys.argv[2]])", os.path.join(ROOT, "lib"), lab.vip])
            assert r.returncode == 0, r.stderr
            wait(lambda: lab.mac("spare") in lab.run("client", ["ip", "neigh", "show", lab.vip]).stdout, 10,
                 "the client's ARP entry for the VIP to move to the spare")
            moved = time.monotonic()
            lab.run("director", ["ip", "addr", "del", f"{lab.vip}/32", "dev", "eth0"], check=True)
            wait(lambda: client.window(moved + SPARE_WINDOW), SPARE_WINDOW + 30, "the spare's window")
            spare = client.window(moved, moved + SPARE_WINDOW)
            got = shares(spare)
            off = {n: round(got.get(n, 0) - want[n], 3) for n in WEIGHTS}
            assert all(abs(d) <= TOLERANCE for d in off.values()), \
                f"the spare's {len(spare)} new connections in {SPARE_WINDOW:g} s: {got}, want {want}"
            assert not [r for r in spare if r["server"] is None]
            print(f"healed hades share {shares(after).get('hades', 0):.0%} of {len(after)}; spare {got}")
        finally:
            client.stop()
            checker.terminate()
            checker.communicate(timeout=20)
