"""Bring the kernel's IPVS table in line with the config: read, plan, apply.

Every program that changes the table (ipvs-sync, check-real, reweight,
takeover) goes through ``reconcile``: no second code path to the kernel.
"""
import os
import sys
from dataclasses import dataclass, field, replace

from . import log, state
from .model import ServiceKey
from .plan import plan_changes


def owned_path(cfg):
    return os.path.join(cfg.state_dir, "ipvs-sync.json")


def load_owned(cfg):
    """Keys of the services a previous run put in the kernel."""
    data = state.load(owned_path(cfg), {}) or {}
    keys = set()
    for item in data.get("services", []):
        try:
            keys.add(ServiceKey(*item))
        except TypeError:
            log.warning(f"{owned_path(cfg)}: ignoring bad entry {item!r}")
    return keys


def save_owned(cfg, keys):
    state.save(owned_path(cfg), {"services": sorted(
        [k.af, k.protocol, k.address, k.port, k.fwmark] for k in keys)})


def desired_table(cfg, adjust=None):
    """{ServiceKey: Service with dests} the config asks for.

    adjust(vs, real) -> Dest or None lets health and load state change a real
    server's entry (None leaves it out of the table).
    """
    table = {}
    for vs in cfg.services:
        svc = vs.wanted()
        if adjust:
            dests = {}
            for real in vs.reals:
                d = adjust(vs, real)
                if d is not None:
                    dests[d.key] = d
            svc = replace(svc, dests=dests)
        table[vs.key] = svc
    return table


@dataclass
class Outcome:
    ops: list = field(default_factory=list)
    failed: list = field(default_factory=list)      # [(op, message)]
    applied: bool = False


def reconcile(cfg, kernel, desired=None, dry_run=False, select=None):
    """Plan and (unless dry_run) apply; one syslog line per kernel change.

    select(op) -> bool keeps only some operations (reweight: weight edits).
    """
    if desired is None:
        from .overlay import adjuster
        desired = desired_table(cfg, adjuster(cfg))
    owned = load_owned(cfg)
    current = kernel.read(set(desired) | owned)
    removal = {vs.key: vs.removal for vs in cfg.services}
    ops = plan_changes(desired, current, owned, removal)
    if select is not None:
        ops = [op for op in ops if select(op)]
    out = Outcome(ops)
    if dry_run:
        return out
    out.failed = kernel.execute(ops) if ops else []
    out.applied = True
    bad = {id(op) for op, _ in out.failed}
    for op in ops:
        if id(op) not in bad:
            log.info(op.ipvsadm())
    for op, message in out.failed:
        log.error(f"{op.ipvsadm()}: {message}")
    # a partial run (select) did not add or delete services: ownership is ipvs-sync's to record
    if select is None and owned != set(desired):
        save_owned(cfg, set(desired))
    return out


def _open_kernel():
    from .ipvs import Kernel    # late: --check-config and config errors need no kernel
    return Kernel()


def check(cfg, kernel=None):
    """monitoring-plugins style: is the kernel in line with the config?"""
    from .errors import CHECK_CRITICAL, CHECK_OK
    kernel = kernel or _open_kernel()
    out = reconcile(cfg, kernel, dry_run=True)
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
    import signal
    import time
    from . import config as config_mod
    from .errors import Fatal, USAGE
    from .lock import Lock
    if every is not None and every <= 0:
        raise Fatal("--every needs a positive number of seconds", USAGE)
    lock = None if dry_run else Lock(cfg.run_dir, "ipvs-sync")
    kernel = kernel or _open_kernel()
    if every is None:
        return _once(cfg, kernel, dry_run)
    woken = []
    signal.signal(signal.SIGHUP, lambda *_: woken.append(1))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def stamp():
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None
    seen, code = stamp(), 0
    while True:
        code = _once(cfg, kernel, dry_run)
        deadline = time.monotonic() + every
        while time.monotonic() < deadline and not woken and stamp() == seen:
            time.sleep(0.05)
        woken.clear()
        if stamp() != seen:
            seen = stamp()
            try:
                cfg = config_mod.load(path)
            except Fatal as e:
                log.error(f"{e} (keeping the previous config)")
    return code  # pragma: no cover  (loop ends by signal)
