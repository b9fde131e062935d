#!/usr/bin/python3
"""bench/reweight.py: reweight's polling speed and lvs-agent's own cost.

1. One round of agentpoll.poll over N agents (default 1000): the agents are
   N listening sockets on N loopback addresses (127.1.x.y, one port), served
   by one separate process with a selector that answers every connection
   with one line.  Wall time of the round, best and median of R rounds.
2. A whole reweight round (poll + controller + weights.json + plan) for one
   service with the same N real servers, against the in-memory table.
3. lvs-agent's cost per answer: inetd mode (a process per answer: CPU time
   and peak RSS of the child, from wait4's rusage) and --listen mode (CPU
   time of the server process over M answers, from /proc/PID/stat; its RSS).

Prints a Markdown section for bench/README.md.  Run it on a quiet machine:
the host has 2 cores shared with other work; the load average is printed.
"""
import argparse
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
from lvskit import agentpoll, config, reweight  # noqa: E402
from fakekernel import FakeKernel as MemoryTable  # noqa: E402

SERVER = r"""
import os, selectors, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 4096), hard))
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((f"127.1.{i // 250}.{i % 250 + 1}", port))
    s.listen(128)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            c, _ = key.fileobj.accept()
        except BlockingIOError:
            continue
        try:
            c.send(b"up 50%\n")
        except OSError:
            pass
        c.close()
"""


def addresses(n):
    return [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.1.0.1", 0))
        return s.getsockname()[1]


def bench_poll(n, rounds, port):
    targets = {a: (a, port) for a in addresses(n)}
    times, ok = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        got = agentpoll.poll(targets, timeout=5.0)
        times.append(time.perf_counter() - t0)
        ok = sum(1 for v in got.values() if v == b"up 50%\n")
    return times, ok


def bench_round(n, rounds, port):
    with tempfile.TemporaryDirectory() as d:
        lines = [f"[global]\nstate_dir = {d}\nrun_dir = {d}\n[reweight]\nagent_port = {port}\n"
                 "timeout = 5\n[service big]\naddress = 10.0.0.100\nport = 80\nreweight = agent\n"]
        lines += [f"real.{a} = weight=1\n" for a in addresses(n)]
        cfg = config.parse("".join(lines))
        from lvskit import sync
        table = MemoryTable()
        sync.reconcile(cfg, table)
        times, changed = [], []
        for i in range(rounds):
            t0 = time.perf_counter()
            out = reweight.round_(cfg, table, now=1000.0 + i)
            times.append(time.perf_counter() - t0)
            changed.append(len(out.ops))
    return times, changed


def bench_inetd(count):
    agent = os.path.join(ROOT, "bin", "lvs-agent")
    cpu, rss, wall = [], [], []
    env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
    for _ in range(count):
        t0 = time.perf_counter()
        p = subprocess.Popen([agent], stdout=subprocess.PIPE, env=env)
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        wall.append(time.perf_counter() - t0)
        assert status == 0 and out.startswith(b"up"), out
        cpu.append(ru.ru_utime + ru.ru_stime)
        rss.append(ru.ru_maxrss)
    return cpu, rss, wall


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def proc_rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def bench_listen(count):
    port = free_port()
    agent = os.path.join(ROOT, "bin", "lvs-agent")
    env = dict(os.environ, LVSKIT_NO_SYSLOG="1")
    p = subprocess.Popen([agent, "--listen", f"127.0.0.1:{port}"], env=env)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        before = proc_cpu(p.pid)
        t0 = time.perf_counter()
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                assert c.recv(64).startswith(b"up")
        wall = time.perf_counter() - t0
        used = proc_cpu(p.pid) - before
        return used, wall, proc_rss_kb(p.pid)
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="agents (default 1000)")
    ap.add_argument("-r", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--inetd", type=int, default=50, help="inetd-mode answers to time")
    ap.add_argument("--listen", type=int, default=2000, help="--listen answers to time")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.n + 4096), hard))
    load0 = os.getloadavg()
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(args.n), str(port)], stdout=subprocess.PIPE)
    try:
        assert srv.stdout.readline().strip() == b"ready"
        poll_t, ok = bench_poll(args.n, args.r, port)
        round_t, changed = bench_round(args.n, args.r, port)
    finally:
        srv.terminate()
        srv.wait()
    i_cpu, i_rss, i_wall = bench_inetd(args.inetd)
    l_cpu, l_wall, l_rss = bench_listen(args.listen)
    load1 = os.getloadavg()
    ms = lambda xs: f"best {min(xs) * 1000:.0f} ms, median {statistics.median(xs) * 1000:.0f} ms"  # noqa: E731
    print(f"""## reweight and lvs-agent (bench/reweight.py)

Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on this host ({os.cpu_count()} CPUs, Python
{sys.version.split()[0]}); load average {load0[0]:.2f} before, {load1[0]:.2f} after (other
engineers' tests share the machine).  Method: see the script's docstring.

| what | figure |
|---|---|
| poll {args.n} agents, one round ({args.r} rounds) | {ms(poll_t)}; {ok}/{args.n} answered |
| whole reweight round, {args.n} real servers (poll, controller, weights.json, plan) | {ms(round_t)}; weight edits per round {','.join(map(str, changed))} |
| lvs-agent inetd mode, per answer ({args.inetd} runs) | CPU {statistics.median(i_cpu) * 1000:.0f} ms median (user+sys), peak RSS {statistics.median(i_rss) / 1024:.1f} MiB, wall {statistics.median(i_wall) * 1000:.0f} ms |
| lvs-agent --listen, per answer ({args.listen} answers) | CPU {l_cpu / args.listen * 1e6:.0f} µs, RSS {l_rss / 1024:.1f} MiB resident, {args.listen / l_wall:.0f} answers/s one client |
""")


if __name__ == "__main__":
    main()
