#!/usr/bin/python3
"""Benchmark check-real: 1,000 real servers in network namespaces on the host.

usage: bench/check_real.py [--n 1000] [--rounds 5] [--trials 5] [--write]

Measures, with the checker in its own namespace (bench/netns_reals.py):
- one round of TCP checks and one of HTTP checks against N live listeners:
  wall time, CPU time (user+sys of the checker process, threads included)
  and the checker's peak RSS.  A round is checkreal.once(): probes, state
  machine, state file, planner (against the fake table: the host has no IPVS);
- the same round with 10 dead servers (probes time out) next to N live ones,
  concurrently (check-real) and one probe after the other (how ldirectord
  and mon check: a round costs the sum of the timeouts);
- detection latency: check-real --every 1 (check_interval 1, check_fall 3)
  runs over N servers; one server's listener is killed at a random moment;
  latency = kill -> the planner's weight-0 operation reaching the table.
With --write, the figures go into bench/README.md's check-real section.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
PY = "/usr/bin/python3"


def config_text(state, addrs, kind, port, timeout=1.0, interval=1.0, fall=3, rise=2):
    lines = ["[global]", f"state_dir = {state}/state", f"run_dir = {state}/run",
             "[service bench]", "address = 10.200.0.100", f"port = {port}", f"check = {kind}",
             f"check_timeout = {timeout}", f"check_interval = {interval}", f"check_fall = {fall}",
             f"check_rise = {rise}"]
    lines += [f"real.{a} =" for a in addrs]
    return "\n".join(lines) + "\n"


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- inside the checker's namespace ------------------------------------------------

def inside_round(args):
    os.environ["LVSKIT_NO_SYSLOG"] = "1"
    from lvskit import checkreal, config, health, log
    from fakekernel import FakeKernel as MemoryTable
    log.setup("bench", use_syslog=False)
    from netns_reals import Reals
    addrs = Reals.addresses(args.n) + Reals.dead(args.dead)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.parse(config_text(tmp, addrs, args.kind, args.port, timeout=args.timeout), "bench.ini")
        if args.kind == "http":
            import requests  # noqa: F401  (import cost is not a round's cost)
        kernel = MemoryTable()
        tracks, checked = {}, {}
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        walls, cpus, downs = [], [], []
        for _ in range(args.rounds):
            c0, t0 = _cpu(), time.monotonic()
            if args.sequential:
                from lvskit import checks
                probes = [checks.probe_for(vs.check, r.dest) for vs in cfg.services for r in vs.reals]
                results = {}
                for p in probes:
                    results.update(checks.run([p]))
                downs.append(sum(1 for r in results.values() if r.status != "up"))
            else:
                rnd, tracks, checked = checkreal.once(cfg, kernel, tracks, checked)
                downs.append(sum(1 for r in rnd.rows if r.after.up is False))
            walls.append(time.monotonic() - t0)
            cpus.append(_cpu() - c0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": walls, "cpu": cpus, "rss_kb": rss, "rss0_kb": rss0, "down": downs}))


class Found(Exception):
    pass


def inside_latency(args):
    os.environ["LVSKIT_NO_SYSLOG"] = "1"
    from lvskit import checkreal, config, log
    from fakekernel import FakeKernel as MemoryTable
    from lvskit.plan import EDIT_DEST
    log.setup("bench", use_syslog=False)
    from netns_reals import Reals
    addrs = Reals.addresses(args.n) + [args.target]
    killed = {}

    class StampKernel(MemoryTable):
        def execute(self, ops):
            out = super().execute(ops)
            for op in ops:
                if op.kind == EDIT_DEST and op.dest.address == args.target and op.dest.weight == 0:
                    raise Found(time.monotonic())
            return out

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.ini")
        with open(path, "w") as f:
            f.write(config_text(tmp, addrs, "tcp", args.port, timeout=0.5, interval=args.interval,
                                fall=args.fall))
        cfg = config.load(path)

        def kill():
            time.sleep(args.warmup + random.uniform(0, args.interval))
            killed["t"] = time.monotonic()
            os.kill(args.pid, 9)
        threading.Thread(target=kill, daemon=True).start()
        try:
            checkreal.run(cfg, path, every=args.interval, kernel=StampKernel())
        except Found as e:
            print(json.dumps({"latency": e.args[0] - killed["t"]}))


# --- on the host ---------------------------------------------------------------------

def measure(reals, **kw):
    argv = [PY, os.path.abspath(__file__), "--inside"]
    for k, v in kw.items():
        if v is True:
            argv.append(f"--{k}")
        else:
            argv += [f"--{k}", str(v)]
    r = reals.in_dir(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summary(name, m, n):
    w, c = statistics.median(m["wall"]), statistics.median(m["cpu"])
    return (f"| {name} | {n} | {w:.3f} s (max {max(m['wall']):.3f}) | {c:.3f} s | "
            f"{m['rss_kb'] / 1024:.0f} MiB ({m['rss0_kb'] / 1024:.0f} before) |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inside", action="store_true")
    ap.add_argument("--mode", default="round")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dead", type=int, default=0)
    ap.add_argument("--kind", default="tcp")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sequential", action="store_true")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--fall", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--target")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.inside:
        return inside_latency(args) if args.mode == "latency" else inside_round(args)

    from netns_reals import Reals
    reals = Reals("crb")
    try:
        addrs = Reals.addresses(args.n)
        reals.serve(addrs, 80, "tcp")
        reals.serve(addrs, 8080, "http")
        load = os.getloadavg()
        rows = []
        tcp = measure(reals, n=args.n, kind="tcp", port=80, rounds=args.rounds)
        assert all(d == 0 for d in tcp["down"]), tcp["down"]
        rows.append(summary("tcp, all up", tcp, args.n))
        http = measure(reals, n=args.n, kind="http", port=8080, rounds=args.rounds)
        assert all(d == 0 for d in http["down"]), http["down"]
        rows.append(summary("http, all up", http, args.n))
        dead = measure(reals, n=args.n, dead=10, kind="tcp", port=80, rounds=3)
        assert all(d == 10 for d in dead["down"]), dead["down"]
        rows.append(summary("tcp, 10 dead (timeout 1 s), concurrent", dead, args.n + 10))
        seq = measure(reals, n=args.n, dead=10, kind="tcp", port=80, rounds=1, sequential=True)
        rows.append(summary("tcp, 10 dead (timeout 1 s), sequential like ldirectord/mon", seq, args.n + 10))
        lat = []
        for i in range(args.trials):
            target = Reals.addresses(1, skip=args.n + i)[0]
            p = reals.serve([target], 80, "tcp")
            lat.append(measure(reals, mode="latency", n=args.n, port=80, pid=p.pid, target=target,
                               interval=args.interval, fall=args.fall)["latency"])
        bound = args.fall * args.interval + 0.5
        load_after = os.getloadavg()
    finally:
        reals.close()
    text = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on the host (2 cores), load average "
        f"{load[0]:.2f} before, {load_after[0]:.2f} after; `bench/check_real.py --n {args.n}`.",
        "",
        "| round | servers | wall, median of rounds | CPU | checker peak RSS |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Detection latency (listener killed -> weight-0 operation reaches the table), "
        f"check_interval {args.interval:g} s, check_fall {args.fall}, {args.n + 1} servers, "
        f"{args.trials} trials: " + ", ".join(f"{x:.2f}" for x in sorted(lat)) +
        f" s (bound fall x interval + 0.5 = {bound:g} s; max {max(lat):.2f} s).",
    ])
    print(text)
    if args.write:
        write_readme(text)


def write_readme(text):
    path = os.path.join(HERE, "README.md")
    head = "## check-real"
    try:
        old = open(path).read()
    except FileNotFoundError:
        old = "# Benchmarks\n\nEach script here measures one program; `make bench` runs them all.\n"
    section = f"""{head}

`bench/check_real.py`: real servers are addresses in one network namespace,
each with its own listener (one selector-loop process for all of them, one
for TCP on port 80 and one for HTTP on 8080); the checker runs in a second
namespace behind a veth pair, the way a director sees its real servers.  A
round is `checkreal.once()`: every probe, the state machine, the state file
and the planner (against the fake table: the host kernel has no IPVS; the
lab tests cover the real table).  CPU is user+sys of the checker process.
Dead servers are addresses that silently drop everything.

{text}

Anchor: ldirectord and mon check one server after the other, so a round costs
the sum of the probe times; with dead servers that is one timeout each (the
"sequential" row runs our own probes one at a time to show it).  check-real
runs every probe of a round at once: a round costs about one timeout.
"""
    if head in old:
        before, _, rest = old.partition(head)
        after = rest.split("\n## ", 1)
        old = before + section + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        old = old.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(old)


if __name__ == "__main__":
    main()
