#!/usr/bin/python3
"""Failover benchmark: lvskit (hb-send/hb-listen/takeover) side by side with keepalived.

Host network namespaces (tests/netns/hbtopo.py): client, director, spare on
one bridge, a second bridge for the heartbeat path.  A UDP responder on
director and spare answers with its name on port 9000 of the VIP.

  gap       a probe client sends a UDP request to the VIP every 10 ms on the
            clock (20 ms timeout, a fresh socket each, so a late answer is
            never counted; an unanswered request does not delay the next);
            the director is killed as a machine dies (links down, then SIGKILL
            of everything in its namespace); gap = kill to the first answer
            from the spare.  TRIALS trials per system, fresh namespaces each.
  handover  `takeover --release` on the active director while probing: probes lost, and
            how long `takeover --release` took (it returns once the spare is active);
            then `takeover --rejoin`, the failback (auto_failback, make-before-break):
            probes lost, and time from --rejoin to the director's first answer.
  failback  the director killed as in `gap`, the spare serving; then the director
            "rebooted" (no VIP, RUN_DIR emptied, its programs started fresh)
            and, with auto_failback (keepalived: preempt), taking the VIP back
            (the config has a TCP service on the VIP: lvskit's handover grace runs):
            probes lost (min/median/max over the trials) and the longest time
            between two answers, from its links up to 1 s after the handover;
            the longest stall of a SCHED_FIFO 10 process on the host meanwhile;
            and the failover gap of the kill.  The systems take turns.
  crash     the same, but a crash without a reboot: RUN_DIR kept (the role
            file still says "active"), no VIP.
  soak      both pairs (by default lvskit and keepalived advert_int 0.1) idle
            side by side under `stress-ng --cpu 2` for MINUTES: takeovers
            counted (all false); and the margin: the largest gaps between the
            director's heartbeats leaving it and arriving at the spare (each
            node's kernel packet times), against the spare's deadtime.
  usage     CPU and memory of the spare's hb-send, hb-listen (and the takeover
            worker) over 60 s at 20 ms and at 10 ms (deadtime 30 ms);
            then again with the spare's datagrams dropped at its own interfaces'
            queues (sink()), to tell hb-send's own cost from the veth receive
            path that a send on a veth runs for the receiving peer.
  compare   the same, for this tree and another (--against TREE: an older
            checkout) side by side: both pairs run at once, so both see the
            same load; the spares' processes are measured over the same window
            (--seconds), --runs times, which pair starts first alternating.
  fast      the fast setting against keepalived's fastest (--systems, default
            lvskit=0.01/0.03,keepalived=0.01): gap over TRIALS trials and
            failback over up to 10, the systems in turns; usage of the lvskit
            pair at that setting; then soak for MINUTES.

Systems: "lvskit" (interval 20 ms, deadtime 100 ms), "lvskit=INTERVAL/DEADTIME"
(seconds), "keepalived=ADVERT_INT" (VRRPv3 below 1 s).

Each trial is a JSON line on stdout; the summaries are kept in
bench/results/failover.json (the figures in bench/README.md come from it).

usage: bench/failover.py [gap|handover|failback|crash|soak|usage|compare|fast|all] [--trials N] [--minutes M] [--systems ...]\n                         [--against TREE --runs N --seconds S]
Needs root; installs keepalived and stress-ng with apt-get when missing.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
from hbtopo import FRONT, HB, HOST, PY, RESPONDER, VIP, Pair  # noqa: E402

RESULTS = os.path.join(HERE, "results", "failover.json")
TIMINGS = "interval = 20ms\ndeadtime = 100ms\nwarntime = 60ms\ninitdead = 1s\n"
# The fast setting README recommends, and keepalived's fastest (VRRPv3, advert_int 0.01).
FAST = "lvskit=0.01/0.03,keepalived=0.01"


def timings(system):
    """The [heartbeat] timings of a system: "lvskit" (TIMINGS) or "lvskit=INTERVAL/DEADTIME" (seconds).

    keepalived's pairs are made with TIMINGS too (their lvskit config goes unused).
    """
    if not system.startswith("lvskit="):
        return TIMINGS
    interval, deadtime = system.split("=")[1].split("/")
    return f"interval = {interval}\ndeadtime = {deadtime}\ninitdead = 1s\n"


def deadtime_of(system):
    """Seconds of silence after which the spare takes over.

    keepalived (VRRPv3): Master_Down_Interval = 3 x advert_int + skew, skew =
    (256 - priority) x advert_int / 256, the spare's priority being 100.
    """
    if system.startswith("keepalived="):
        advert = float(system.split("=")[1])
        return 3 * advert + (256 - 100) * advert / 256
    if system.startswith("lvskit="):
        return float(system.split("/")[1])
    return 0.1      # TIMINGS


# A UDP request to the VIP every 10 ms on the clock, each on a fresh socket
# with 20 ms to be answered (a late answer is never counted): one line per
# request, the time of its answer and who answered, or of its timeout and
# "-".  Requests overlap: one unanswered does not hold back the next, so the
# client asks every 10 ms through an outage too, as a busy client would.
PROBE = r"""
import select, socket, sys, time
vip = sys.argv[1]
waiting = {}                    # socket -> when its request times out
due = time.monotonic()
while True:
    now = time.monotonic()
    if now >= due:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.sendto(b'?', (vip, 9000))
        except OSError:
            pass
        waiting[s] = now + 0.02
        due += 0.01
        if due < now:           # fell behind: no burst to catch up
            due = now + 0.01
    wait = min([due] + list(waiting.values())) - time.monotonic()
    ready = select.select(list(waiting), [], [], max(0, wait))[0]
    now = time.monotonic()
    for s in ready:
        try:
            name = s.recv(100).decode()
        except OSError:
            continue            # an ICMP error: it times out below
        print('%.6f %s' % (now, name), flush=True)
        del waiting[s]
        s.close()
    for s, until in list(waiting.items()):
        if now >= until:
            print('%.6f -' % now, flush=True)
            del waiting[s]
            s.close()
"""


def ensure(program, package):
    if shutil.which(program):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True, env=env)


def load_avg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- keepalived in the same namespaces -------------------------------------------

def keepalived_conf(node, advert_int):
    me, peer = HOST[node], HOST["spare" if node == "director" else "director"]
    version = "vrrp_version 3" if advert_int < 1 else ""
    return f"""global_defs {{
  router_id {node}
  {version}
  enable_script_security
}}
vrrp_instance VI {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {200 if node == 'director' else 100}
  advert_int {advert_int}
  unicast_src_ip {FRONT}{me}
  unicast_peer {{
    {FRONT}{peer}
  }}
  virtual_ipaddress {{
    {VIP}/32 dev eth0
  }}
}}
"""


def start_keepalived(p, node, advert_int):
    d = p.node_dir[node]
    conf = os.path.join(d, "keepalived.conf")
    with open(conf, "w") as f:
        f.write(keepalived_conf(node, advert_int))
    log = open(os.path.join(p.dir, f"{node}.log"), "a")
    p.procs[node] = [
        p.popen(node, ["keepalived", "-n", "-l", "-D", "-P", "-f", conf,
                       "-p", os.path.join(d, "k.pid"), "-r", os.path.join(d, "kv.pid")],
                stdout=log, stderr=log),
        p.popen(node, RESPONDER + [node, "--udp", "9000"],
                stdout=subprocess.DEVNULL, stderr=log),
    ]


def make_pair(system, workdir, tag, service=False):
    """A pair of `system` running, the director active.  service: the config has a TCP
    service on the VIP (one real server), as a real one does, so a failback runs the
    handover grace (its nft tables; the IPVS steps are skipped: the host has no IPVS)."""
    p = Pair(f"hbb{tag}", workdir, timings=timings(system), extra="auto_failback = yes\n",
             reals=1 if service else 0)
    for node in ("director", "spare"):
        if system.startswith("lvskit"):
            p.start(node)
        else:
            start_keepalived(p, node, float(system.split("=")[1]))
    ok = p.wait(lambda: p.holds_vip("director") and not p.holds_vip("spare") and p.ask() == "director", 15)
    if not ok:
        p.close()
        raise RuntimeError(f"{system}: director never became active")
    time.sleep(1.0)     # steady state: the spare has heard plenty of heartbeats
    return p


# --- gap -----------------------------------------------------------------------------

def one_gap(system, tag):
    workdir = tempfile.mkdtemp(prefix="hbbench-")
    p = make_pair(system, workdir, tag)
    try:
        probe = p.popen("client", ["chrt", "-f", "10", PY, "-c", PROBE, VIP], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t_kill = p.kill("director")
        p.wait(lambda: p.holds_vip("spare"), 10, 0.01)
        time.sleep(0.5)
        probe.send_signal(signal.SIGTERM)
        out = probe.communicate(timeout=10)[0]
        first = None
        for line in out.splitlines():
            t, name = line.split()
            if float(t) > t_kill and name == "spare":
                first = float(t)
                break
        return None if first is None else first - t_kill
    finally:
        p.close()
        shutil.rmtree(workdir, ignore_errors=True)


def gap(systems, trials):
    """one_gap, trials times per system, the systems taking turns (so they share the load)."""
    gaps = {s: [] for s in systems}
    for i in range(trials):
        for system in systems:
            g = one_gap(system, i % 10)
            gaps[system].append(g)
            print(json.dumps({"bench": "gap", "system": system, "trial": i, "gap": g}), flush=True)
    out = {}
    for system, got in gaps.items():
        good = [g for g in got if g is not None]
        out[system] = {"trials": trials, "failed": trials - len(good),
                       "median": statistics.median(good) if good else None,
                       "min": min(good, default=None), "max": max(good, default=None),
                       "gaps": got, "load": load_avg()}
    return out


# --- planned handover -----------------------------------------------------------------

def _probe(p):
    return p.popen("client", ["chrt", "-f", "10", PY, "-c", PROBE, VIP], stdout=subprocess.PIPE, text=True)


def _answers(probe):
    """[(monotonic time, who answered or '-')] of a probe, stopped now."""
    probe.send_signal(signal.SIGTERM)
    return [(float(t), name) for t, name in
            (line.split() for line in probe.communicate(timeout=10)[0].splitlines())]


def handover(trials):
    """`takeover --release` on the director, then `takeover --rejoin`: the failback (make-before-break)."""
    lost, back_lost, back_after, took = [], [], [], []
    for i in range(trials):
        workdir = tempfile.mkdtemp(prefix="hbbench-")
        p = make_pair("lvskit", workdir, i % 10)
        try:
            probe = _probe(p)
            time.sleep(0.5)
            t = time.monotonic()
            r = p.run("director", p.tool("director", "takeover", "--release"))
            took.append(round(time.monotonic() - t, 3))      # the spare heard "held", took the VIP, said so
            time.sleep(0.5)
            answers = [name for _, name in _answers(probe)]
            ok = r.returncode == 0 and answers[-1] == "spare" and p.holds_vip("spare")
            lost.append(answers.count("-") if ok else None)
            # auto_failback: the director, eligible again, takes the VIP first; then the spare releases
            probe = _probe(p)
            time.sleep(0.5)
            t = time.monotonic()
            rb = p.run("director", p.tool("director", "takeover", "--rejoin"))
            back = p.wait(lambda: p.holds_vip("director") and not p.holds_vip("spare"), 10, 0.01)
            time.sleep(0.5)
            answers = _answers(probe)
            ok = rb.returncode == 0 and back and answers[-1][1] == "director"
            back_lost.append(sum(name == "-" for _, name in answers) if ok else None)
            first = next((a for a, name in answers if a > t and name == "director"), None)
            back_after.append(round(first - t, 3) if ok and first else None)
            print(json.dumps({"bench": "handover", "trial": i, "lost": lost[-1], "rc": r.returncode,
                              "release_s": took[-1],
                              "failback_lost": back_lost[-1], "failback_after": back_after[-1],
                              "rejoin_rc": rb.returncode}), flush=True)
        finally:
            p.close()
            shutil.rmtree(workdir, ignore_errors=True)
    good = [x for x in lost if x is not None]
    back_good = [x for x in back_lost if x is not None]
    after = [x for x in back_after if x is not None]
    return {"trials": trials, "failed": trials - len(good), "max_lost": max(good, default=None),
            "lost": lost, "failback_failed": trials - len(back_good),
            "failback_max_lost": max(back_good, default=None), "failback_lost": back_lost,
            "failback_after_median": statistics.median(after) if after else None,
            "failback_after_max": max(after, default=None),
            "release_median": statistics.median(took), "release_max": max(took), "load": load_avg()}


# --- failback after a reboot, and a crash without one ----------------------------------

# A real-time process that only sleeps 1 ms at a time, as an audio or control
# loop would: it prints the start and lateness of every wake more than 2 ms
# late, i.e. the times something of higher priority kept it off every CPU.
STALL = r"""
import time
while True:
    t = time.monotonic()
    time.sleep(0.001)
    late = time.monotonic() - t - 0.001
    if late > 0.002:
        print('%.6f %.6f' % (t, late), flush=True)
"""


def _lines(proc):
    proc.send_signal(signal.SIGTERM)
    return [tuple(map(float, line.split())) for line in proc.communicate(timeout=10)[0].splitlines()]


def _start(p, system, node):
    if system.startswith("lvskit"):
        p.start(node)
    else:
        for name in ("k.pid", "kv.pid"):        # in /run on a real machine: gone or stale
            try:
                os.unlink(os.path.join(p.node_dir[node], name))
            except FileNotFoundError:
                pass
        start_keepalived(p, node, float(system.split("=")[1]))


def one_restore(system, tag, reboot):
    """Kill the director as a machine, let the spare serve, bring the director back.

    reboot: its RUN_DIR emptied (else kept, as after a crash without a
    reboot); no VIP either way.  What the client saw from the moment the
    director's links came up to 1 s after the director holds the VIP alone:
    probes lost and the longest time between two answers; and the longest
    stall of a SCHED_FIFO 10 process on this host in that window.
    """
    workdir = tempfile.mkdtemp(prefix="hbbench-")
    p = make_pair(system, workdir, tag, service=True)
    try:
        probe = _probe(p)
        stall = p.popen("client", ["chrt", "-f", "10", PY, "-c", STALL], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t_kill = p.kill("director")
        if not p.wait(lambda: p.holds_vip("spare") and p.ask() == "spare", 10, 0.01):
            raise RuntimeError(f"{system}: the spare never took over")
        time.sleep(1.5)         # a reboot takes longer than the spare's second ARP burst (arp_repeat)
        t_back = p.revive("director", reboot=reboot)
        _start(p, system, "director")
        back = p.wait(lambda: p.holds_vip("director") and not p.holds_vip("spare"), 15, 0.01)
        t_held = time.monotonic()
        time.sleep(1.0)
        answers, stalls = _answers(probe), _lines(stall)
        with open(os.path.join(p.dir, "director.log")) as f:
            graced = "handover grace: TCP that IPVS does not know" in f.read()
        gap = next((t - t_kill for t, name in answers if t > t_kill and name == "spare"), None)
        window = [(t, name) for t, name in answers if t >= t_back]
        before = [t for t, name in answers if t < t_back and name != "-"][-1:]
        answered = before + [t for t, name in window if name != "-"]
        return {"bench": "reboot" if reboot else "crash", "system": system, "trial": tag,
                "back": back and bool(window) and window[-1][1] == "director",
                "takes_s": round(t_held - t_back, 3),
                "lost": sum(name == "-" for _, name in window),
                "longest_s": round(max((b - a for a, b in zip(answered, answered[1:])), default=0), 3),
                "stall_max_s": round(max((late for t, late in stalls if t >= t_back), default=0), 3),
                "failover_gap_s": None if gap is None else round(gap, 3),
                "grace": graced if system.startswith("lvskit") else None}
    finally:
        p.close()
        shutil.rmtree(workdir, ignore_errors=True)


def restore(systems, trials, reboot):
    """one_restore, trials times per system, the systems taking turns (so they share the load)."""
    rows = {s: [] for s in systems}
    for i in range(trials):
        for system in systems:
            row = one_restore(system, i % 10, reboot)
            print(json.dumps(row), flush=True)
            rows[system].append(row)
    out = {}
    for system, got in rows.items():
        good = [r for r in got if r["back"]]
        lost = sorted(r["lost"] for r in good)
        gaps = [r["failover_gap_s"] for r in got if r["failover_gap_s"] is not None]
        out[system] = {"trials": trials, "failed": trials - len(good),
                       "lost_min": lost[0] if lost else None,
                       "lost_median": statistics.median(lost) if lost else None,
                       "lost_max": lost[-1] if lost else None,
                       "longest_max_s": max((r["longest_s"] for r in good), default=None),
                       "stall_max_s": max((r["stall_max_s"] for r in got), default=None),
                       "takes_median_s": statistics.median([r["takes_s"] for r in good]) if good else None,
                       "graced": sum(bool(r["grace"]) for r in got),
                       "failover_gap_median_s": statistics.median(gaps) if gaps else None,
                       "rows": got, "load": load_avg()}
    return out


# --- soak under CPU stress --------------------------------------------------------------

# Heartbeat packets as a node's kernel saw them, each with its kernel
# timestamp (a packet socket: the time it was handed to the device, or
# received from it), read at leisure: it measures when the beats went and
# came, not when this process got to them.  argv: "out" (this node's own
# beats leaving) or "in" (the peer's arriving), then the peer's or our
# addresses.  Heartbeats: UDP to port 694 (lvskit) or IP protocol 112 (VRRP).
# At SIGTERM: one JSON line, the largest gaps between consecutive beats on
# any path (what keeps a peer alive) and on each path, and the kernel's
# count of packets this socket dropped (a full queue: then the gaps are
# not to be trusted).
SNIFF = r"""
import json, signal, socket, struct, sys
direction, addresses = sys.argv[1], set(sys.argv[2:])
# ETH_P_ALL: a socket of one protocol is not shown outgoing packets; SOCK_DGRAM: from the IP header on
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.SOL_SOCKET, 35, 1)                   # SO_TIMESTAMPNS
def stop(*_):
    raise SystemExit
signal.signal(signal.SIGTERM, stop)
times = {}
print("ready", flush=True)
try:
    while True:
        data, anc, _, addr = s.recvmsg(64, socket.CMSG_SPACE(16))
        if addr[1] != 0x0800 or (addr[2] == 4) != (direction == "out") or len(data) < 24:
            continue
        src = socket.inet_ntoa(data[12:16])
        hb = data[9] == 112 or (data[9] == 17 and data[22:24] == b"\x02\xb6")
        if hb and src in addresses:
            for level, kind, raw in anc:
                if kind == 35:
                    sec, ns = struct.unpack("@ll", raw)
                    times.setdefault(addr[0], []).append(sec + ns * 1e-9)
except SystemExit:
    pass
packets, drops = struct.unpack("II", s.getsockopt(263, 6, 8))  # SOL_PACKET, PACKET_STATISTICS
def gaps(ts):
    ts = sorted(ts)
    return sorted((b - a for a, b in zip(ts, ts[1:])), reverse=True)[:5]
merged = gaps([t for ts in times.values() for t in ts])
print(json.dumps({"beats": {d: len(ts) for d, ts in times.items()}, "largest_ms": [round(g * 1000, 2) for g in merged],
                  "per_path_max_ms": {d: round(gaps(ts)[0] * 1000, 2) for d, ts in times.items() if len(ts) > 1},
                  "drops": drops}), flush=True)
"""


def _sniff(p, node, direction, addresses):
    proc = p.popen(node, ["chrt", "-f", "1", PY, "-c", SNIFF, direction] + addresses,
                   stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"sniffer in {node} did not start")
    return proc


def _sniffed(proc):
    proc.send_signal(signal.SIGTERM)
    return json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])


def steal():
    """Seconds this (virtual) machine's CPUs were ready but not run by the host: /proc/stat's steal."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


def soak(minutes, systems=("lvskit", "keepalived=0.1")):
    """The pairs idle side by side under `stress-ng --cpu 2` for minutes: false takeovers, and the margin.

    The margin: the director's heartbeats' largest gap between departures
    (its own kernel's packet times) and the spare's between arrivals,
    against the spare's deadtime.  A gap past the deadtime is a takeover.
    """
    ensure("stress-ng", "stress-ng")
    pairs = {}
    workdirs = []
    sniffers = {}
    try:
        for i, system in enumerate(systems):
            workdir = tempfile.mkdtemp(prefix="hbbench-")
            workdirs.append(workdir)
            pairs[system] = make_pair(system, workdir, f"s{i}")
        director = [f"{FRONT}{HOST['director']}", f"{HB}{HOST['director']}"]
        for system, p in pairs.items():
            sniffers[system] = (_sniff(p, "director", "out", director), _sniff(p, "spare", "in", director))
        before = {s: (p.log("spare"), p.log("director")) for s, p in pairs.items()}
        stress = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", f"{int(minutes * 60)}s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0, stolen = time.monotonic(), steal()
        loads = []
        while stress.poll() is None:
            time.sleep(5)
            loads.append(float(load_avg().split()[0]))
        measured, stolen = time.monotonic() - t0, steal() - stolen
        out = {}
        for system, p in pairs.items():
            departures, arrivals = (_sniffed(x) for x in sniffers.pop(system))
            spare_log = p.log("spare")[len(before[system][0]):]
            if system.startswith("lvskit"):
                takeovers = spare_log.count(": now active")
                warnings = spare_log.count("(warntime)")
            else:
                takeovers = spare_log.count("Entering MASTER STATE")
                warnings = None
            deadtime = deadtime_of(system)
            largest = arrivals["largest_ms"][0] if arrivals["largest_ms"] else None
            out[system] = {"false_takeovers": takeovers, "warntime_warnings": warnings,
                           "director_still_active": p.holds_vip("director"),
                           "spare_holds_vip": p.holds_vip("spare"),
                           "deadtime_ms": round(deadtime * 1000, 2),
                           "departures": departures, "arrivals": arrivals,
                           "margin_ms": None if largest is None else round(deadtime * 1000 - largest, 2)}
        return {"minutes": round(measured / 60, 2), "max_load1": max(loads, default=None),
                "steal_s": round(stolen, 2), "systems": out}
    finally:
        for pair in sniffers.values():
            for proc in pair:
                proc.kill()
        for p in pairs.values():
            p.close()
        for w in workdirs:
            shutil.rmtree(w, ignore_errors=True)


# --- resource usage -----------------------------------------------------------------------

def _proc(pid, runs=False):
    """(ns on a CPU, summed over its threads, from schedstat: exact, not tick-sampled; RSS kB).

    runs: and the times its threads were put on a CPU (about its wake-ups).
    """
    ticks = count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            fields = f.read().split()
            ticks += int(fields[0])
            count += int(fields[2])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return (ticks, rss, count) if runs else (ticks, rss)


def _find(p, node, word):
    out = subprocess.run(["ip", "netns", "pids", p.ns[node]], text=True, capture_output=True).stdout.split()
    for pid in out:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(word.encode()) for a in argv[:2]) and (word != "takeover" or b"--serve" in argv):
            return int(pid)
    return None


def sink(p, node):
    """Drop everything node sends at its own interfaces' queues, as a NIC would take it.

    On a veth, a send runs the receiver's whole path (bridge, the peer's UDP
    receive and wake-up) in the sender's context; a queue that drops every
    packet (pfifo limit 0; UDP reports no error) leaves the sender's own share
    of the kernel's work.  Neighbours are made permanent first, or their ARP
    requests would be dropped too and the datagrams never reach the queue.
    """
    peer = "director" if node == "spare" else "spare"

    def neigh(of):
        return [f"ip neigh replace {net}{HOST[of]} lladdr 02:00:0a:c9:{mac}:{HOST[of]:02x} "
                f"dev {dev} nud permanent" for dev, net, mac in (("eth0", FRONT, "01"), ("eth1", HB, "02"))]
    # The peer's side too: node's ARP replies are dropped from now on, and the
    # peer's heartbeats must still reach node (its hb-listen is measured).
    for at, cmds in ((peer, neigh(node)),
                     (node, neigh(peer) + [f"tc qdisc replace dev {dev} root pfifo limit 0"
                                                 for dev in ("eth0", "eth1")])):
        r = subprocess.run(["ip", "netns", "exec", p.ns[at], "sh", "-ec", "\n".join(cmds)],
                           text=True, capture_output=True)
        if r.returncode:
            raise RuntimeError(f"sink {node}: {r.stderr.strip()}")


def usage(interval, seconds=60, sunk=False, deadtime=None):
    """CPU and RSS of the spare's processes; sunk: its datagrams end in its own queues (sink)."""
    workdir = tempfile.mkdtemp(prefix="hbbench-")
    deadtime = max(0.12, interval * 6) if deadtime is None else deadtime
    # initdead as shipped: it sets how often hb-listen writes its replay floors (hbnet.floors)
    p = Pair("hbbu", workdir, timings=f"interval = {interval}\ndeadtime = {deadtime}\n")
    try:
        p.start("director")
        p.start("spare")
        p.wait(lambda: p.holds_vip("director"), 10)
        time.sleep(2)
        if sunk:
            sink(p, "spare")
            time.sleep(1)
        pids = {w: _find(p, "spare", w) for w in ("hb-send", "hb-listen", "takeover")}
        hz = 1e9     # schedstat counts nanoseconds
        start = {w: _proc(pid) for w, pid in pids.items()}
        time.sleep(seconds)
        end = {w: _proc(pid) for w, pid in pids.items()}
        # A measurement of a pair that failed over would measure something else.
        if ": now active" in p.log("spare") or not p.holds_vip("director"):
            raise RuntimeError("usage: the spare took over during the measurement")
        return {w: {"cpu_percent": round(100.0 * (end[w][0] - start[w][0]) / hz / seconds, 2),
                    "rss_mb": round(end[w][1] / 1024, 1)} for w in pids} | {
                "interval": interval, "deadtime": deadtime, "seconds": seconds, "sunk": sunk,
                "load": load_avg()}
    finally:
        p.close()
        shutil.rmtree(workdir, ignore_errors=True)


def compare(against, runs, seconds):
    """CPU and wake-ups of the spares' hb-send and hb-listen: this tree's pair and against's, at once."""
    class Against(Pair):
        def tool(self, node, name, *args):
            return [PY, os.path.join(against, "bin", name)] + super().tool(node, name, *args)[2:]
    out = []
    for run in range(runs):
        workdirs = {t: tempfile.mkdtemp(prefix="hbbench-") for t in ("this", "against")}
        pairs = {}
        try:
            for t in (("this", "against") if run % 2 == 0 else ("against", "this")):
                pairs[t] = (Pair if t == "this" else Against)(f"hbc{t[0]}", workdirs[t], timings=TIMINGS)
                pairs[t].start("director")
                pairs[t].start("spare")
            for p in pairs.values():
                if not p.wait(lambda: p.holds_vip("director"), 10):
                    raise RuntimeError("compare: a director never became active")
            time.sleep(2)
            pids = {(t, w): _find(p, "spare", w) for t, p in pairs.items() for w in ("hb-send", "hb-listen")}
            start = {k: _proc(pid, runs=True) for k, pid in pids.items()}
            before = {t: p.log("spare").count(": now active") for t, p in pairs.items()}
            load0 = load_avg()
            time.sleep(seconds)
            end = {k: _proc(pid, runs=True) for k, pid in pids.items()}
            row = {"run": run, "first": "this" if run % 2 == 0 else "against", "seconds": seconds,
                   "load": f"{load0} .. {load_avg()}"}
            for t, p in pairs.items():
                # A pair that failed over is no measurement; during the window, it is a false takeover.
                row[f"{t}_failed_over"] = ": now active" in p.log("spare") or not p.holds_vip("director")
                row[f"{t}_takeovers_in_window"] = p.log("spare").count(": now active") - before[t]
                if row[f"{t}_failed_over"]:
                    kept = os.path.join(tempfile.gettempdir(), f"hbcompare-{run}-{t}-spare.log")
                    shutil.copy(os.path.join(p.dir, "spare.log"), kept)
                    row[f"{t}_log"] = kept
            for (t, w), a in start.items():
                b = end[t, w]
                row[f"{t} {w} cpu%"] = round(100.0 * (b[0] - a[0]) / 1e9 / seconds, 2)
                row[f"{t} {w} runs/s"] = round((b[2] - a[2]) / seconds, 1)
                row[f"{t} {w} rss_mb"] = round(b[1] / 1024, 1)
            print(json.dumps(row), flush=True)
            out.append(row)
        finally:
            for t, p in pairs.items():
                p.close()
            for w in workdirs.values():
                shutil.rmtree(w, ignore_errors=True)
    return {"against": against, "runs": out}


# --- results and README -------------------------------------------------------------------

def save(key, value):
    data = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            data = json.load(f)
    data[key] = value | {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(data, f, indent=1)


def fast(systems, trials, minutes):
    """The fast setting against keepalived's fastest, in one run: gap, failback, usage, soak."""
    lvskit = next(s for s in systems if s.startswith("lvskit="))
    interval, deadtime = (float(x) for x in lvskit.split("=")[1].split("/"))
    save("fast_gap", gap(systems, trials))
    save("fast_failback", restore(systems, min(trials, 10), reboot=True))
    save("fast_usage", {"plain": usage(interval, deadtime=deadtime),
                        "sunk": usage(interval, sunk=True, deadtime=deadtime)})
    save("fast_soak", soak(minutes, systems))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="?", default="all",
                    choices=["gap", "handover", "failback", "crash", "soak", "usage", "compare", "fast", "all"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--systems", help="lvskit (interval 20 ms, deadtime 100 ms), lvskit=INTERVAL/DEADTIME, "
                    "keepalived=ADVERT_INT, comma-separated (default: lvskit,keepalived=1,keepalived=0.1; "
                    f"fast: {FAST}; soak: lvskit,keepalived=0.1)")
    ap.add_argument("--against", metavar="TREE", help="compare: the other checkout (its bin/ is run)")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=45)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/failover.py needs root (network namespaces)")
    if args.what == "compare":
        if not args.against:
            sys.exit("compare needs --against TREE")
        save("compare", compare(os.path.abspath(args.against), args.runs, args.seconds))
        return
    ensure("keepalived", "keepalived")
    systems = (args.systems or "lvskit,keepalived=1,keepalived=0.1").split(",")
    if args.what == "fast":
        systems = (args.systems or FAST).split(",")
        if not any(s.startswith("lvskit=") for s in systems):
            sys.exit("fast needs an lvskit=INTERVAL/DEADTIME system")
        fast(systems, args.trials, args.minutes)
    if args.what in ("gap", "all"):
        previous = {}
        if os.path.exists(RESULTS):
            with open(RESULTS) as f:
                previous = json.load(f).get("gap", {})
        previous.pop("date", None)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        fresh = {k: v | {"date": stamp} for k, v in gap(systems, args.trials).items()}
        save("gap", previous | fresh)       # a re-run of some systems keeps the others
    if args.what in ("handover", "all"):
        save("handover", handover(min(args.trials, 10)))
    for what, reboot in (("failback", True), ("crash", False)):
        if args.what in (what, "all"):
            kept = [s for s in systems if s != "keepalived=1"] or ["lvskit"]
            save(what, restore(kept, min(args.trials, 10), reboot))
    if args.what in ("usage", "all"):
        save("usage", {"20ms": usage(0.02), "20ms_sunk": usage(0.02, sunk=True),
                       "10ms": usage(0.01, deadtime=0.03), "10ms_sunk": usage(0.01, sunk=True, deadtime=0.03)})
    if args.what in ("soak", "all"):
        save("soak", soak(args.minutes, (args.systems or "lvskit,keepalived=0.1").split(",")))
    with open(RESULTS) as f:
        print(json.dumps(json.load(f), indent=1))


if __name__ == "__main__":
    main()
