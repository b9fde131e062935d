#!/usr/bin/python3
"""Benchmark a check-real round against servers that misbehave: its wall time against its bound.

usage: bench/slow_round.py [--rounds 7] [--http 250]

1,000 real servers on 127.0.x.y, served by a process of their own (the unit
tests' tests/unit/loopback.py): behind http good ones and ones that trickle
their headers, trickle their body or say nothing; behind ssh good banners,
trickled banners and silence; behind tcp good ones and ones that never
accept; and dead ones.  check_timeout = 1 s: a round must end within the
largest check_timeout plus one second.  Prints each round's wall time
(checkreal.run_round: probes and state machine), then min/median/max.
--http sets how many of the 1,000 are http (each costs the prober about a
millisecond of CPU: see README, check-real).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))

import loopback  # noqa: E402
from lvskit import checkreal, config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--http", type=int, default=250)
    args = ap.parse_args()
    n_http, n_ssh = args.http, min(300, 1000 - args.http - 20)
    n_tcp = 1000 - n_http - n_ssh - 20
    addresses = iter(f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in range(1000))
    groups = {"web": [], "ssh": [], "tcp": [], "gone": []}
    served, keep = [], []
    http_mix = ["good", "trickle-head", "trickle-body", "silent"]
    ssh_mix = ["banner", "trickle-line", "silent"]
    for i in range(n_http):
        s = loopback.listener(next(addresses))
        served.append((s, http_mix[i % 4]))
        groups["web"].append(s.getsockname())
    for i in range(n_ssh):
        s = loopback.listener(next(addresses))
        served.append((s, ssh_mix[i % 3]))
        groups["ssh"].append(s.getsockname())
    for i in range(n_tcp):
        s = loopback.listener(next(addresses))
        served.append((s, "silent"))
        groups["tcp"].append(s.getsockname())
    for _ in range(10):
        s, fillers = loopback.never_accepting(next(addresses))
        keep += [s] + fillers
        groups["tcp"].append(s.getsockname())
    for _ in range(10):
        s = loopback.refused(next(addresses))
        keep.append(s)
        groups["gone"].append(s.getsockname())
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "unit", "loopback.py")]
                              + [f"{s.fileno()}={b}" for s, b in served],
                              pass_fds=[s.fileno() for s, _ in served], stdout=subprocess.PIPE, text=True)
    try:
        for s, _ in served:
            s.close()
        assert server.stdout.readline() == "serving\n"
        text = "[global]\nstate_dir = /nonexistent\nrun_dir = /nonexistent\n"
        for i, (name, kind) in enumerate((("web", "http"), ("ssh", "ssh"), ("tcp", "tcp"), ("gone", "tcp"))):
            text += (f"[service {name}]\naddress = 10.0.0.{i + 1}\nport = 80\nforward = nat\ncheck = {kind}\n"
                     f"check_timeout = 1\ncheck_fall = 1\n"
                     + "".join(f"real.{a} = port={p}\n" for a, p in groups[name]))
        cfg = config.parse(text, "slow_round.ini")
        times = []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            checkreal.run_round(cfg, {}, {})
            times.append(time.monotonic() - t0)
            print(f"round {times[-1]:.3f} s")
        print(f"1,000 servers ({n_http} http, {n_ssh} ssh, {n_tcp + 10} tcp, 10 dead), check_timeout 1 s, "
              f"bound 2 s: min {min(times):.3f} median {statistics.median(times):.3f} max {max(times):.3f} s")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
