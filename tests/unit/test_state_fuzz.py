"""Every state file in wrong shapes, read by every script that reads it, as real processes.

Each file gets at least 20 wrong shapes: other JSON types, nesting 100,000
deep, NaN and Infinity, numbers too large for their use, binary, UTF-16,
truncation, an empty file, a directory or a FIFO in its place, and values of
the wrong type or range where the file's readers look.  Each script runs once
per shape, with every file it reads in that shape at once, and must: print no
traceback, exit with its documented code, and warn about each of the files it
reads, by name.  The scripts that plan the kernel run under fakekernel.py (the
script unchanged, an empty fake table in place of IPVS).  Runs go four at a
time: each has its own directory.
"""
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = os.path.join(ROOT, "tests", "unit", "fakekernel.py")
KEY = b"0123456789abcdef0123456789abcdef"
DIRECTORY, FIFO = "<a directory>", "<a FIFO>"


def _json(value):
    return json.dumps(value).encode()


# Wrong for every JSON state file.  (label, bytes or DIRECTORY/FIFO)
GENERIC = [
    ("a string", b'"x"'), ("a number", b"5"), ("a list", b"[1]"), ("true", b"true"), ("null", b"null"),
    ("nested lists", b"[" * 100_000), ("nested objects", b'{"a":' * 100_000),
    ("NaN", b"NaN"), ("-Infinity", b'{"services": -Infinity}'), ("1e400", b"1e400"),
    ("5,000 digits", b"1" * 5000), ("binary", bytes(range(256)) * 4),
    ("empty", b""), ("blanks", b" \n\t "), ("a directory", DIRECTORY), ("a FIFO", FIFO),
]


def shapes(good, wrong):
    """GENERIC, the good value truncated and in UTF-16, and the file's own wrong values."""
    text = json.dumps(good)
    return GENERIC + [("truncated", text[:len(text) // 2].encode()),
                      ("UTF-16", text.encode("utf-16"))] + [(label, _json(v)) for label, v in wrong]


def health_shapes(entry):
    def one(**kw):
        return {"services": {"web": {entry: kw}}}
    return shapes(one(state="up", ok=1, since=1.0), [
        ("held_until 1e308", one(state="held", held_until=1e308)),
        ("ok 2**64", one(ok=2**64)), ("since -1", one(since=-1)),
        ("changes nested", one(changes=[[[[1]]]])), ("reason an object", one(reason={"a": 1})),
        ("state unknown", one(state="dead")), ("services a list", {"services": [1]}),
        ("checked a string", {"checked": {"web": "x"}}), ("weight_percent 1e308", one(weight_percent=1e308))])


def weights_shapes(entry):
    def one(**kw):
        return {"services": {"web": {entry: kw}}}
    return shapes(one(weight=100, smooth=0.5), [
        ("weight 1e308", one(weight=1e308)), ("weight 70000", one(weight=70000)),
        ("weight true", one(weight=True)), ("smooth 1e308", one(weight=1, smooth=1e308)),
        ("since a string", one(weight=1, since="x")), ("entries a list", {"services": {"web": [1]}}),
        ("out a number", one(weight=1, out=2))])


ROLE = shapes({"role": "active"}, [
    ("role unknown", {"role": "boss"}), ("role a number", {"role": 5}), ("role a list", {"role": ["active"]}),
    ("no role", {}), ("role 40,000 characters", {"role": "active" * 6000})])

PEERS = shapes({"written": 1.0, "peers": {"b": {"state": "active", "alive": True}}}, [
    ("written 1e308", {"written": 1e308}), ("paths strings", {"peers": {"b": {"paths": {"lo": "x"}}}}),
    ("peers a list", {"peers": [1]}), ("alive a string", {"peers": {"b": {"alive": "yes"}}}),
    ("priority 2**70", {"peers": {"b": {"priority": 2**70}}}), ("state a list", {"peers": {"b": {"state": [1]}}})])

GENERATION = shapes({"generation": 7}, [
    ("2**64 - 1", {"generation": 2**64 - 1}), ("-1", {"generation": -1}), ("1.5", {"generation": 1.5}),
    ("a string", {"generation": "7"}), ("true", {"generation": True}), ("1e308", {"generation": 1e308})])

OWNED = shapes({"services": [[2, 6, "10.0.0.100", 80, 0]]}, [
    ("too many fields", {"services": [[1, 2, 3, 4, 5, 6, 7]]}), ("services a string", {"services": "abc"}),
    ("a huge address", {"services": [[2, 6, "1" * 5000, 80, 0]]}), ("fields of a string", {"services": ["abcde"]})])

AGENT = [(label, data) for label, data in [
    ("a typo", b"drian\n"), ("punctuated", b"Drain!\n"), ("cut", b"mai"), ("a percentage", b"UP%\n"),
    ("1e308", b"1e308"), ("NaN", b"NaN"), ("-1", b"-1"), ("true", b"true"), ("null", b"null"),
    ("JSON", b'{"state": "drain"}'), ("a list", b"[1]"), ("100 KB word", b"x" * 100_000),
    ("NULs", b"\0\0\0"), ("key=value", b"state=drain\n"), ("a comment", b"# drain\n"),
    ("binary", bytes(range(256))), ("UTF-16", "drain".encode("utf-16")), ("Latin-1", "dr\xe4in".encode("latin-1")),
    ("UTF-8 accent", "dr\xe1in".encode()), ("deep", b"[" * 100_000), ("a directory", DIRECTORY), ("a FIFO", FIFO)]]


def place(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if data == DIRECTORY:
        os.mkdir(path)
    elif data == FIFO:
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def net():
    """Sockets the runs use, kept bound for the whole module (no port is guessed):
    TCP listeners on 127.0.0.1 and 127.0.0.2 on one port (two up real servers),
    a UDP socket on 127.0.0.2 (the peer hb-send beats to)."""
    for _ in range(20):
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        b = socket.socket()
        try:
            b.bind(("127.0.0.2", a.getsockname()[1]))
            break
        except OSError:         # that port is taken on 127.0.0.2: take another pair
            a.close()
            b.close()
    for s in (a, b):
        s.listen(512)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.2", 0))
    yield {"port": a.getsockname()[1], "hb_port": udp.getsockname()[1]}
    for s in (a, b, udp):
        s.close()


def config(d, net, services=True):
    key = os.path.join(d, "hb.key")
    with open(key, "wb") as f:
        f.write(KEY)
    os.chmod(key, 0o600)
    text = f"""[global]
state_dir = {d}/state
run_dir = {d}/run
[reweight]
command = /bin/echo up 50%
[agent]
state_file = {d}/agent-state
[heartbeat]
key_file = {key}
vip_interface = lo
vips = 127.0.0.99/32
port = {net["hb_port"]}
realtime = no
[node a]
priority = 200
path.lo = 127.0.0.1
[node b]
path.lo = 127.0.0.2
"""
    if services:    # never for the failover scripts: their worker would plan the real kernel
        text += f"""[service web]
address = 10.0.0.100
port = {net["port"]}
check = tcp
check_timeout = 2
reweight = external
real.127.0.0.1 = weight=3
real.127.0.0.2 = weight=2
"""
    path = os.path.join(d, "lvskit.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


def files(d, port):
    """{file name: (its path, its wrong shapes, ours: the reader warns)}."""
    entry = f"127.0.0.1:{port}"
    return {"health": (f"{d}/state/health.json", health_shapes(entry), True),
            "weights": (f"{d}/state/weights.json", weights_shapes(entry), True),
            "owned": (f"{d}/state/ipvs-sync.json", OWNED, False),     # sync.load_owned: no warning asked
            "role": (f"{d}/run/takeover.json", ROLE, True),
            "peers": (f"{d}/run/hb-peers.json", PEERS, True),
            "generation": (f"{d}/state/hb-generation.json", GENERATION, True),
            "agent": (f"{d}/agent-state", AGENT, True)}


# script: (argv after the config, the files it reads, under the fake kernel, services in the config,
#          exit code (shape label -> code))
SCRIPTS = {
    "check-real --no-kernel": (["bin/check-real", "--no-kernel"], ["health"], False, True,
                               lambda label: 3 if label == "a directory" else 0),     # cannot save: UNKNOWN
    "check-real": (["bin/check-real"], ["health", "weights", "owned"], True, True,
                   lambda label: 3 if label == "a directory" else 0),
    "reweight -n": (["bin/reweight", "-n"], ["health", "weights", "owned"], True, True, lambda label: 0),
    "ipvs-sync -n": (["bin/ipvs-sync", "-n"], ["health", "weights", "owned"], True, True, lambda label: 0),
    "lvs-status": (["bin/lvs-status", "--node", "a"], ["health", "weights", "role", "peers"], True, True,
                   lambda label: 0),
    "lvs-status --json": (["bin/lvs-status", "--node", "a", "--json"], ["health", "weights", "role", "peers"],
                          True, True, lambda label: 0),
    "hb-send --count 1": (["bin/hb-send", "--node", "a", "--count", "1"], ["role", "generation"], False, False,
                          lambda label: 0),
    "takeover status": (["bin/takeover", "status"], ["role"], False, False, lambda label: 7),   # standby
    "lvs-agent": (["bin/lvs-agent"], ["agent"], False, False, lambda label: 0),
}


def one_run(tmp, net, script, i):
    """Run script with every file it reads in its i-th wrong shape; a problem's text, or None."""
    argv, reads, fake, services, code = SCRIPTS[script]
    d = os.path.join(tmp, f"{script.replace(' ', '_')}-{i}")
    os.makedirs(d)
    cfg = config(d, net, services)
    labels = {}
    for name in reads:
        path, wrong, _ = files(d, net["port"])[name]
        labels[name], data = wrong[i % len(wrong)]
        place(path, data)
    cmd = [sys.executable, "-S"] + ([FAKE] if fake else []) + [os.path.join(ROOT, argv[0]), "-c", cfg] + argv[1:]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
    problems = []
    if "Traceback" in r.stderr:
        problems.append("a traceback")
    label = labels[reads[0]]
    if r.returncode != code(label):
        problems.append(f"exit {r.returncode}, want {code(label)}")
    for name in reads:
        path, _, ours = files(d, net["port"])[name]
        if ours and f"{path}: ignoring this state file" not in r.stderr:
            problems.append(f"no warning about {os.path.basename(path)} ({labels[name]})")
    if problems:
        return f"{script} with {labels}: {'; '.join(problems)}\n{r.stderr[-2000:]}"
    return None


def hb_listen_run(tmp, net, i):
    """hb-listen --inetd (the test's own UDP socket on stdin) with takeover.json in its i-th
    wrong shape: it must start, its worker must answer (hb-listen then says "listening ...,
    role ROLE"), and it must still run; then it is stopped."""
    import threading
    import time
    d = os.path.join(tmp, f"hb-listen-{i}")
    os.makedirs(d)
    cfg = config(d, net, services=False)
    path = f"{d}/run/takeover.json"
    label, data = ROLE[i]
    place(path, data)
    place(f"{d}/state/hb-peer-generations.json", GENERIC[i % len(GENERIC)][1])
    lines = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        p = subprocess.Popen([sys.executable, "-S", os.path.join(ROOT, "bin", "hb-listen"), "-c", cfg,
                              "--node", "a", "--inetd", "-v"], stdin=s.fileno(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, LVSKIT_NO_SYSLOG="1"))
        reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None and not any(", role " in x for x in lines):
            time.sleep(0.02)
        running = p.poll() is None
        p.terminate()
        p.wait(10)
        reader.join(10)
    err = "".join(lines)
    problems = [why for why, bad in (("a traceback", "Traceback" in err),
                                     ("did not run, or never said its role", not running or ", role " not in err),
                                     ("no warning about takeover.json", f"{path}: ignoring this state file" not in err))
                if bad]
    return f"hb-listen with takeover.json {label}: {'; '.join(problems)}\n{err[-2000:]}" if problems else None


def runs(tmp, net, script):
    n = max(len(files(tmp, 0)[name][1]) for name in SCRIPTS[script][1])
    with ThreadPoolExecutor(4) as pool:
        return [p for p in pool.map(lambda i: one_run(tmp, net, script, i), range(n)) if p]


def test_every_file_has_at_least_20_wrong_shapes(tmp_path):
    for name, (_, wrong, _) in files(str(tmp_path), 80).items():
        assert len(wrong) >= 20, name
    assert {name for s in SCRIPTS.values() for name in s[1]} == set(files(str(tmp_path), 80))


def test_hb_listen_starts_whatever_the_role_file_holds(tmp_path, net):
    with ThreadPoolExecutor(4) as pool:
        problems = [p for p in pool.map(lambda i: hb_listen_run(str(tmp_path), net, i), range(len(ROLE))) if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_wrong_shapes_are_absent_with_a_warning(tmp_path, net, script):
    problems = runs(str(tmp_path), net, script)
    assert not problems, "\n".join(problems)
