import os
import subprocess
import sys

import pytest

from lvskit import config
from lvskit.errors import NOT_CONFIGURED, ConfigError
from lvskit.model import AF_INET6, F_PERSISTENT, FORWARD, PROTOCOLS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = os.path.join(ROOT, "conf", "lvskit.ini")

BASE = """
[server a]
address = 10.0.0.1
[server b]
address = 10.0.0.2
[service web]
address = 10.0.0.100
port = 80
real.a = weight=3
real.b = weight=1
"""


def test_seed_config_is_the_slides_table():
    cfg = config.load(SEED)
    assert cfg.director == "midas"
    www, ssh, xdmcp = (cfg.service(n) for n in ("www", "ssh", "xdmcp"))
    assert www.service.scheduler == "wlc"
    assert [r.dest.weight for r in www.reals] == [2, 1, 3]
    assert ssh.service.scheduler == "rr" and [r.dest.weight for r in ssh.reals] == [1, 1]
    assert xdmcp.key.protocol == PROTOCOLS["udp"] and xdmcp.key.port == 177
    assert [r.dest.weight for r in xdmcp.reals] == [10, 7, 10, 1]
    assert xdmcp.service.flags & F_PERSISTENT and xdmcp.service.timeout == 3600
    assert {r.name for r in xdmcp.reals} >= {"hades", "kama"}
    assert all(r.dest.forward == FORWARD["dr"] for vs in cfg.services for r in vs.reals)


def test_fwmark_ipv6_nat_ports_thresholds():
    cfg = config.parse("""
[service mark]
fwmark = 7
family = inet6
scheduler = sh
sched_flags = sh-port
persistent = 60
netmask = 64
real.2001:db8::5 = weight=4
[service nat]
address = 10.1.0.1
port = 8080
forward = nat
removal = delete
real.10.2.0.1 = port=80 uthreshold=100 lthreshold=10
""")
    mark, nat = cfg.services
    assert mark.key.fwmark == 7 and mark.key.af == AF_INET6 and mark.service.netmask == 64
    assert mark.reals[0].dest.port == 0 and mark.reals[0].dest.address == "2001:db8::5"
    d = nat.reals[0].dest
    assert (d.port, d.forward, d.u_threshold, d.l_threshold) == (80, FORWARD["nat"], 100, 10)
    assert nat.removal == "delete"


BAD = [
    # (text, words that the one-line error must contain)
    (BASE + "colour = blue\n", ["[service web]", "colour", "unknown key"]),
    (BASE.replace("10.0.0.100", "10.0.0.300"), ["address", "not an IPv4 or IPv6"]),
    (BASE + "scheduler = fastest\n", ["scheduler", "unknown scheduler 'fastest'"]),
    (BASE + "forward = teleport\n", ["forward", "teleport"]),
    (BASE.replace("weight=3", "weight=70000"), ["real.a", "weight 70000 out of range 0..65535"]),
    (BASE.replace("weight=3", "weight=-1"), ["real.a", "weight -1 out of range"]),
    (BASE.replace("weight=3", "weight=lots"), ["real.a", "weight 'lots' is not a whole number"]),
    (BASE.replace("weight=3", "wieght=3"), ["real.a", "bad option 'wieght=3'"]),
    (BASE + "[service web2]\naddress = 10.0.0.100\nport = 80\n", ["[service web2]", "same virtual service"]),
    (BASE + "real.10.0.0.1 = weight=1\n", ["real.10.0.0.1", "same real server as real.a"]),
    (BASE + "real.nosuch = weight=1\n", ["real.nosuch", "neither a [server] section nor an IP"]),
    (BASE.replace("port = 80", "port = 0"), ["port", "out of range 1..65535"]),
    (BASE.replace("port = 80\n", ""), ["port", "missing"]),
    (BASE + "protocol = icmp\n", ["protocol", "icmp"]),
    (BASE + "[frobnicate]\nx = 1\n", ["[frobnicate]", "unknown section kind"]),
    (BASE + "[service web]\n", ["given twice"]),
    (BASE + "real.a = weight=1\n", ["real.a", "given twice"]),
    (BASE + "netmask = 255.255.255.0\n", ["netmask", "only means something with persistent"]),
    (BASE + "persistent = 60\nnetmask = 255.0.255.0\n", ["netmask", "not a netmask"]),
    (BASE.replace("weight=3", "weight=3 port=8080"), ["real.a", "only forward=nat can map ports"]),
    (BASE + "real.2001:db8::1 = weight=1\n", ["real.2001:db8::1", "different IP families"]),
    (BASE + "fwmark = 3\n", ["firewall-mark service has no address"]),
    (BASE + "just some words\n", ["expected 'key = value'"]),
    ("x = 1\n", ["before any [section]"]),
    ("[service]\naddress = 10.0.0.1\nport = 1\n", ["needs a name"]),
    (BASE + "one_packet = yes\n", ["one_packet", "for UDP"]),
    ("[global]\nstate_dir = relative/dir\n", ["state_dir", "not an absolute path"]),
    (BASE.replace("weight=3", "uthreshold=5 lthreshold=9"), ["lthreshold 9 is above uthreshold 5"]),
]


@pytest.mark.parametrize("text,words", BAD)
def test_bad_config_one_line_naming_where(text, words, tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for w in words:
        assert w in msg, msg
    assert e.value.code == NOT_CONFIGURED


def test_error_names_the_line(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text(BASE.replace("weight=3", "weight=x"))
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    line = [i for i, l in enumerate(BASE.splitlines(), 1) if "weight=3" in l][0]
    assert f"{path}:{line}: [service web] real.a:" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "nope.ini"))


def test_script_exit_code_6_and_one_line(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text(BASE + "scheduler = fastest\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "-c", str(path), "-n"],
                       capture_output=True, text=True, env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    assert p.returncode == 6
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown scheduler" in lines[0] and str(path) in lines[0]


def test_bad_command_line_exit_2():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "--frobnicate"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "frobnicate" in p.stderr


def test_help_has_example():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "--help"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "examples:" in p.stdout and "--dry-run" in p.stdout
