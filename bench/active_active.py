#!/usr/bin/python3
"""A director's death: lvskit active-active against keepalived active-passive, same lab.

Runs inside the lab guest (IPVS) as root, one system after the other, in turns:

  lab/guest-run -- /usr/bin/python3 bench/active_active.py [--trials N]
  bench/run active_active           # the same, results in bench/results/

The lab is lab/aalab.py (tests/lab/test_active_active.py's): a router, three
directors on one bridge with four DR real servers (weights 2/1/1/1), a client
behind the router with 150 long-lived TCP connections (a request a second each)
and 10 new connections a second.

  lvskit      every director active: BIRD announces the VIP by BGP (BFD 100 ms
              x 3) while lvs-announce's gate allows; the router spreads flows by
              ECMP (resilient group); IPVS mh (mh-port, mh-fallback), sloppy_tcp;
              no sync daemon.
  keepalived  active-passive, as keepalived is usually run: keepalived 2.2.7 on
              d1 (priority 200) and d2 (100), VRRP v3 every 0.1 s holding the
              router's next hop for the VIP (10.200.1.100), IPVS wlc with
              TCP_CHECKs, and keepalived's lvs_sync_daemon (the kernel's sync
              daemon: master on the VRRP master); d3 stands idle.

Each trial: the lab built, the client started, 10 s of new connections counted
per director (the client's SYNs on each director's eth0: how many directors
carry traffic), then d1 (carrying traffic in both) killed as a machine (link
down, every process SIGKILLed) and 15 s of what the client saw: the long-lived
connections that went through d1 and carried on (answered afterwards by the
server they began with), those through the others, new connections that
failed (unanswered within 5 s), and the failover time (lvskit: the router's
route without d1; keepalived: d2 holding the next hop).

Writes active_active.json to --out (default $LAB_OUT, else bench/results) and
prints a markdown table.  Needs bird and keepalived on the host (the guest runs
the host's files): `make deps` installs bird2; keepalived with
`apt-get install keepalived` (its service does not start without a config).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lab"))
import aalab  # noqa: E402
from aalab import DIRECTORS, FABRIC, REALS, VIP, PORT  # noqa: E402

NEXT_HOP = FABRIC + "100"      # keepalived: VRRP's address, the router's next hop for the VIP
SPREAD = 10.0                  # seconds of new connections counted per director
WINDOW = 15.0                  # seconds judged after the death


def keepalived_conf(d, prio):
    peer = DIRECTORS["d2" if d == "d1" else "d1"]
    reals = "".join("""  real_server %s %d {
    weight %d
    TCP_CHECK { connect_timeout 1 }
  }
""" % (REALS[r], PORT, w) for r, w in aalab.WEIGHTS.items())
    return """global_defs {
  router_id %(d)s
  vrrp_version 3
  lvs_sync_daemon eth0 VI id 51
}
vrrp_instance VI {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority %(prio)d
  advert_int 0.1
  unicast_src_ip %(me)s
  unicast_peer {
    %(peer)s
  }
  virtual_ipaddress {
    %(hop)s/24 dev eth0
  }
}
virtual_server %(vip)s %(port)d {
  delay_loop 1
  lb_algo wlc
  lb_kind DR
  protocol TCP
%(reals)s}
""" % {"d": d, "prio": prio, "me": DIRECTORS[d], "peer": peer, "hop": NEXT_HOP, "vip": VIP, "port": PORT,
       "reals": reals}


class KeepalivedLab(aalab.Lab):
    PRIO = {"d1": 200, "d2": 100}

    def start_director(self, d):
        if d not in self.PRIO:
            return                      # active-passive: two directors
        conf = os.path.join(self.dir, d + "-keepalived.conf")
        with open(conf, "w") as f:
            f.write(keepalived_conf(d, self.PRIO[d]))
        with open(os.path.join(self.dir, d + "-keepalived.log"), "a") as log:
            self.net.popen(d, ["keepalived", "-n", "-l", "-D", "-f", conf,
                               "-p", os.path.join(self.dir, d + "-k.pid"),
                               "-r", os.path.join(self.dir, d + "-kv.pid"),
                               "-c", os.path.join(self.dir, d + "-kc.pid")], stdout=log, stderr=log)

    def build(self):
        super().build()
        self.net.ip("router", "route replace %s/32 via %s" % (VIP, NEXT_HOP))

    def holds(self, d):
        return NEXT_HOP + "/" in self.net.run(d, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout

    def ready(self):
        return self.holds("d1") and all(
            len(self.net.run(d, ["ipvsadm", "-Ln"]).stdout.split("->")) == len(REALS) + 2 for d in self.PRIO)


def until(what, timeout, step=0.1):
    end = time.monotonic() + timeout
    while not what():
        if time.monotonic() > end:
            return False
        time.sleep(step)
    return True


def watch_address(lab, d):
    """[time] of every `ip monitor address` line in D naming NEXT_HOP, filled by a thread."""
    seen = []
    p = lab.net.popen(d, ["ip", "-o", "monitor", "address"], stdout=subprocess.PIPE, text=True)

    def read():
        for line in p.stdout:
            if NEXT_HOP + "/" in line and not line.startswith("Deleted"):
                seen.append(time.monotonic())
    threading.Thread(target=read, daemon=True).start()
    return seen


def trial(system):
    a = aalab.options(bfd=tuple(DIRECTORS), ecmp="resilient" if system == "lvskit" else "hash-threshold")
    lab = aalab.LvskitLab(a, ROOT) if system == "lvskit" else KeepalivedLab(a)
    try:
        lab.build()
        if system == "lvskit":
            ok = lab.wait_hops(frozenset(DIRECTORS), 0, 120) is not None
        else:
            ok = until(lab.ready, 60)
        if not ok:
            raise RuntimeError("%s: the lab never got ready" % system)
        lab.start_client()
        if not until(lambda: all(c["replies"] for c in lab.snap()["long"]), 60, 0.5):
            raise RuntimeError("%s: not every long-lived connection was answered" % system)
        syn0 = {d: lab.syns(d) for d in DIRECTORS}
        time.sleep(SPREAD)
        syns = {d: lab.syns(d) - syn0[d] for d in DIRECTORS}
        before = lab.snap()
        m0 = lab.carriers(["d1", "d2", "d3"])[0]
        seen = watch_address(lab, "d2") if system == "keepalived" else None
        t_kill = lab.kill_director("d1")
        if system == "lvskit":
            t_over = lab.wait_hops(frozenset(DIRECTORS) - {"d1"}, t_kill, 30)
        else:
            until(lambda: bool(seen), 30, 0.01)
            t_over = seen[0] if seen else None
        time.sleep(WINDOW)
        after = lab.snap()
        sport = {c["id"]: c["sport"] for c in before["long"]}
        if system == "lvskit":      # the director holding the flow's freshest IPVS entry
            via = [i for i in sport if m0.get(sport[i]) == "d1"]
        else:                       # the VRRP master carries every flow (its backup holds synced copies)
            via = list(sport)
        others = [i for i in sport if i not in via]
        b = {c["id"]: c for c in before["long"]}
        aft = {c["id"]: c for c in after["long"]}

        def carried(ids):
            return sum(1 for i in ids if b[i]["state"] != "dead" and aft[i]["state"] != "dead"
                       and aft[i]["last_ok"] and aft[i]["last_ok"] > t_kill and len(aft[i]["servers"]) == 1)
        new = aalab.new_window(after, t_kill - a.new_timeout, t_kill + WINDOW - a.new_timeout)
        total = sum(syns.values())
        everyone = aalab.long_outcome(before, after, list(sport), t_kill)
        return {"system": system, "syns": syns,
                "directors_carrying": sum(1 for n in syns.values() if total and n >= 0.1 * total),
                "via_dead": len(via), "via_dead_carried_on": carried(via),
                "others": len(others), "others_carried_on": carried(others),
                "new": len(new), "new_failed": sum(1 for n in new if n["srv"] is None),
                "new_max_delay_s": round(max([n["d"] for n in new if n["d"] is not None] or [0]), 2),
                # a flow waited longer than one lost packet costs (200 ms RTO): the client noticed
                "long_stalled": everyone["stalled_over_0.15s"], "long_max_stall_s": everyone["max_stall_s"],
                "failover_s": round(t_over - t_kill, 3) if t_over else None}
    finally:
        lab.close()
        shutil.rmtree(lab.dir, ignore_errors=True)


def table(results, trials):
    rows = []
    for system in ("lvskit", "keepalived"):
        rs = [r for r in results if r["system"] == system]
        if not rs:
            continue
        via = sum(r["via_dead"] for r in rs)
        via_ok = sum(r["via_dead_carried_on"] for r in rs)
        oth = sum(r["others"] for r in rs)
        oth_ok = sum(r["others_carried_on"] for r in rs)
        fo = [r["failover_s"] for r in rs if r["failover_s"] is not None]
        rows.append("| %s | %s | %d/%d (%.1f %%) | %d/%d | %s | %s | %s |" % (
            system, "/".join(str(r["directors_carrying"]) for r in rs), via_ok, via, 100.0 * via_ok / max(1, via),
            oth_ok, oth, "/".join("%d (%.2f s)" % (r["long_stalled"], r["long_max_stall_s"]) for r in rs),
            "/".join("%d of %d" % (r["new_failed"], r["new"]) for r in rs),
            "%.3f (%.3f-%.3f)" % (statistics.median(fo), min(fo), max(fo)) if fo else "-"))
    return "\n".join([
        "%d trials each, in turns; d1 killed as a machine (link down, SIGKILL)" % trials, "",
        "| system | directors carrying new connections (per trial) | established through the dead director "
        "that carried on | through the others | long-lived that stalled > 0.15 s, of 150 (longest) | "
        "new connections failed (per trial; started from 5 s before the death to 5 s before the end) | "
        "failover s, median (min-max) |",
        "|---|---|---|---|---|---|---|"] + rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3, help="trials per system (default 3)")
    ap.add_argument("--systems", default="lvskit,keepalived", help="comma-separated (default both)")
    ap.add_argument("--out", default=os.environ.get("LAB_OUT") or os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    systems = a.systems.split(",")
    for prog in (["bird", "birdc"] if "lvskit" in systems else []) + \
            (["keepalived"] if "keepalived" in systems else []):
        if not shutil.which(prog):
            sys.exit("active_active: %s not found: install it on the host (the guest runs the host's files)" % prog)
    if not os.path.exists("/proc/sys/net/ipv4/vs"):
        subprocess.run(["modprobe", "ip_vs"], capture_output=True)
    if not os.path.exists("/proc/sys/net/ipv4/vs"):
        sys.exit("active_active: no IPVS in this kernel: run it through lab/guest-run")
    results = []
    for k in range(a.trials):
        for system in systems:
            r = trial(system)
            print(json.dumps(r), file=sys.stderr, flush=True)
            results.append(r)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "active_active.json"), "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kernel": os.uname().release,
                   "results": results}, f, indent=1)
    print(table(results, a.trials))


if __name__ == "__main__":
    main()
