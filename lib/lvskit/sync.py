"""Bring the kernel's IPVS table in line with the config: read, plan, apply.

Every program that changes the table (ipvs-sync, check-real, reweight,
takeover) goes through ``reconcile``: no second code path to the kernel.
"""
import os
import sys

from . import log, state
from .model import ServiceKey
from .nogc import nogc
from .plan import DEL_SERVICE, plan_changes


def owned_path(cfg):
    return os.path.join(cfg.state_dir, "ipvs-sync.json")


def load_owned(cfg):
    """Keys of the services a previous run put in the kernel."""
    data = state.load(owned_path(cfg), {})
    items = data.get("services") if isinstance(data, dict) else None
    if not isinstance(items, list):
        if data:
            log.warning(f"{owned_path(cfg)}: ignoring it, not a list of services")
        return set()
    keys = set()
    for item in items:
        try:
            keys.add(ServiceKey(*item))
        except TypeError:
            log.warning(f"{owned_path(cfg)}: ignoring bad entry {item!r}")
    return keys


def save_owned(cfg, keys):
    state.save(owned_path(cfg), {"services": sorted(
        [k.af, k.protocol, k.address, k.port, k.fwmark] for k in keys)}, indent=None)


def desired_table(cfg, adjust=None):
    """{ServiceKey: Service with dests} the config asks for.

    adjust (overlay.Adjuster): adjust(vs, real) -> Dest or None lets health
    and load state change a real server's entry (None leaves it out of the
    table), adjust.extra(vs) gives dests to add (a sorry server), and
    adjust.touches(vs) says whether any state speaks of vs at all.
    """
    table = {}
    for vs in cfg.services:
        svc = vs.wanted()
        if adjust is not None and adjust.touches(vs):
            dests = {}
            for real in vs.reals:
                d = adjust(vs, real)
                if d is not None:
                    dests[d.key] = d
            for d in adjust.extra(vs):
                dests.setdefault(d.key, d)      # e.g. the sorry server
            svc = svc.replace(dests=dests)
        table[vs.key] = svc
    return table


class Outcome:
    def __init__(self, ops, current=None):
        self.ops = ops
        self.failed = []            # [(op, message)]
        self.current = current      # the table the plan was made against


TABLE_LOCK_WAIT = 30.0     # seconds a writer waits for another one's plan and writes


def reconcile(cfg, kernel, desired=None, dry_run=False, current=None, select=None):
    """Plan and (unless dry_run) apply; one syslog line per kernel change.

    current: the table as we believe it is (ipvs-sync --every's memory);
    read from the kernel when None.  select(op) -> bool keeps only some
    operations (reweight: weight edits of real servers already there).
    Writers hold the shared ``ipvs-table`` lock from reading state to the
    last write.
    """
    if dry_run:
        return _reconcile(cfg, kernel, desired, True, current, select)
    from .lock import Lock
    with Lock(cfg.run_dir, "ipvs-table", wait=TABLE_LOCK_WAIT):
        return _reconcile(cfg, kernel, desired, False, current, select)


@nogc
def _reconcile(cfg, kernel, desired, dry_run, current, select):
    if desired is None:
        from .overlay import adjuster
        desired = desired_table(cfg, adjuster(cfg))
    owned = load_owned(cfg)
    if current is None:
        current = kernel.read(set(desired) | owned)
    removal = {vs.key: vs.removal for vs in cfg.services}
    ops = plan_changes(desired, current, owned, removal)
    if select is not None:
        ops = [op for op in ops if select(op)]
    out = Outcome(ops, current=current)
    if dry_run:
        return out
    out.failed = kernel.execute(out.ops) if out.ops else []
    bad = {id(op) for op, _ in out.failed}
    log.infos(op.ipvsadm() for op in out.ops if id(op) not in bad)   # formatted if anyone hears
    for op, message in out.failed:
        log.error(f"{op.ipvsadm()}: {message}")
    # a partial run (select) did not add or delete services: ownership is ipvs-sync's to record;
    # a service whose deletion failed stays ours, so the next run deletes it
    keep = set(desired) | {op.service.key for op, _ in out.failed if op.kind == DEL_SERVICE}
    if select is None and owned != keep:
        save_owned(cfg, keep)
    return out


class Follower:
    """ipvs-sync --every: reconcile against a memory of the table between full reads.

    A config or state change is planned against the table as we left it, so it
    reaches the kernel after one plan and exactly its writes.  Every full
    round reads the kernel back, which repairs hand-made drift; so does any
    failed write, which means our memory was stale.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.memory = None      # MemoryTable of what we believe the kernel holds

    def step(self, cfg, full=True):
        from .memtable import MemoryTable
        current = None if full or self.memory is None else self.memory.read()
        out = reconcile(cfg, self.kernel, current=current)
        if out.failed and current is not None:
            return self.step(cfg, full=True)
        self.memory = MemoryTable(out.current)
        bad = {id(op) for op, _ in out.failed}
        self.memory.execute([op for op in out.ops if id(op) not in bad])
        if out.failed:
            self.memory = None  # the kernel refused something: read it back next time
        return out


def open_kernel():
    from .ipvs import Kernel    # late: --check-config and config errors need no kernel
    return Kernel()


def check(cfg, kernel=None):
    """monitoring-plugins style: is the kernel in line with the config?"""
    from .errors import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, Fatal
    try:
        kernel = kernel or open_kernel()
        out = reconcile(cfg, kernel, dry_run=True)
    except Fatal as e:
        print(f"IPVS_SYNC UNKNOWN - {e}")
        return CHECK_UNKNOWN
    n = len(cfg.services)
    if not out.ops:
        print(f"IPVS_SYNC OK - {n} services in line with the config | changes=0;;;0")
        return CHECK_OK
    first = out.ops[0].ipvsadm()
    print(f"IPVS_SYNC CRITICAL - {len(out.ops)} changes pending, first: {first} "
          f"| changes={len(out.ops)};;;0")
    for op in out.ops[1:]:
        print(op.ipvsadm())
    return CHECK_CRITICAL


def _once(cfg, kernel, dry_run):
    from .errors import ERROR, OK
    out = reconcile(cfg, kernel, dry_run=dry_run)
    if dry_run:
        for op in out.ops:
            print(op.ipvsadm())
        return OK
    return ERROR if out.failed else OK


def run(cfg, path, dry_run=False, every=None, kernel=None):
    """ipvs-sync's work: once, or in a loop that also wakes on SIGHUP and config edits."""
    from . import config as config_mod
    from .errors import ERROR, OK, Fatal, USAGE
    from .lock import Lock
    if every is not None and dry_run:
        raise Fatal("--dry-run and --every do not mix: a dry run looks once", USAGE)
    held = None if dry_run else Lock(cfg.run_dir, "ipvs-sync")  # noqa: F841 (held until exit)
    kernel = kernel or open_kernel()
    if every is None:
        return _once(cfg, kernel, dry_run)
    import signal   # here: building its enums is 8 ms of a one-shot run in the lab guest
    import time
    woken = []
    signal.signal(signal.SIGHUP, lambda *_: woken.append(1))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def stamp(p=path):
        try:
            st = os.stat(p)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def state_stamp():      # check-real and reweight write these: follow them at once
        from .overlay import health_path, weights_path
        return (stamp(health_path(cfg)), stamp(weights_path(cfg)))
    last_state = state_stamp()
    follower, seen, full, code = Follower(kernel), stamp(), True, 0
    memo = {}      # sections built before: an edit re-validates only what changed
    cfg = config_mod.load(path, memo)      # one full parse fills it (the caller's load may be a cache hit)
    while True:
        out = follower.step(cfg, full=full)
        code = ERROR if out.failed else OK
        deadline = time.monotonic() + every
        while time.monotonic() < deadline and not woken and stamp() == seen \
                and state_stamp() == last_state:
            time.sleep(0.05)
        full = time.monotonic() >= deadline or bool(woken)
        woken.clear()
        last_state = state_stamp()
        if stamp() != seen:
            seen = stamp()
            try:
                cfg = config_mod.load(path, memo)
            except Fatal as e:
                log.error(f"{e} (keeping the previous config)")
    return code  # pragma: no cover  (the loop ends by a signal)
