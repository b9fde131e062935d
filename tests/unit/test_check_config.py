import pytest

from lvskit import config, state
from lvskit.errors import ConfigError
from lvskit.model import Dest, FORWARD

HEAD = """[global]
maint_dir = /tmp/maint
check_hook = /usr/local/bin/notify --quiet
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


def load(extra, head=HEAD):
    return config.parse(head + extra, "t.ini")


def test_defaults_and_globals():
    cfg = load("")
    vs = cfg.service("web")
    assert vs.check.kind == "none" and vs.sorry is None
    assert state.maint_dir(cfg) == "/tmp/maint" and cfg.check_hook == "/usr/local/bin/notify --quiet"
    assert state.maint_dir(config.parse("[global]\nstate_dir = /x\n")) == "/x/maint"


def test_full_http_check():
    vs = load("check = https\ncheck_interval = 2\ncheck_timeout = 0.5s\ncheck_rise = 1\ncheck_fall = 2\n"
              "check_path = /health\ncheck_host = www.ime.example\ncheck_status = 200-299, 302\n"
              "check_body = ^OK\ncheck_verify = no\ncheck_port = 8443\n"
              "check_flap_changes = 6\ncheck_flap_window = 120\ncheck_hold_down = 60\n"
              "sorry = 10.0.0.9\n").service("web")
    c = vs.check
    assert (c.kind, c.interval, c.timeout, c.rise, c.fall, c.port) == ("https", 2, 0.5, 1, 2, 8443)
    assert c.status == ((200, 299), (302, 302)) and c.body == "^OK" and not c.verify
    assert (c.flap_changes, c.flap_window, c.hold_down) == (6, 120, 60)
    assert vs.sorry == Dest("10.0.0.9", 80, FORWARD["dr"], 1)


def test_udp_external_and_sorry_forms():
    vs = load("check = udp\ncheck_send = \\x00\\x01hello\\n\ncheck_expect = ^hi\n").service("web")
    assert vs.check.send == b"\x00\x01hello\n"
    vs = load("check = external\ncheck_command = /usr/lib/nagios/plugins/check_http -H {address} -p {port}\n"
              "check_warning_weight = 25\nforward = nat\nsorry = b:8080\n").service("web")
    assert vs.check.command == ("/usr/lib/nagios/plugins/check_http", "-H", "{address}", "-p", "{port}")
    assert vs.check.warning_weight == 25
    assert vs.sorry.address == "10.0.0.2" and vs.sorry.port == 8080


@pytest.mark.parametrize("extra,key,words", [
    ("check = carrier-pigeon\n", "check", "not one of"),
    ("check = tcp\ncheck_timeout = soon\n", "check_timeout", "not a duration"),
    ("check = tcp\ncheck_timeout = 0\n", "check_timeout", "out of range"),
    ("check = tcp\ncheck_rise = 0\n", "check_rise", "out of range"),
    ("check = tcp\ncheck_fall = many\n", "check_fall", "not a whole number"),
    ("check = tcp\ncheck_path = /x\n", "check_path", "only for check = http or https"),
    ("check = http\ncheck_verify = no\n", "check_verify", "only for check = https"),
    ("check = http\ncheck_status = 200-700\n", "check_status", "within 100-599"),
    ("check = http\ncheck_status = 300-200\n", "check_status", "within 100-599"),
    ("check = http\ncheck_body = ([\n", "check_body", "bad regular expression"),
    ("check = http\ncheck_path = health\n", "check_path", "does not start with /"),
    ("check = http\ncheck_host = bad host\n", "check_host", "not a host name"),
    ("check = udp\n", "check", "needs check_send"),
    ("check = external\n", "check_command", "needs a command"),
    ("check = external\ncheck_command = check_tcp -H {address}\n", "check_command", "absolute path"),
    ("check = external\ncheck_command = /bin/x {host}\n", "check_command", "unknown placeholder"),
    ("check = external\ncheck_command = /bin/x 'open\n", "check_command", "cannot split"),
    ("check_timeout = 3\n", "check_timeout", "no check"),
    ("check = tcp\ncheck_port = 70000\n", "check_port", "out of range"),
    ("check = tcp\ncheck_wibble = 1\n", "check_wibble", "unknown key"),
    ("sorry = nowhere\n", "sorry", "neither a [server]"),
    ("sorry = a\n", "sorry", "also real.a"),
    ("sorry = 10.0.0.9:8080\n", "sorry", "only forward=nat"),
    ("sorry = fd00::9\n", "sorry", "different IP families"),
])
def test_bad_check_config_names_file_section_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        load(extra)
    err = e.value
    assert err.path == "t.ini" and err.section == "service web" and err.key == key, str(err)
    assert words in str(err)
    assert str(err).startswith(f"t.ini:{err.line}: [service web] {key}: ")
    lines = (HEAD + extra).splitlines()
    at = [i + 1 for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
    assert err.line == (at[0] if at else lines.index("[service web]") + 1)


def test_fwmark_service_needs_check_port():
    head = "[service m]\nfwmark = 7\nreal.10.0.0.1 =\n"
    with pytest.raises(ConfigError) as e:
        config.parse(head + "check = tcp\n", "t.ini")
    assert e.value.key == "check" and "check_port" in str(e.value)
    assert config.parse(head + "check = tcp\ncheck_port = 80\n").service("m").check.port == 80
    assert config.parse(head + "check = ping\n").service("m").check.kind == "ping"


def test_bad_global_keys():
    with pytest.raises(ConfigError) as e:
        config.parse("[global]\nmaint_dir = relative/dir\n", "t.ini")
    assert e.value.section == "global" and e.value.key == "maint_dir"
