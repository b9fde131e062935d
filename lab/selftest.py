#!/usr/bin/python3
"""Self-test of the lab (stdlib only).

On the host (no IPVS):   /usr/bin/python3 lab/selftest.py
In the guest (IPVS):     lab/guest-run /usr/bin/python3 lab/selftest.py

Builds Lab(mode="nat") and Lab(mode="dr").  Everywhere: the client reaches the
director's addresses and every real server answers on its own addresses
(TCP+UDP, IPv4+IPv6).  Where IPVS exists: a wrr service on the VIP (and VIP6)
with weights 3:1 gives 30/10 of 40 connections, weight 0 on one gives 40/0,
for TCP and UDP.  Prints one line per check and 'N passed, N failed'.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from topo import Lab, unique_prefix  # noqa: E402

passed = failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s %s %s" % ("ok  " if ok else "FAIL", what, detail), flush=True)


def have_ipvs():
    if os.path.exists("/proc/net/ip_vs"):
        return True
    subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    return os.path.exists("/proc/net/ip_vs")


def basic(lab):
    lab.serve("director", ports=(8080,), udp_ports=())
    for addr in (lab.addr["director"], lab.addr6["director"]):
        got = lab.connect(8080, 1, addr=addr)
        check("%s: client reaches director on %s" % (lab.mode, addr), got == {"director": 1}, dict(got))
    lab.kill_server("director")
    for name in lab.reals:
        for addr in (lab.addr[name], lab.addr6[name]):
            got = lab.connect(80, 2, addr=addr)
            check("%s: %s answers tcp on %s" % (lab.mode, name, addr), got == {name: 2}, dict(got))
            got = lab.connect(177, 2, proto="udp", addr=addr)
            check("%s: %s answers udp on %s" % (lab.mode, name, addr), got == {name: 2}, dict(got))


def ipvs(lab):
    fwd = "-m" if lab.mode == "nat" else "-g"
    hades, kama = lab.reals[:2]
    for vip, fmt in ((lab.vip, "%s:%d"), (lab.vip6, "[%s]:%d")):
        for proto, flag, port in (("tcp", "-t", 80), ("udp", "-u", 177)):
            svc = fmt % (vip, port)
            lab.ipvsadm("-A", flag, svc, "-s", "wrr")
            lab.ipvsadm("-a", flag, svc, "-r", fmt % (lab.addr[hades] if ":" not in vip else lab.addr6[hades], port), fwd, "-w", 3)
            lab.ipvsadm("-a", flag, svc, "-r", fmt % (lab.addr[kama] if ":" not in vip else lab.addr6[kama], port), fwd, "-w", 1)
            t = time.monotonic()
            got = lab.connect(port, 40, proto=proto, addr=vip)
            dt = time.monotonic() - t
            check("%s %s %s 3:1" % (lab.mode, proto, svc), got == {hades: 30, kama: 10},
                  "%s (%.2f s)" % (dict(got), dt))
            dst = fmt % (lab.addr[kama] if ":" not in vip else lab.addr6[kama], port)
            lab.ipvsadm("-e", flag, svc, "-r", dst, fwd, "-w", 0)
            got = lab.connect(port, 40, proto=proto, addr=vip)
            check("%s %s %s 3:0" % (lab.mode, proto, svc), got == {hades: 40}, dict(got))
    print(lab.ipvsadm("-Ln"), end="")


def main():
    with_ipvs = have_ipvs()
    print("IPVS %s (kernel %s)" % ("present" if with_ipvs else "absent", os.uname().release))
    for mode in ("nat", "dr"):
        t = time.monotonic()
        with Lab(prefix=unique_prefix(), mode=mode) as lab:
            t_up = time.monotonic() - t
            lab.serve()
            t_serve = time.monotonic() - t - t_up
            print("%s lab up in %.2f s, responders in %.2f s" % (mode, t_up, t_serve))
            basic(lab)
            if with_ipvs:
                ipvs(lab)
            ns = list(lab.ns.values())
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        check("%s: teardown removed all namespaces" % mode,
              not any(n in left.split() for n in ns))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
