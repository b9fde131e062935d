"""[announce]: mode none (active-passive, the default) or bgp, and what bgp refuses."""
import os
import subprocess
import sys

import pytest

from lvskit import config
from lvskit.config.announce import Announce
from lvskit.config.kernel import Ipvs
from lvskit.errors import NOT_CONFIGURED

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = os.path.join(ROOT, "conf", "lvskit.ini")

BGP = """\
[announce]
mode = bgp
[service www]
address = 192.168.45.26
port = 80
scheduler = mh
sched_flags = mh-port,mh-fallback
check = tcp
real.192.168.45.13 = weight=2
real.192.168.45.43 = weight=1
[service www6]
address = 2001:db8::26
port = 443
scheduler = mh
sched_flags = mh-port
real.2001:db8::13 = weight=1
"""


def test_no_section_is_mode_none_and_the_seed_is_unchanged():
    assert config.parse("[global]\n").announce == Announce()
    assert Announce() == Announce("none", "lvskit_vip", "/etc/bird/lvskit-vips.conf", "birdc")
    seed = config.load(SEED)
    assert seed.announce == Announce() and not seed.announce.bgp
    assert seed.heartbeat is not None
    # active-passive leaves the two new sysctls to the kernel (keep): the seed sets nothing new
    assert (seed.ipvs.sloppy_tcp, seed.ipvs.schedule_icmp) == (None, None)
    assert seed.ipvs == Ipvs()


def test_bgp_defaults_turn_the_sysctls_on():
    cfg = config.parse(BGP, "t.ini")
    assert cfg.announce == Announce(mode="bgp") and cfg.announce.bgp
    assert (cfg.ipvs.sloppy_tcp, cfg.ipvs.schedule_icmp) == (1, 1)
    assert cfg.ipvs == Ipvs(sloppy_tcp=1, schedule_icmp=1)
    www = cfg.service("www").service
    assert (www.scheduler, www.flags) == ("mh", 0x8 | 0x10)      # IP_VS_SVC_F_SCHED1 | SCHED2


def test_keys():
    cfg = config.parse(BGP.replace("mode = bgp\n", "mode = BGP\nprotocol = vips_lvs\n"
                                   "include = /etc/bird/conf.d/lvs.conf\n"
                                   "birdc = /usr/sbin/birdc -s /run/bird/bird.ctl\n"), "t.ini")
    assert cfg.announce == Announce("bgp", "vips_lvs", "/etc/bird/conf.d/lvs.conf",
                                    "/usr/sbin/birdc -s /run/bird/bird.ctl")


def test_mode_none_takes_the_keys_and_sets_no_rule():
    cfg = config.parse("[announce]\nmode = none\nprotocol = p\n[service w]\naddress = 10.0.0.1\n"
                       "port = 80\nreweight = agent\n[ipvs]\nsloppy_tcp = no\nschedule_icmp = yes\n", "t.ini")
    assert cfg.announce == Announce(protocol="p")
    assert (cfg.ipvs.sloppy_tcp, cfg.ipvs.schedule_icmp) == (0, 1)


def test_ipvs_yes_is_accepted_in_bgp_mode():
    cfg = config.parse(BGP + "[ipvs]\nsloppy_tcp = yes\nschedule_icmp = yes\nexpire_nodest_conn = keep\n")
    assert (cfg.ipvs.sloppy_tcp, cfg.ipvs.schedule_icmp, cfg.ipvs.expire_nodest_conn) == (1, 1, None)


def line_of(text, needle):
    return [i for i, l in enumerate(text.splitlines(), 1) if needle in l][0]


HEARTBEAT = ("[heartbeat]\nkey_file = /etc/lvskit/hb.key\nvip_interface = eth0\n"
             "[node a]\npath.lan = 10.0.0.1\n[node b]\npath.lan = 10.0.0.2\n")

BAD = [
    # (text, the line's marker, where, words)
    (BGP.replace("mode = bgp", "mode = ecmp"), "mode = ecmp", "[announce] mode",
     "'ecmp' is not one of none, bgp"),
    (BGP.replace("mode = bgp", "mode = bgp\nprotocol = 1vip"), "protocol = 1vip", "[announce] protocol",
     "'1vip' is not a BIRD protocol name"),
    (BGP.replace("mode = bgp", "mode = bgp\nprotocol = lvs-vip"), "protocol = lvs-vip", "[announce] protocol",
     "not a BIRD protocol name"),
    (BGP.replace("mode = bgp", "mode = bgp\ninclude = bird/vips.conf"), "include =", "[announce] include",
     "'bird/vips.conf' is not an absolute path"),
    (BGP.replace("mode = bgp", "mode = bgp\ninclude = /etc/bird/"), "include =", "[announce] include",
     "want the absolute path of a file"),
    (BGP.replace("mode = bgp", "mode = bgp\nbirdc = birdc -s '/run/bird"), "birdc =", "[announce] birdc",
     "cannot split the command"),
    (BGP.replace("mode = bgp", "mode = bgp\nevery = 1s"), "every =", "[announce] every", "unknown key"),
    (BGP.replace("[announce]", "[announce bird]"), "[announce bird]", "[announce bird]", "takes no name"),
    (BGP + HEARTBEAT, "[heartbeat]", "[heartbeat]",
     "active-passive failover does not mix with [announce] mode = bgp"),
    (BGP.replace("scheduler = mh\nsched_flags = mh-port,", "scheduler = wlc\nsched_flags = "),
     "scheduler = wlc", "[service www] scheduler", "'wlc' with [announce] mode = bgp"),
    (BGP.replace("scheduler = mh\nsched_flags = mh-port\n", ""), "[service www6]", "[service www6] scheduler",
     "'wlc' with [announce] mode = bgp"),       # the default scheduler: the section's line
    (BGP.replace("mh-port,mh-fallback", "mh-port"), "sched_flags = mh-port", "[service www] sched_flags",
     "a checked service in [announce] mode = bgp needs mh-fallback"),
    (BGP.replace("sched_flags = mh-port,mh-fallback\n", ""), "[service www]", "[service www] sched_flags",
     "needs mh-fallback"),
    (BGP + "reweight = agent\n", "reweight = agent", "[service www6] reweight",
     "reweight = agent with [announce] mode = bgp"),
    (BGP + "[ipvs]\nsloppy_tcp = no\n", "sloppy_tcp", "[ipvs] sloppy_tcp",
     "no with [announce] mode = bgp"),
    (BGP + "[ipvs]\nschedule_icmp = keep\n", "schedule_icmp", "[ipvs] schedule_icmp",
     "keep with [announce] mode = bgp"),
    (BGP + "[service mark]\nfwmark = 3\nscheduler = mh\nreal.10.0.0.9 = weight=1\n", "fwmark = 3",
     "[service mark] fwmark", "a firewall-mark service has none"),
]


@pytest.mark.parametrize("text, marker, where, words", BAD)
def test_bad_announce_config_one_line_naming_file_line_section_key(text, marker, where, words):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "/etc/lvskit/lvskit.ini")
    msg = str(e.value)
    assert msg.startswith(f"/etc/lvskit/lvskit.ini:{line_of(text, marker)}: {where}: "), msg
    assert words in msg and "\n" not in msg
    assert e.value.code == NOT_CONFIGURED


def test_check_config_exit_6_one_line(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text(BGP + "reweight = http\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "-c", str(path),
                        "--check-config"], capture_output=True, text=True,
                       env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    assert (p.returncode, p.stdout) == (6, "")
    assert p.stderr.count("\n") == 1 and f"{path}:" in p.stderr and "[service www6] reweight" in p.stderr
    path.write_text(BGP)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "ipvs-sync"), "-c", str(path),
                        "--check-config"], capture_output=True, text=True,
                       env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
