"""lvs-status against the real kernel: the weights and connection counts it shows (text, JSON,
Prometheus textfile) are the ones `ipvsadm -Ln` shows, with real connections through a NAT director."""
import json
import re
import time

from conftest import PY, script

HOLD_SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
print("listening", flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)       # accepted and kept open: an active connection
"""

HOLD_CLIENT = r"""
import socket, sys, time
held = [socket.create_connection((sys.argv[1], 8080), timeout=5) for _ in range(int(sys.argv[2]))]
print("connected", flush=True)
time.sleep(600)
"""


def ipvsadm_counts(lab):
    """{(service, dest): (weight, active, inactive)} from `ipvsadm -Ln`."""
    out, svc = {}, None
    for line in lab.ipvsadm("-Ln").splitlines():
        m = re.match(r"^(TCP|UDP)\s+(\S+)", line)
        if m:
            svc = f"{m.group(1).lower()} {m.group(2)}"
            continue
        m = re.match(r"^\s+->\s+(\S+)\s+\w+\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m and svc:
            out[(svc, m.group(1))] = tuple(int(x) for x in m.group(2, 3, 4))
    return out


def test_status_shows_what_ipvsadm_shows(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    from topo import Lab, unique_prefix
    with Lab(prefix=unique_prefix("ls"), mode="nat") as lab:
        hades, kama = lab.reals
        lab.serve()
        for name in lab.reals:
            p = lab.popen(name, [PY, "-c", HOLD_SERVER], stdout=-1, text=True)
            assert p.stdout.readline().strip() == "listening"
        cfg = tmp_path / "lvskit.ini"
        cfg.write_text(f"""
[global]
director = lab
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[server {hades}]
address = {lab.addr[hades]}
[server {kama}]
address = {lab.addr[kama]}
[service web]
address = {lab.vip}
port = 80
scheduler = wrr
forward = nat
check = tcp
check_timeout = 1
real.{hades} = weight=3
real.{kama} = weight=1
[service hold]
address = {lab.vip}
port = 8080
scheduler = rr
forward = nat
real.{hades} = weight=2
real.{kama} = weight=5
""")
        director = lambda argv, **kw: lab.run("director", argv, **kw)   # noqa: E731
        r = script(director, "ipvs-sync", "-c", str(cfg))
        assert r.returncode == 0, r.stderr
        got = lab.connect(80, 20)                   # closed at once: inactive on the director
        assert got[None] == 0 and got[hades] + got[kama] == 20, got
        client = lab.popen("client", [PY, "-c", HOLD_CLIENT, lab.vip, "6"], stdout=-1, text=True)
        assert client.stdout.readline().strip() == "connected"      # 3 + 3 held: active
        lab.kill_server(kama)
        r = script(director, "check-real", "-c", str(cfg), "--no-kernel")
        assert r.returncode == 1 and "down" in r.stdout, (r.stdout, r.stderr)     # one of two: WARNING

        # The counters move (TIME_WAIT entries expire): take a reading between two equal ones.
        for _ in range(5):
            before = ipvsadm_counts(lab)
            js = script(director, "lvs-status", "-c", str(cfg), "--json")
            txt = script(director, "lvs-status", "-c", str(cfg))
            prom = tmp_path / "lvskit.prom"
            tf = script(director, "lvs-status", "-c", str(cfg), "--textfile", str(prom))
            if ipvsadm_counts(lab) == before:
                break
            time.sleep(0.5)
        assert (js.returncode, txt.returncode, tf.returncode) == (0, 0, 0), (js.stderr, txt.stderr, tf.stderr)
        assert (tf.stdout, tf.stderr) == ("", "")
        want = before
        assert want[(f"tcp {lab.vip}:8080", f"{lab.addr[hades]}:8080")][1:] == (3, 0)
        assert sum(v[2] for k, v in want.items() if k[0].endswith(":80")) > 0, want

        st = json.loads(js.stdout)
        assert st["ipvs"]["available"] is True
        shown = {(s["key"], r["entry"]): (r["kernel_weight"], r["active"], r["inactive"])
                 for s in st["services"] for r in s["reals"]}
        assert shown == want
        web = {r["server"]: r for r in st["services"][0]["reals"]}
        assert (web[kama]["health"], web[kama]["up"]) == ("down", False)
        assert "refused" in web[kama]["reason"]
        # --no-kernel: the kernel still has weight 1; ipvs-sync would quiesce it
        assert (web[kama]["kernel_weight"], web[kama]["wanted_weight"]) == (1, 0)

        rows = {}
        for line in txt.stdout.splitlines():
            m = re.match(r"^tcp (\S+) ", line)
            if m:
                svc = f"tcp {m.group(1)}"
            elif line.startswith("  -> ") and not line.startswith("  -> SERVER"):
                f = line.split()
                weight = int(f[6])
                rest = f[7:] if not f[7].startswith("(") else f[9:]
                rows[(svc, f[2])] = (weight, int(rest[0]), int(rest[1]))
        assert rows == want, txt.stdout

        fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
        metric = {}
        for name, i in (("lvskit_real_server_weight", 0), ("lvskit_real_server_active_connections", 1),
                        ("lvskit_real_server_inactive_connections", 2)):
            for s in fams[name].samples:
                key = (next(x["key"] for x in st["services"] if x["name"] == s.labels["service"]),
                       s.labels["address"])
                metric.setdefault(key, [None] * 3)[i] = int(s.value)
        assert {k: tuple(v) for k, v in metric.items()} == want
        assert [s.value for s in fams["lvskit_ipvs_available"].samples] == [1]
        assert [s.value for s in fams["lvskit_real_server_up"].samples
                if s.labels["server"] == kama] == [0]
        client.kill()

