"""The planner against the fake table: exact operations, foreign entries untouched."""

from lvskit import config, plan as P, sync
from lvskit.desired import desired_table
from fakekernel import FakeKernel
from lvskit.model import Dest, Service, ServiceKey

CFG = """
[global]
state_dir = {state}
run_dir = {state}
[service web]
address = 10.0.0.100
port = 80
scheduler = wlc
real.10.0.0.1 = weight=3
real.10.0.0.2 = weight=1
[service dns]
address = 10.0.0.100
port = 53
protocol = udp
scheduler = rr
real.10.0.0.1 =
real.10.0.0.2 =
"""


def cfg_for(tmp_path, text=CFG):
    return config.parse(text.format(state=tmp_path))


def kinds(ops):
    return [(op.kind, str(op.dest) if op.dest else str(op.service.key)) for op in ops]


def test_empty_kernel_gets_everything_then_no_op(tmp_path):
    cfg, k = cfg_for(tmp_path), FakeKernel()
    out = sync.reconcile(cfg, k)
    assert [op.kind for op in out.ops].count(P.ADD_SERVICE) == 2
    assert [op.kind for op in out.ops].count(P.ADD_DEST) == 4
    assert out.failed == []
    again = sync.reconcile(cfg, k)
    assert again.ops == []
    web = k.table[cfg.service("web").key]
    assert {d.address: d.weight for d in web.dests.values()} == {"10.0.0.1": 3, "10.0.0.2": 1}


def test_one_weight_change_is_one_edit(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    k.writes.clear()
    cfg2 = cfg_for(tmp_path, CFG.replace("weight=3", "weight=5"))
    out = sync.reconcile(cfg2, k)
    assert kinds(out.ops) == [(P.EDIT_DEST, "10.0.0.1:80")]
    assert len(k.writes) == 1 and k.writes[0].dest.weight == 5


def test_scheduler_change_edits_in_place_never_deletes(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    out = sync.reconcile(cfg_for(tmp_path, CFG.replace("scheduler = wlc", "scheduler = sh")), k)
    assert [op.kind for op in out.ops] == [P.EDIT_SERVICE]
    assert k.table[cfg_for(tmp_path).service("web").key].scheduler == "sh"


def test_foreign_service_untouched_and_hand_deleted_entry_back(tmp_path):
    foreign = Service(ServiceKey(2, 6, "10.9.9.9", 443), "rr",
                      dests={("10.0.0.7", 443): Dest("10.0.0.7", 443, weight=9)})
    k = FakeKernel([foreign])
    cfg = cfg_for(tmp_path)
    sync.reconcile(cfg, k)
    web = cfg.service("web").key
    del k.table[web].dests[("10.0.0.2", 80)]                # by hand: ipvsadm -d
    k.table[web].dests[("10.0.0.9", 80)] = Dest("10.0.0.9", 80)   # by hand: ipvsadm -a
    out = sync.reconcile(cfg, k)
    assert (P.ADD_DEST, "10.0.0.2:80") in kinds(out.ops)
    assert (P.EDIT_DEST, "10.0.0.9:80") in kinds(out.ops)   # drained first (weight 0)
    assert all(op.service.key != foreign.key for op in out.ops)
    assert k.table[foreign.key].dests[("10.0.0.7", 443)].weight == 9


def test_drain_then_delete_when_connections_gone(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    web = cfg_for(tmp_path).service("web").key
    k.table[web].dests[("10.0.0.2", 80)] = k.table[web].dests[("10.0.0.2", 80)].replace(active=4)
    smaller = cfg_for(tmp_path, CFG.replace("real.10.0.0.2 = weight=1\n", ""))
    out = sync.reconcile(smaller, k)
    assert kinds(out.ops) == [(P.EDIT_DEST, "10.0.0.2:80")] and out.ops[0].dest.weight == 0
    k.table[web].dests[("10.0.0.2", 80)] = k.table[web].dests[("10.0.0.2", 80)].replace(active=1)
    assert sync.reconcile(smaller, k).ops == []             # still draining: wait
    k.table[web].dests[("10.0.0.2", 80)] = k.table[web].dests[("10.0.0.2", 80)].replace(active=0)
    assert kinds(sync.reconcile(smaller, k).ops) == [(P.DEL_DEST, "10.0.0.2:80")]


def test_udp_and_removal_delete_go_at_once(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    text = CFG.replace("real.10.0.0.2 =\n", "").replace("real.10.0.0.2 = weight=1\n", "removal = delete\n")
    out = sync.reconcile(cfg_for(tmp_path, text), k)
    assert sorted(kinds(out.ops)) == [(P.DEL_DEST, "10.0.0.2:53"), (P.DEL_DEST, "10.0.0.2:80")]


def test_service_we_created_and_left_config_is_deleted_others_kept(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    only_web = cfg_for(tmp_path, CFG.split("[service dns]")[0])
    out = sync.reconcile(only_web, k)
    assert [op.kind for op in out.ops] == [P.DEL_SERVICE]
    assert len(k.table) == 1
    # the state file is only a memory: without it, the leftover would be foreign
    (tmp_path / "ipvs-sync.json").unlink()
    assert sync.reconcile(only_web, k).ops == []


def test_dry_run_prints_ipvsadm_and_changes_nothing(tmp_path):
    k = FakeKernel()
    out = sync.reconcile(cfg_for(tmp_path), k, dry_run=True)
    assert k.table == {} and k.writes == []
    lines = [op.ipvsadm() for op in out.ops]
    assert "ipvsadm -A -u 10.0.0.100:53 -s rr" in lines
    assert "ipvsadm -A -t 10.0.0.100:80 -s wlc" in lines
    assert "ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.1:80 -g -w 3" in lines
    assert not (tmp_path / "ipvs-sync.json").exists()


def test_ipvsadm_syntax_of_every_kind():
    cfg = config.parse("""
[service m]
fwmark = 9
family = inet6
persistent = 300
netmask = 64
real.2001:db8::2 = weight=2
[service n]
address = 10.1.0.1
port = 8080
forward = nat
persistent = 60
netmask = 255.255.255.0
real.10.2.0.1 = port=80 uthreshold=100 lthreshold=10
[service s]
address = 2001:db8::1
port = 5000
protocol = sctp
scheduler = mh
sched_flags = mh-port
real.2001:db8::7 = forward=tun
""")
    lines = [op.ipvsadm() for op in P.plan_changes(desired_table(cfg), {})]
    assert lines == [
        "ipvsadm -A -t 10.1.0.1:8080 -s wlc -p 60 -M 255.255.255.0",
        "ipvsadm -a -t 10.1.0.1:8080 -r 10.2.0.1:80 -m -w 1 -x 100 -y 10",
        "ipvsadm -A -f 9 -6 -s wlc -p 300 -M 64",
        "ipvsadm -a -f 9 -6 -r [2001:db8::2]:0 -g -w 2",
        "ipvsadm -A --sctp-service [2001:db8::1]:5000 -s mh -b flag-2",
        "ipvsadm -a --sctp-service [2001:db8::1]:5000 -r [2001:db8::7]:5000 -i -w 1",
    ]


def test_failed_operation_does_not_stop_the_rest(tmp_path):
    cfg = cfg_for(tmp_path)
    k = FakeKernel()
    web = cfg.service("web").key
    # a real server already there by hand, with the same weight: the kernel says EEXIST
    # only if we try to add it; here we make the plan stale on purpose.
    ops = P.plan_changes(desired_table(cfg), {})
    k.table[web] = Service(web, "wlc", dests={})
    failed = k.execute(ops)
    assert [op.kind for op, _ in failed] == [P.ADD_SERVICE]
    assert len(k.table[web].dests) == 2         # the rest went on


def test_health_and_weights_state_shape_the_table(tmp_path):
    import json
    cfg = cfg_for(tmp_path, CFG.replace("[service dns]", "on_failure = quiesce\nreweight = agent\n"
                                                 "[service dns]\non_failure = remove"))
    (tmp_path / "health.json").write_text(json.dumps({"services": {
        "web": {"10.0.0.2:80": {"up": False}}, "dns": {"10.0.0.2:53": {"up": False}}}}))
    (tmp_path / "weights.json").write_text(json.dumps({"services": {"web": {"10.0.0.1:80": {"weight": 9}}}}))
    k = FakeKernel()
    sync.reconcile(cfg, k)
    web, dns = (k.table[cfg.service(n).key] for n in ("web", "dns"))
    assert {d.address: d.weight for d in web.dests.values()} == {"10.0.0.1": 9, "10.0.0.2": 0}
    assert set(dns.dests) == {("10.0.0.1", 53)}
    (tmp_path / "health.json").write_text("{ not json")     # a broken state file is ignored
    sync.reconcile(cfg, k)
    assert len(k.table[cfg.service("dns").key].dests) == 2
    # weights count only while the service is reweighted: back to the config's 3
    sync.reconcile(cfg_for(tmp_path), k)
    assert k.table[cfg.service("web").key].dests[("10.0.0.1", 80)].weight == 3


def test_follower_plans_changes_against_memory_and_repairs_on_full_rounds(tmp_path):
    k = FakeKernel()
    f = sync.Follower(k)
    f.step(cfg_for(tmp_path), full=True)
    k.writes.clear()
    reads = []
    real_read = k.read
    k.read = lambda keys=None: reads.append(1) or real_read(keys)
    out = f.step(cfg_for(tmp_path, CFG.replace("weight=3", "weight=6")), full=False)
    assert kinds(out.ops) == [(P.EDIT_DEST, "10.0.0.1:80")] and len(k.writes) == 1
    assert reads == []                                  # no dump for a config change
    web = cfg_for(tmp_path).service("web").key
    del k.table[web].dests[("10.0.0.2", 80)]            # drift by hand
    cfg6 = cfg_for(tmp_path, CFG.replace("weight=3", "weight=6"))
    assert f.step(cfg6, full=False).ops == []           # memory does not see it...
    assert kinds(f.step(cfg6, full=True).ops) == [(P.ADD_DEST, "10.0.0.2:80")]   # ...a full round does
    assert reads == [1]
    del k.table[web].dests[("10.0.0.1", 80)]            # drift, then a change that hits it
    out = f.step(cfg_for(tmp_path, CFG.replace("weight=3", "weight=7")), full=False)
    assert out.failed == []                             # stale memory: read back and redone
    assert k.table[web].dests[("10.0.0.1", 80)].weight == 7


def test_follower_memory_keeps_a_drained_servers_connections(tmp_path):
    """Drained by a change planned against memory, a real server with connections
    stays (weight 0) until a full round reads them gone: memory never deletes it."""
    k, cfg = FakeKernel(), cfg_for(tmp_path)
    f = sync.Follower(k)
    f.step(cfg, full=True)
    web = cfg.service("web").key
    busy = k.table[web].dests[("10.0.0.2", 80)].replace(active=5)
    k.table[web].dests[busy.key] = busy
    f.step(cfg, full=True)                              # memory learns of the connections
    gone = cfg_for(tmp_path, CFG.replace("real.10.0.0.2 = weight=1\n", ""))
    assert kinds(f.step(gone, full=False).ops) == [(P.EDIT_DEST, "10.0.0.2:80")]     # drained
    assert f.step(gone, full=False).ops == []          # connections still there, as far as memory knows
    k.table[web].dests[busy.key] = k.table[web].dests[busy.key].replace(active=0)
    assert kinds(f.step(gone, full=True).ops) == [(P.DEL_DEST, "10.0.0.2:80")]


def test_state_files_of_the_wrong_shape_are_ignored_not_fatal(tmp_path):
    import json
    cfg = cfg_for(tmp_path, CFG.replace("[service dns]", "reweight = agent\n[service dns]"))
    k = FakeKernel()
    for name, text in (("weights.json", {"services": {"web": ["not", "a", "dict"]}}),
                       ("health.json", {"services": {"web": {"10.0.0.1:80": "down"}}}),
                       ("ipvs-sync.json", {"services": 5})):
        (tmp_path / name).write_text(json.dumps(text))
    out = sync.reconcile(cfg, k)
    assert out.failed == [] and len(k.table) == 2
    (tmp_path / "ipvs-sync.json").write_text(json.dumps([1, 2]))
    assert sync.reconcile(cfg, k).ops == []


def test_a_failed_service_deletion_is_retried_next_run(tmp_path):
    k = FakeKernel()
    sync.reconcile(cfg_for(tmp_path), k)
    only_web = cfg_for(tmp_path, CFG.split("[service dns]")[0])
    real_execute = k.execute
    k.execute = lambda ops: [(op, "Device or resource busy") for op in ops]   # the kernel refuses
    out = sync.reconcile(only_web, k)
    assert [op.kind for op, _ in out.failed] == [P.DEL_SERVICE]
    k.execute = real_execute
    assert [op.kind for op in sync.reconcile(only_web, k).ops] == [P.DEL_SERVICE]


def test_dry_run_and_every_do_not_mix(tmp_path):
    import pytest
    from lvskit.errors import USAGE, Fatal
    with pytest.raises(Fatal) as e:
        sync.run(cfg_for(tmp_path), str(tmp_path / "x.ini"), dry_run=True, every=1.0, kernel=FakeKernel())
    assert e.value.code == USAGE


def test_writers_share_the_table_lock(tmp_path):
    import pytest
    from lvskit.errors import BUSY, Fatal
    from lvskit.lock import Lock
    cfg = cfg_for(tmp_path)
    with Lock(cfg.run_dir, "ipvs-table"):
        sync.TABLE_LOCK_WAIT, saved = 0.1, sync.TABLE_LOCK_WAIT
        try:
            with pytest.raises(Fatal) as e:
                sync.reconcile(cfg, FakeKernel())
        finally:
            sync.TABLE_LOCK_WAIT = saved
    assert e.value.code == BUSY
    assert sync.reconcile(cfg, FakeKernel(), dry_run=True).ops        # a dry run needs no lock


def test_each_applied_change_is_one_syslog_line_and_none_is_formatted_for_nobody(tmp_path, monkeypatch,
                                                                                  syslog_socket):
    from lvskit import log
    out = sync.reconcile(cfg_for(tmp_path), FakeKernel())
    lines = [syslog_socket.text() for _ in out.ops]
    assert lines == [op.ipvsadm() for op in out.ops] and len(lines) == 6
    monkeypatch.setattr(log, "SYSLOG_PATH", str(tmp_path / "none"))
    monkeypatch.setattr(log, "_sock", None)
    monkeypatch.setattr(P.Op, "ipvsadm", lambda op: 1 / 0)     # nobody listens: never called
    assert len(sync.reconcile(cfg_for(tmp_path), FakeKernel()).ops) == 6
