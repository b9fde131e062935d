"""ipvs-sync against the real kernel: the table read back, real connections through it."""
import os
import re

import pytest
from conftest import ROOT, ipvsadm_ln, pyroute2_table, script

SEED = open(os.path.join(ROOT, "conf", "lvskit.ini")).read()
VIP = "192.168.45.26"       # the seed's example addresses: only ever put in a guest namespace's table
H, K, A, C = "192.168.45.13", "192.168.45.43", "192.168.45.31", "192.168.45.34"


def seed_config(tmp_path, text=SEED):
    path = tmp_path / "lvskit.ini"
    path.write_text(text.replace("/var/lib/lvskit", str(tmp_path / "state"))
                    .replace("/run/lvskit", str(tmp_path / "run")))
    return str(path)


SEED_TABLE = {
    f"TCP {VIP}:80": ("wlc", "", {f"{H}:80": ("Route", 2), f"{K}:80": ("Route", 1), f"{A}:80": ("Route", 3)}),
    f"TCP {VIP}:22": ("rr", "", {f"{K}:22": ("Route", 1), f"{C}:22": ("Route", 1)}),
    f"UDP {VIP}:177": ("wlc", "persistent 3600", {f"{H}:177": ("Route", 10), f"{K}:177": ("Route", 7),
                                                  f"{A}:177": ("Route", 10), f"{C}:177": ("Route", 1)}),
}


def test_seed_config_applied_and_read_back(netns, tmp_path):
    cfg = seed_config(tmp_path)
    r = script(netns.run, "ipvs-sync", "-c", cfg)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")       # quiet on success
    assert ipvsadm_ln(netns.run) == SEED_TABLE
    table = {(s["protocol"], s["addr"], s["port"]): s for s in pyroute2_table(netns.run)}
    www = table[(6, VIP, 80)]
    assert www["sched"] == "wlc"
    assert sorted((d["addr"], d["weight"], d["fwd"]) for d in www["dests"]) == \
        [(H, 2, 3), (A, 3, 3), (K, 1, 3)]
    xdmcp = table[(17, VIP, 177)]
    assert xdmcp["timeout"] == 3600 and len(xdmcp["dests"]) == 4
    again = script(netns.run, "ipvs-sync", "-c", cfg, "-v")
    assert (again.returncode, again.stderr) == (0, "")             # nothing to do
    check = script(netns.run, "ipvs-sync", "-c", cfg, "--check")
    assert check.returncode == 0 and check.stdout.startswith("IPVS_SYNC OK")


def test_one_weight_change_is_one_kernel_change(netns, tmp_path):
    cfg = seed_config(tmp_path)
    assert script(netns.run, "ipvs-sync", "-c", cfg).returncode == 0
    seed_config(tmp_path, SEED.replace("real.kama = weight=1", "real.kama = weight=4"))
    check = script(netns.run, "ipvs-sync", "-c", cfg, "--check")
    assert check.returncode == 2 and "1 changes pending" in check.stdout
    dry = script(netns.run, "ipvs-sync", "-c", cfg, "-n")
    want = f"ipvsadm -e -t {VIP}:80 -r {K}:80 -g -w 4"
    assert dry.stdout.splitlines() == [want]
    assert ipvsadm_ln(netns.run) == SEED_TABLE                      # dry run changed nothing
    r = script(netns.run, "ipvs-sync", "-c", cfg, "-v")
    assert r.returncode == 0
    assert [l for l in r.stderr.splitlines() if "ipvsadm" in l] == [f"ipvs-sync: {want}"]
    table = ipvsadm_ln(netns.run)
    assert table[f"TCP {VIP}:80"][2][f"{K}:80"] == ("Route", 4)
    table[f"TCP {VIP}:80"][2][f"{K}:80"] = ("Route", 1)
    assert table == SEED_TABLE                                      # nothing else moved


def test_foreign_entries_survive_hand_changes_are_repaired(netns, tmp_path):
    cfg = seed_config(tmp_path)
    assert script(netns.run, "ipvs-sync", "-c", cfg).returncode == 0
    for args in (["-A", "-t", "10.9.9.9:443", "-s", "sh"], ["-a", "-t", "10.9.9.9:443", "-r", "10.9.9.10", "-w", "9"],
                 ["-d", "-t", f"{VIP}:80", "-r", f"{H}:80"], ["-e", "-t", f"{VIP}:80", "-r", f"{K}:80", "-w", "50"],
                 ["-E", "-u", f"{VIP}:177", "-s", "rr"]):
        assert netns.run(["ipvsadm"] + args).returncode == 0, args
    r = script(netns.run, "ipvs-sync", "-c", cfg)
    assert r.returncode == 0, r.stderr
    table = ipvsadm_ln(netns.run)
    assert table.pop("TCP 10.9.9.9:443") == ("sh", "", {"10.9.9.10:443": ("Route", 9)})
    assert table == SEED_TABLE


def test_an_emptied_or_cut_config_leaves_the_kernel_as_it_was(netns, tmp_path):
    cfg = seed_config(tmp_path)
    assert script(netns.run, "ipvs-sync", "-c", cfg).returncode == 0
    before = netns.run(["ipvsadm", "-Sn"]).stdout
    for text, words in (("", "no [service] section"),
                        (SEED.split("[service ssh]")[0], "refusing to delete 2 of the 3 services")):
        seed_config(tmp_path, text)
        r = script(netns.run, "ipvs-sync", "-c", cfg)
        assert r.returncode == 6 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert netns.run(["ipvsadm", "-Sn"]).stdout == before
    r = script(netns.run, "ipvs-sync", "-c", cfg, "--force")       # the deliberate act
    assert r.returncode == 0 and list(ipvsadm_ln(netns.run)) == [f"TCP {VIP}:80"]


def many_services(tmp_path, n, extra=""):
    path = tmp_path / "many.ini"
    path.write_text(f"[global]\nstate_dir = {tmp_path}/state\nrun_dir = {tmp_path}/run\n{extra}" + "".join(
        f"[service s{i}]\naddress = 10.7.{i // 250}.{i % 250 + 1}\nport = 80\n"
        + "".join(f"real.10.8.0.{j} = weight=1\n" for j in range(1, 11)) for i in range(n)))
    return str(path)


def test_a_load_killed_midway_leaves_no_orphan(netns, tmp_path):
    """SIGKILL while the kernel fills; then a smaller config: exactly its services remain."""
    import signal
    import subprocess
    cfg = many_services(tmp_path, 1000)
    load = subprocess.Popen(["ip", "netns", "exec", netns.name, "/usr/bin/python3",
                             os.path.join(ROOT, "bin", "ipvs-sync"), "-c", cfg],
                            env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    try:
        ip_vs = f"/proc/{load.pid}/net/ip_vs"      # the namespace's table, as the loader sees it
        inside = f"net:[{os.stat(f'/run/netns/{netns.name}').st_ino}]"
        count = 0
        while load.poll() is None and count == 0:
            try:
                if os.readlink(f"/proc/{load.pid}/ns/net") != inside:   # not yet in the namespace
                    continue
                with open(ip_vs) as f:
                    count = sum(1 for line in f if line.startswith(("TCP", "UDP")))
            except OSError:
                pass
        load.send_signal(signal.SIGKILL)
    finally:
        load.wait()
    loaded = len(ipvsadm_ln(netns.run))
    assert 0 < loaded < 1000, "the kill came too late to test anything"
    cfg = many_services(tmp_path, 10)
    r = script(netns.run, "ipvs-sync", "-c", cfg)
    assert r.returncode == 6 and "refusing to delete" in r.stderr       # most of the table: not without --force
    r = script(netns.run, "ipvs-sync", "-c", cfg, "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(ipvsadm_ln(netns.run)) == sorted(f"TCP 10.7.0.{i + 1}:80" for i in range(10))
    check = script(netns.run, "ipvs-sync", "-c", cfg, "--check")
    assert check.returncode == 0 and check.stdout.startswith("IPVS_SYNC OK"), check.stdout


REFUSED = """
[global]
state_dir = {state}
run_dir = {state}
[service web]
address = 10.6.0.1
port = 80
real.10.6.0.2 = weight=2
real.224.0.0.5 = weight=1
real.10.6.0.3 = weight=3
"""


def test_a_change_the_kernel_refuses_is_named_and_the_others_are_made(netns, tmp_path):
    """The kernel refuses a multicast real server (EINVAL); the config cannot know that.
    The refusal comes back tied to its operation, the rest of the batch is applied, and the
    next run tries that one again (and only that one)."""
    cfg = tmp_path / "refused.ini"
    cfg.write_text(REFUSED.format(state=tmp_path))
    r = script(netns.run, "ipvs-sync", "-c", str(cfg))
    assert r.returncode == 1
    errors = [l for l in r.stderr.splitlines() if l.startswith("ipvs-sync:")]
    assert errors == ["ipvs-sync: ipvsadm -a -t 10.6.0.1:80 -r 224.0.0.5:80 -g -w 1: Invalid argument"]
    assert ipvsadm_ln(netns.run) == {
        "TCP 10.6.0.1:80": ("wlc", "", {"10.6.0.2:80": ("Route", 2), "10.6.0.3:80": ("Route", 3)})}
    again = script(netns.run, "ipvs-sync", "-c", str(cfg), "-v")
    assert again.returncode == 1
    assert [l for l in again.stderr.splitlines() if "ipvsadm" in l] == errors


ROUND_TRIP = """
[global]
state_dir = {state}
run_dir = {state}
[service v6]
address = 2001:db8::100
port = 443
scheduler = sh
sched_flags = sh-port
real.2001:db8::1 = weight=5
real.2001:db8::2 = weight=0
[service mark]
fwmark = 7
scheduler = rr
persistent = 600
netmask = 255.255.255.0
real.10.7.0.1 = weight=2
real.10.7.0.2 = weight=3
[service mark6]
fwmark = 8
family = inet6
scheduler = lc
persistent = 60
netmask = 64
real.2001:db8::9 = weight=1
[service natmap]
address = 10.8.0.1
port = 8080
scheduler = wrr
forward = nat
real.10.8.0.5 = port=80 uthreshold=100 lthreshold=10
[service tun]
address = 10.8.0.1
port = 9000
protocol = sctp
forward = tun
real.10.8.0.6 =
"""


def test_ipv6_fwmark_nat_tun_round_trip(netns, tmp_path):
    cfg = tmp_path / "rt.ini"
    cfg.write_text(ROUND_TRIP.format(state=tmp_path))
    netns.run(["ip", "link", "add", "dummy0", "type", "dummy"])     # NAT needs a route to the real server
    netns.run(["ip", "link", "set", "dummy0", "up"])
    netns.run(["ip", "addr", "add", "10.8.0.254/24", "dev", "dummy0"])
    r = script(netns.run, "ipvs-sync", "-c", str(cfg))
    assert (r.returncode, r.stderr) == (0, "")
    table = ipvsadm_ln(netns.run)
    assert table["TCP [2001:db8::100]:443"] == ("sh", "(sh-port)", {
        "[2001:db8::1]:443": ("Route", 5), "[2001:db8::2]:443": ("Route", 0)})
    assert table["FWM 7"][0:2] == ("rr", "persistent 600 mask 255.255.255.0")
    assert table["FWM 7"][2] == {"10.7.0.1:0": ("Route", 2), "10.7.0.2:0": ("Route", 3)}
    assert table["FWM 8 IPv6"] == ("lc", "persistent 60 mask 64", {"[2001:db8::9]:0": ("Route", 1)})
    assert table["TCP 10.8.0.1:8080"][2] == {"10.8.0.5:80": ("Masq", 1)}
    assert table["SCTP 10.8.0.1:9000"][2] == {"10.8.0.6:9000": ("Tunnel", 1)}
    thresholds = netns.run(["ipvsadm", "-Ln", "--thresholds", "-t", "10.8.0.1:8080"]).stdout
    assert re.search(r"10\.8\.0\.5:80\s+100\s+10\s", thresholds), thresholds
    # every field came back as written: a second run finds nothing to change
    check = script(netns.run, "ipvs-sync", "-c", str(cfg), "--check")
    assert check.returncode == 0, check.stdout


def traffic_config(lab, tmp_path, weights, scheduler="wlc"):
    forward = "nat" if lab.mode == "nat" else "dr"
    reals = "\n".join(f"real.{lab.addr[n]} = weight={w}" for n, w in zip(lab.reals, weights))
    path = tmp_path / f"{lab.mode}.ini"
    path.write_text(f"""
[global]
state_dir = {tmp_path}/state-{lab.mode}
run_dir = {tmp_path}/run-{lab.mode}
[service web]
address = {lab.vip}
port = 80
scheduler = {scheduler}
forward = {forward}
{reals}
[service xdmcp]
address = {lab.vip}
port = 177
protocol = udp
scheduler = rr
forward = {forward}
{reals}
""")
    return str(path)


@pytest.mark.parametrize("mode", ["nat", "dr"])
def test_weights_steer_real_connections(mode, tmp_path):
    from topo import Lab, unique_prefix
    with Lab(prefix=unique_prefix("lt") + mode[0], mode=mode) as lab:
        lab.serve()
        director = lambda argv, **kw: lab.run("director", argv, **kw)   # noqa: E731
        cfg = traffic_config(lab, tmp_path, (3, 1))
        r = script(director, "ipvs-sync", "-c", cfg)
        assert r.returncode == 0, r.stderr
        got = lab.connect(80, 40)
        hades, kama = lab.reals
        assert got[None] == 0, got
        assert 25 <= got[hades] <= 35 and got[hades] + got[kama] == 40, got   # about 75/25
        udp = lab.connect(177, 10, proto="udp")
        assert udp[hades] == 5 and udp[kama] == 5, udp                       # rr over UDP
        traffic_config(lab, tmp_path, (3, 0))
        r = script(director, "ipvs-sync", "-c", cfg)
        assert r.returncode == 0, r.stderr
        got = lab.connect(80, 40)
        assert got == {hades: 40}, got                                       # weight 0: none


def test_every_follows_config_edits_repairs_on_sighup_and_holds_the_lock(netns, tmp_path):
    import signal
    import subprocess
    import time
    cfg = seed_config(tmp_path)
    loop = subprocess.Popen(["ip", "netns", "exec", netns.name, "/usr/bin/python3",
                             os.path.join(ROOT, "bin", "ipvs-sync"), "-c", cfg, "--every", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    try:
        def wait_for(cond, timeout=30):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if cond(ipvsadm_ln(netns.run)):
                    return True
                time.sleep(0.2)
            return False
        assert wait_for(lambda t: t == SEED_TABLE)
        busy = script(netns.run, "ipvs-sync", "-c", cfg)
        assert busy.returncode == 75 and "another ipvs-sync is running" in busy.stderr
        tmp = tmp_path / "new.ini"
        tmp.write_text(open(cfg).read().replace("real.kama = weight=1", "real.kama = weight=9"))
        os.replace(tmp, cfg)                                    # an edit, as an editor saves it
        assert wait_for(lambda t: t[f"TCP {VIP}:80"][2][f"{K}:80"] == ("Route", 9))
        assert netns.run(["ipvsadm", "-d", "-t", f"{VIP}:80", "-r", f"{H}:80"]).returncode == 0
        loop.send_signal(signal.SIGHUP)                         # a full round reads the kernel back
        assert wait_for(lambda t: f"{H}:80" in t[f"TCP {VIP}:80"][2])
        assert loop.poll() is None
    finally:
        loop.terminate()
        _, err = loop.communicate(timeout=30)
    assert err == ""
