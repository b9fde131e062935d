"""Issue 18: every director active.  Three directors announce the VIP by BGP to a router
that spreads flows over them by ECMP; each runs lvskit as a director in `[announce]
mode = bgp` would: ipvs-sync (the table, mh with mh-port and mh-fallback, sloppy_tcp;
BIRD's include file), check-real --every, lvs-announce --every (the health gate), and
BIRD 2 with BFD.  Four real servers in direct routing, weights 2/1/1/1; a client holds
150 long-lived TCP connections (a request a second each) and opens 10 new ones a
second.  Everything is real: the guest's IPVS, BIRD on both sides, the router's kernel
multipath route; what is judged is what the client saw.

The lab is lab/aalab.py (shared with lab/aa-experiment).  Its router mirrors BIRD's
route into a resilient nexthop group (BIRD 2.0.12 programs plain multipath routes
only): a director coming back takes its third of the flows from the others and moves
nothing else, as a router with resilient ECMP hashing does.  The "director back"
bound below is that router's property; the rest is lvskit's.
"""
import collections
import json
import os
import shutil
import time

import pytest
from conftest import ROOT

import aalab
from aalab import DIRECTORS

pytestmark = pytest.mark.skipif(not (shutil.which("bird") and shutil.which("birdc")),
                                reason="BIRD 2 not installed (bird2: make apt-deps)")

GATE_EVERY = 0.5        # lvs-announce's round (the guest is emulated: slow)
SPREAD_WINDOW = 30.0    # seconds of new connections judged for the spread
WINDOW = 15.0           # seconds judged after each event
ALL3 = frozenset(DIRECTORS)
WEIGHTS = aalab.WEIGHTS


@pytest.fixture(scope="module")
def lab():
    a = aalab.options(bfd=tuple(DIRECTORS), ecmp="resilient")
    lab = aalab.LvskitLab(a, ROOT, gate_every=GATE_EVERY)
    try:
        lab.build()
        t = lab.wait_hops(ALL3, 0, 120)
        assert t is not None, f"the router never had 3 paths: {sorted(lab.hops_now())}\n" \
                              f"{lab.birdc('router', 'show', 'protocols')}"
        lab.start_client()
        end = time.monotonic() + 60
        while True:
            s = lab.snap()
            if all(c["replies"] > 0 for c in s["long"]):
                break
            assert time.monotonic() < end, "not every long-lived connection was answered"
            time.sleep(0.5)
        yield lab
    finally:
        out = os.environ.get("LAB_OUT")
        lab.close()
        if out:
            for name in os.listdir(lab.dir):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(lab.dir, name), os.path.join(out, "aa-" + name))
        shutil.rmtree(lab.dir, ignore_errors=True)


def report(what, figures):
    print(f"\n{what}: {json.dumps(figures)}")
    out = os.environ.get("LAB_OUT")
    if out:
        with open(os.path.join(out, "active-active.jsonl"), "a") as f:
            f.write(json.dumps({"what": what, **figures}) + "\n")


def failed_new(snap, t1, t2):
    return [n for n in aalab.new_window(snap, t1, t2) if n["srv"] is None]


def event(lab, action, want, timeout=60):
    """Run action (it may return the instant it took effect); (that instant, when the
    router's route had the next hops WANT, snapshots before and WINDOW s after,
    {flow: director} before and after)."""
    before = lab.snap()
    m0 = lab.carriers()[0]
    t = time.monotonic()
    t_act = action()
    t_act = t_act if isinstance(t_act, float) else t
    t_route = lab.wait_hops(want, t, timeout)
    assert t_route is not None, f"the route never had {sorted(want)}: {sorted(lab.hops_now())}"
    time.sleep(WINDOW)
    after = lab.snap()
    return t_act, t_route, before, after, m0, lab.carriers()[0]


def test_spread_over_directors_and_real_servers(lab):
    syn0 = {d: lab.syns(d) for d in DIRECTORS}
    t1 = time.monotonic()
    time.sleep(SPREAD_WINDOW)
    t2 = time.monotonic()
    syns = {d: lab.syns(d) - syn0[d] for d in DIRECTORS}
    snap = lab.snap()
    # finished ones: a failure is known only after new_timeout, an answer at once
    recs = aalab.new_window(snap, t1, t2)
    per_real = collections.Counter(n["srv"] for n in recs if n["srv"])
    total = sum(syns.values())
    holders = collections.Counter()
    for d in DIRECTORS:
        holders.update(lab.ipvs_conns(d).keys())
    report("spread", {"syns_per_director": syns, "new_per_real": dict(per_real),
                      # the IPVS entries count (aa-experiment's first count) is not where the SYN went:
                      "new_with_entries_on_two_directors": sum(1 for n in recs if holders[n["sport"]] > 1)})
    assert failed_new(snap, t1, t2 - aalab.options().new_timeout) == []
    assert total >= 0.8 * SPREAD_WINDOW * aalab.options().rate, syns
    for d, n in syns.items():       # the router's ECMP over three announcing directors
        assert abs(100.0 * n / total - 100.0 / 3) <= 10, syns
    done = sum(per_real.values())
    for r, w in WEIGHTS.items():    # mh over the weights, as the client saw it
        assert abs(100.0 * per_real[r] / done - 100.0 * w / sum(WEIGHTS.values())) <= 10, per_real
    # every long-lived connection's entry names the real server the client talks to
    _, real_of = lab.carriers()
    assert all(real_of.get(c["sport"]) == c["server"] for c in snap["long"])


def survivors(before, after, ids, t):
    """Of the long-lived connections IDS: those answered since T by the one server they began with."""
    b = {c["id"]: c for c in before["long"]}
    a = {c["id"]: c for c in after["long"]}
    return [i for i in ids if b[i]["state"] != "dead" and a[i]["state"] != "dead"
            and a[i]["last_ok"] and a[i]["last_ok"] > t and len(a[i]["servers"]) == 1]


def test_director_killed_as_a_machine(lab):
    t_kill, t_route, before, after, m0, m1 = event(lab, lambda: lab.kill_director("d1"), ALL3 - {"d1"})
    withdrawal = t_route - t_kill
    sport = {c["id"]: c["sport"] for c in before["long"]}
    via = [i for i in sport if m0.get(sport[i]) == "d1"]
    others = [i for i in sport if m0.get(sport[i]) != "d1"]
    ok_via, ok_others = survivors(before, after, via, t_kill), survivors(before, after, others, t_kill)
    failed = failed_new(after, t_kill - aalab.options().new_timeout, t_kill + WINDOW - aalab.options().new_timeout)
    report("d1 killed", {"withdrawal_s": round(withdrawal, 3), "via_d1": len(via), "via_d1_carried_on": len(ok_via),
                         "others": len(others), "others_carried_on": len(ok_others),
                         "new_failed_started_s": [round(n["t"] - t_kill, 3) for n in failed]})
    assert len(via) >= 20, m0          # the test needs flows through the dead director
    assert len(ok_via) >= 0.95 * len(via)
    assert len(ok_others) == len(others)
    # a new connection may fail only if it started while the router still sent flows to d1
    assert all(t_kill <= n["t"] <= t_route for n in failed), (withdrawal, failed)
    assert withdrawal < 2.0, withdrawal     # BFD, 100 ms x 3; the hold timer would be 9 s


def test_director_back_moves_a_third_and_resets_none(lab):
    t_act, t_route, before, after, m0, m1 = event(lab, lambda: lab.reboot_director("d1"), ALL3, timeout=120)
    alive = [c["id"] for c in before["long"] if c["state"] != "dead"]
    sport = {c["id"]: c["sport"] for c in before["long"]}
    moved = [i for i in alive if m1.get(sport[i]) != m0.get(sport[i])]
    ok = survivors(before, after, alive, t_route)
    failed = failed_new(after, t_act, t_route + WINDOW - aalab.options().new_timeout)
    report("d1 back", {"announced_after_s": round(t_route - t_act, 3), "flows": len(alive), "moved": len(moved),
                       "moves": dict(collections.Counter(f"{m0.get(sport[i])}->{m1.get(sport[i])}" for i in moved)),
                       "carried_on": len(ok), "new_failed": len(failed)})
    assert len(ok) == len(alive)
    assert failed == []
    assert all(m1.get(sport[i]) == "d1" for i in moved)     # only the returning director's share moves
    assert 0 < len(moved) <= 0.45 * len(alive)              # about a third


def test_planned_drain_and_return(lab):
    def drain():
        r = lab.script("d2", "lvs-announce", "--drain", "test drain")
        assert r.returncode == 0, r.stderr
    for label, action, want in (("d2 drained", drain, ALL3 - {"d2"}),
                                ("d2 undrained", lambda: lab.script("d2", "lvs-announce", "--undrain"), ALL3)):
        t_act, t_route, before, after, m0, m1 = event(lab, action, want)
        alive = [c["id"] for c in before["long"] if c["state"] != "dead"]
        ok = survivors(before, after, alive, t_route)
        failed = failed_new(after, t_act - 1, t_route + WINDOW - aalab.options().new_timeout)
        sport = {c["id"]: c["sport"] for c in before["long"]}
        moved = sum(1 for i in alive if m1.get(sport[i]) != m0.get(sport[i]))
        report(label, {"route_s": round(t_route - t_act, 3), "flows": len(alive), "moved": moved,
                       "carried_on": len(ok), "new_failed": len(failed)})
        assert len(ok) == len(alive), label
        assert failed == [], label
        assert moved > 0, label
    final = lab.snap()
    assert [c for c in final["long"] if c["state"] == "dead"] == []
