"""The three failover scripts as subprocesses: help, refusals, dry run, real datagrams on loopback."""
import os
import socket
import subprocess

import pytest

from lvskit import config, heartbeat, rolefile
from lvskit.errors import NOT_CONFIGURED, OK, PERMISSION

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = b"0123456789abcdef0123456789abcdef"


def run(name, *args):
    return subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bin", name)] + list(args),
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))


@pytest.fixture
def peer_b():
    """Node b's heartbeat socket, bound (port chosen by the kernel) for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        yield s


@pytest.fixture
def conf(tmp_path, peer_b):
    key = tmp_path / "hb.key"
    key.write_bytes(KEY)
    os.chmod(key, 0o600)
    port = peer_b.getsockname()[1]
    path = tmp_path / "lvskit.ini"
    path.write_text(f"""
[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[heartbeat]
key_file = {key}
vip_interface = lo
vips = 127.0.0.99/32
port = {port}
sync_interface = eth1
on_acquire = /bin/true
[node a]
priority = 200
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
""")
    return path, key, peer_b


@pytest.mark.parametrize("name", ["hb-send", "hb-listen", "takeover"])
def test_help_has_examples_and_exit_codes(name):
    r = run(name, "--help")
    assert r.returncode == OK and "exit codes" in r.stdout and "examples" in r.stdout


@pytest.mark.parametrize("name", ["hb-send", "hb-listen"])
def test_world_readable_key_is_refused(conf, name):
    if os.geteuid() != 0:
        pytest.skip("the key must be root's, or the ownership check answers first")
    path, key, _ = conf
    os.chmod(key, 0o644)
    r = run(name, "-c", str(path), "--node", "a")
    assert r.returncode == PERMISSION
    assert f"{key}: key file is accessible by others (mode 644" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_no_heartbeat_section_and_unknown_node(tmp_path, conf):
    plain = tmp_path / "plain.ini"
    plain.write_text("[global]\ndirector = x\n")
    for name in ("hb-send", "hb-listen", "takeover"):
        r = run(name, "-c", str(plain))
        assert r.returncode == NOT_CONFIGURED and "[heartbeat]" in r.stderr
    r = run("hb-send", "-c", str(conf[0]), "--node", "nobody")
    assert r.returncode == NOT_CONFIGURED and "no [node nobody]" in r.stderr


def test_takeover_dry_run_prints_the_plan_in_order(conf):
    r = run("takeover", "-n", "-c", str(conf[0]))
    lines = r.stdout.splitlines()
    assert r.returncode == OK
    assert lines[0] == "ip addr add 127.0.0.99/32 dev lo"
    assert lines[1].startswith("arping -U")
    assert "ipvsadm --start-daemon master --mcast-interface eth1 --syncid 0" in lines
    assert lines[-1] == "/bin/true"
    r = run("takeover", "-n", "--release", "-c", str(conf[0]))
    assert "ip addr del 127.0.0.99/32 dev lo" in r.stdout
    assert "ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 0" in r.stdout


def test_hb_send_datagrams_verify_and_carry_the_role(conf):
    path, _, s = conf
    # the role from the role file, not from whether this host's lo happens to hold 127.0.0.99
    rolefile.write_role(config.load(str(path)), "standby")
    r = run("hb-send", "-c", str(path), "--node", "a", "--count", "3", "--interval", "0.01")
    assert r.returncode == OK, r.stderr
    rx = heartbeat.Receiver(KEY, {"a": {"lo": "127.0.0.1"}}, "b")
    beats = [rx.accept(*_recv(s)) for _ in range(3)]
    assert [b.seq for b in beats] == [1, 2, 3]
    assert {(b.name, b.state, b.priority) for b in beats} == {("a", "standby", 200)}
    # a second run is a new generation, so its seq 1 is no replay
    run("hb-send", "-c", str(path), "--node", "a", "--count", "1")
    again = rx.accept(*_recv(s))
    assert again.seq == 1 and again.generation > beats[0].generation


def _recv(s):
    data, source = s.recvfrom(512)
    return data, source[0]


def test_force_goes_with_release_only(conf):
    r = run("takeover", "--force", "-c", str(conf[0]))
    assert r.returncode == 2 and "--force goes with --release" in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--interval", "0"], "--interval 0"),        # was: silently the config's interval
    (["--interval", "nan"], "--interval nan"),
    (["--interval=-1"], "--interval -1"),
    (["--count", "-1"], "--count -1"),
    (["--count", "0"], "--count 0"),
])
def test_hb_send_refuses_bad_numbers(conf, args, words):
    r = run("hb-send", "-c", str(conf[0]), "--node", "a", *args)
    assert r.returncode == 2 and words in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["hb-send", "hb-listen"])
def test_key_file_that_is_a_directory_is_one_line(conf, tmp_path, name):
    path, key, _ = conf
    os.unlink(key)
    os.mkdir(key, 0o700)
    r = run(name, "-c", str(path), "--node", "a", "--count", "1") if name == "hb-send" else \
        run(name, "-c", str(path), "--node", "a")
    assert r.returncode == NOT_CONFIGURED and f"{key}: key file is not a regular file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_state_dir_that_cannot_be_written_is_one_line_and_beats_go_on(conf, tmp_path):
    path, _, s = conf
    (tmp_path / "plainfile").write_text("")
    text = path.read_text().replace(f"state_dir = {tmp_path}/state", f"state_dir = {tmp_path}/plainfile/state")
    path.write_text(text)
    r = run("hb-send", "-c", str(path), "--node", "a", "--count", "1")
    assert r.returncode == OK and "hb-generation.json: cannot write it" in r.stderr
    # the failed read is a line of its own; no traceback
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert _recv(s)


def test_run_dir_that_cannot_be_written_is_one_line(conf, tmp_path):
    path, _, _ = conf
    (tmp_path / "plainfile").write_text("")
    path.write_text(path.read_text().replace(f"run_dir = {tmp_path}/run", f"run_dir = {tmp_path}/plainfile/run"))
    for name in ("hb-send", "hb-listen", "takeover"):
        r = run(name, "-c", str(path), *(["--node", "a"] if name != "takeover" else []))
        assert r.returncode == PERMISSION and "plainfile/run" in r.stderr, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
