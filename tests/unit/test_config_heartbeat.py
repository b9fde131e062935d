import pytest

from lvskit import config
from lvskit.errors import ConfigError

BASE = """
[service web]
address = 10.0.0.100
port = 80
[service web6]
address = fd00::100
port = 80
[heartbeat]
key_file = /etc/lvskit/hb.key
vip_interface = eth0
{hb}
[node midas]
priority = 200
path.lan = 10.0.0.1
path.cross = 10.9.0.1
[node estepe]
path.lan = 10.0.0.2
path.cross = 10.9.0.2
"""


def load(hb=""):
    return config.parse(BASE.format(hb=hb), "t.ini")


def test_defaults_and_nodes():
    cfg = load()
    hb = cfg.heartbeat
    assert hb.vips == ("10.0.0.100/32", "fd00::100/128")       # "the services' addresses"
    assert hb.port == 694 and hb.interval == 0.02 and hb.deadtime == 0.12 and hb.auto_failback
    assert hb.paths == ("cross", "lan")
    assert cfg.node("midas").priority == 200 and cfg.node("estepe").priority == 100
    assert cfg.node("estepe").paths == {"lan": "10.0.0.2", "cross": "10.9.0.2"}


def test_durations_and_lists():
    hb = load("interval = 25ms\ndeadtime = 0.15\nwarntime = 50ms\ninitdead = 3s\n"
              "vips = 10.0.0.100/24, fd00::100\nauto_failback = no\nfailback_delay = 30\n"
              "multicast = 239.1.2.3\nsync_interface = eth1\nsyncid = 9\n"
              "on_acquire = /usr/local/sbin/hook 'a b'").heartbeat
    assert (hb.interval, hb.deadtime, hb.warntime, hb.initdead) == (0.025, 0.15, 0.05, 3.0)
    assert hb.vips == ("10.0.0.100/24", "fd00::100/128")
    assert not hb.auto_failback and hb.failback_delay == 30 and hb.multicast == "239.1.2.3"
    assert hb.sync_interface == "eth1" and hb.syncid == 9


def test_handover_grace_is_five_seconds_unless_set_and_zero_turns_it_off():
    assert load().heartbeat.handover_grace == 5.0
    assert load("handover_grace = 8s").heartbeat.handover_grace == 8.0
    assert load("handover_grace = 0").heartbeat.handover_grace == 0.0


def test_the_fast_setting():
    """lvskit.ini(5)'s fast setting: 10 ms beats, deadtime three of them; warntime half of it."""
    hb = load("interval = 10ms\ndeadtime = 30ms\n").heartbeat
    assert (hb.interval, hb.deadtime, hb.warntime) == (0.01, 0.03, 0.015)


@pytest.mark.parametrize("line, key, words", [
    ("deadtime = 30ms", "deadtime", "two intervals"),
    ("warntime = 1s", "warntime", "shorter than deadtime"),
    ("interval = fast", "interval", "not a duration"),
    ("interval = 5ms", "interval", "out of range 0.01..60 s"),
    ("interval = 10ms\ndeadtime = 15ms", "deadtime", "two intervals"),
    ("multicast = 10.0.0.9", "multicast", "not a multicast"),
    ("vips = 10.0.0.300", "vips", "not an address"),
    ("unicast = no", "unicast", "multicast"),
    ("syncid = 256", "syncid", "out of range"),
    ("handover_grace = 61s", "handover_grace", "out of range 0..60 s"),
    ("handover_grace = soon", "handover_grace", "not a duration"),
    ("on_release = echo 'unbalanced", "on_release", "cannot split"),
    ("colour = blue", "colour", "unknown key"),
])
def test_bad_heartbeat_values_name_line_section_key(line, key, words):
    with pytest.raises(ConfigError) as e:
        load(line)
    text = str(e.value)
    assert text.startswith("t.ini:") and "[heartbeat]" in text and key in text and words in text


def test_node_errors():
    with pytest.raises(ConfigError, match=r"\[node estepe\] path.lan: .* not an IPv4"):
        config.parse(BASE.format(hb="").replace("path.lan = 10.0.0.2", "path.lan = nowhere"), "t.ini")
    with pytest.raises(ConfigError, match="at least one path"):
        config.parse(BASE.format(hb="").replace("path.lan = 10.0.0.2\npath.cross = 10.9.0.2", ""), "t.ini")
    with pytest.raises(ConfigError, match="two"):
        config.parse(BASE.format(hb="").split("[node estepe]")[0], "t.ini")
    with pytest.raises(ConfigError, match="need a .heartbeat. section"):
        config.parse("[node a]\npath.x = 10.0.0.1\n", "t.ini")
    with pytest.raises(ConfigError, match="vips = services"):
        text = BASE.format(hb="").split("[heartbeat]")[1]
        config.parse("[service fw]\nfwmark = 3\n[heartbeat]" + text, "t.ini")


def test_seed_example_has_director_and_spare():
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = config.load(os.path.join(root, "conf", "lvskit.ini"))
    assert [(n.name, n.priority) for n in cfg.nodes] == [("midas", 200), ("estepe", 100)]
    assert cfg.heartbeat.vips == ("192.168.45.26/32",)      # the services' VIP
    assert cfg.heartbeat.paths == ("cross", "lan")


@pytest.mark.parametrize("old, new, where", [
    ("[node midas]", "[node mídas]", "[node mídas]"),
    ("[node midas]", "[node midas²]", "[node midas²]"),
])
def test_names_are_ascii_only(old, new, where):
    # they go on the wire as ASCII: a non-ASCII name used to validate, then crash hb-send
    with pytest.raises(ConfigError) as e:
        config.parse(BASE.format(hb="").replace(old, new), "t.ini")
    text = str(e.value)
    assert text.startswith("t.ini:") and where in text and "ASCII" in text


@pytest.mark.parametrize("hb, old, new, where, words", [
    # an IPv6 group over IPv4 paths, and no unicast: nobody hears anybody
    ("multicast = ff02::94\nunicast = no", "", "", "[heartbeat] multicast", "no path address"),
    # no path name in common: unicast goes nowhere
    ("", "path.lan = 10.0.0.2\npath.cross = 10.9.0.2", "path.other = 10.8.0.2",
     "[node estepe] path.other", "no heartbeat path shared with [node midas]"),
    # same path name, different families: still nothing in common
    ("", "path.lan = 10.0.0.2\npath.cross = 10.9.0.2", "path.lan = fd00::2",
     "[node estepe] path.lan", "no heartbeat path shared"),
    # an address on two nodes: the source check would take one for the other
    ("", "path.cross = 10.9.0.2", "path.cross = 10.9.0.1", "[node estepe] path.cross",
     "also [node midas] path.cross"),
])
def test_nodes_that_could_never_hear_each_other_are_refused(hb, old, new, where, words):
    text = BASE.format(hb=hb).replace(old, new) if old else BASE.format(hb=hb)
    with pytest.raises(ConfigError) as e:
        config.parse(text, "t.ini")
    msg = str(e.value)
    assert msg.startswith("t.ini:") and where in msg and words in msg, msg
    assert "\n" not in msg


def test_multicast_needs_no_common_path_name():
    text = BASE.format(hb="multicast = 239.255.0.94\nunicast = no").replace(
        "path.lan = 10.0.0.2\npath.cross = 10.9.0.2", "path.other = 10.8.0.2")
    assert config.parse(text, "t.ini").heartbeat.paths == ("cross", "lan", "other")
