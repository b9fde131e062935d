"""Bring the kernel's IPVS table in line with the config: read, plan, apply.

Every program that changes the table (ipvs-sync, check-real, reweight,
takeover) goes through ``reconcile``: no second code path to the kernel.
"""
import ipaddress
import os
import shlex
import time

from . import kernelsettings, log, state
from .desired import desired_table
from .errors import NOT_CONFIGURED, Fatal
from .model import AF_INET, AF_INET6, ServiceKey
from .plan import ADD_SERVICE, DEL_DEST, DEL_SERVICE, EDIT_SERVICE, plan_changes


def check_owned(data):
    """ipvs-sync.json's shape: {"services": [[af, protocol, address, port, fwmark], ...]}; gives the keys."""
    items = state.obj(data, "the file").get("services")
    if not isinstance(items, list):
        raise state.Shape(f"services: want a list, not {type(items).__name__}")
    keys = set()
    for i, item in enumerate(items):
        where = f"services[{i}]"
        if not isinstance(item, list) or len(item) != 5:
            raise state.Shape(f"{where}: want [af, protocol, address, port, fwmark]")
        af, protocol, address, port, fwmark = item
        if af not in (AF_INET, AF_INET6) or isinstance(af, bool):
            raise state.Shape(f"{where} af: want 2 (IPv4) or 10 (IPv6)")
        keys.add(ServiceKey(af,
                            state.integer(protocol, f"{where} protocol", 0, 255),
                            state.text(address, f"{where} address", 64),
                            state.integer(port, f"{where} port", 0, 65535),
                            state.integer(fwmark, f"{where} fwmark", 0, 0xFFFFFFFF)))
    return keys


def load_owned(cfg):
    """Keys of the services a previous run put in the kernel."""
    return state.load(state.owned_path(cfg), set(), check_owned)


def save_owned(cfg, keys):
    """Record the services ipvs-sync made; the error line (logged) when the file cannot be written.

    The table is still made right when the record cannot be: a full disk must
    not stop a director from serving.
    """
    try:
        state.save(state.owned_path(cfg), {"services": sorted(
            [k.af, k.protocol, k.address, k.port, k.fwmark] for k in keys)}, indent=None)
    except OSError as e:
        why = f"{state.owned_path(cfg)}: cannot record the services ipvs-sync made: {e.strerror or e}"
        log.error(why)
        return why
    return None


class Refused(Fatal):
    """A plan that would delete too many of ipvs-sync's services: nothing was changed."""

    def __init__(self, message):
        super().__init__(message, NOT_CONFIGURED)


def guard(cfg, ops, current, owned):
    """Refuse ops that delete every service ipvs-sync made, or more than [global] max_remove of them.

    An emptied or truncated config looks exactly like a wish to delete the
    table; deleting it is one deliberate --force away.  Deleting one service
    is always allowed, unless it is the last one.
    """
    doomed = [op.service.key for op in ops if op.kind == DEL_SERVICE]
    if not doomed:
        return
    made = sum(1 for key in owned if key in current)
    if len(doomed) == made or (len(doomed) > 1 and len(doomed) > cfg.max_remove * made):
        what = "all" if len(doomed) == made else f"{len(doomed)} of the {made}"
        raise Refused(f"{cfg.path}: refusing to delete {what} services ipvs-sync made "
                      f"(first {doomed[0]}; [global] max_remove = {cfg.max_remove:.0%}): "
                      f"an emptied or cut config? Run ipvs-sync --force to delete them")


class Outcome:
    def __init__(self, ops, current=None):
        self.ops = ops
        self.failed = []            # [(op, message)]
        self.current = current      # the table the plan was made against
        self.unrecorded = None      # why ipvs-sync.json could not be written
        self.settings = []          # kernelsettings.Change: [ipvs] settings made (planned, in a dry run)
        self.settings_error = None  # why they could not be read or made


TABLE_LOCK_WAIT = 30.0     # seconds a writer waits for another one's plan and writes


def reconcile(cfg, kernel, desired=None, dry_run=False, current=None, select=None, force=False):
    """Plan and (unless dry_run) apply; one syslog line per kernel change.

    current: the table as we believe it is (ipvs-sync --every's memory);
    read from the kernel when None.  select(op) -> bool keeps only some
    operations (reweight: weight edits of real servers already there;
    check-real: all but service deletions, which are ipvs-sync's to decide).
    A plan that deletes too many services raises Refused (see guard)
    unless force.  Writers hold the shared ``ipvs-table`` lock from reading
    state to the last write.
    """
    if dry_run:
        return _reconcile(cfg, kernel, desired, True, current, select, force)
    from .lock import Lock
    with Lock(cfg.run_dir, "ipvs-table", wait=TABLE_LOCK_WAIT):
        return _reconcile(cfg, kernel, desired, False, current, select, force)


def _reconcile(cfg, kernel, desired, dry_run, current, select, force):
    if desired is None:
        desired = desired_table(cfg)
    owned = load_owned(cfg)
    if current is None:
        current = kernel.read(set(desired) | owned)
    removal = {vs.key: vs.removal for vs in cfg.services}
    ops = plan_changes(desired, current, owned, removal)
    if select is not None:
        ops = [op for op in ops if select(op)]
    out = Outcome(ops, current=current)
    if not force:
        guard(cfg, ops, current, owned)
    if select is None and hasattr(kernel, "timeouts"):     # a whole run: the [ipvs] settings too
        _settings(cfg, kernel, dry_run, out)
    if dry_run:
        return out
    # recorded before they are made: a run killed mid-load leaves no service nobody owns
    added = {op.service.key for op in ops if op.kind == ADD_SERVICE}
    if not added <= owned:
        owned = owned | added
        out.unrecorded = save_owned(cfg, owned)
    out.failed = kernel.execute(out.ops) if out.ops else []
    bad = {id(op) for op, _ in out.failed}
    log.infos(op.ipvsadm() for op in out.ops if id(op) not in bad)   # formatted if anyone hears
    for op, message in out.failed:
        log.error(f"{op.ipvsadm()}: {message}")
    # A whole run owns what the config wants, and a service whose deletion failed
    # (the next run deletes it); a partial run (select) only adds to the record.
    keep = set(desired) | {op.service.key for op, _ in out.failed if op.kind == DEL_SERVICE}
    if select is None and owned != keep:
        out.unrecorded = save_owned(cfg, keep) or out.unrecorded
    return out


def _settings(cfg, kernel, dry_run, out):
    """The [ipvs] kernel settings into out; a failure is one error line, the table still goes on."""
    try:
        out.settings = kernelsettings.sync(cfg.ipvs, kernel, dry_run)
    except (OSError, Fatal) as e:
        out.settings_error = f"[ipvs] settings: {getattr(e, 'strerror', None) or e}"
        log.error(out.settings_error)


class Follower:
    """ipvs-sync --every: reconcile against a memory of the table between full reads.

    A config or state change is planned against the table as we left it, so it
    reaches the kernel after one plan and exactly its writes, without reading
    the whole table back.  Every full round reads the kernel back, which
    repairs hand-made drift; so does any failed write, which means our memory
    was stale.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.memory = None      # {ServiceKey: Service with dests}: what we believe the kernel holds

    def step(self, cfg, full=True, force=False, desired=None, select=None):
        """reconcile (its desired, select and force), planned against the memory unless full."""
        current = None if full or self.memory is None else self.memory
        self.memory = None      # until we know what the kernel holds (reconcile may raise)
        out = reconcile(cfg, self.kernel, desired=desired, current=current, select=select, force=force)
        if out.failed and current is not None:
            return self.step(cfg, True, force, desired, select)
        if not out.failed:      # else the kernel refused something: read it back next time
            self.memory = _applied(out.current, out.ops)
        return out


def _applied(table, ops):
    """A copy of table ({ServiceKey: Service}) with ops, all of which the kernel took, applied."""
    table = {key: svc.replace(dests=dict(svc.dests)) for key, svc in table.items()}
    for kind, svc, dest in ops:
        if kind == ADD_SERVICE:
            table[svc.key] = svc.replace(dests={})
        elif kind == EDIT_SERVICE:
            table[svc.key] = svc.replace(dests=table[svc.key].dests)
        elif kind == DEL_SERVICE:
            del table[svc.key]
        elif kind == DEL_DEST:
            del table[svc.key].dests[dest.key]
        else:                   # a real server added or changed; a change keeps its connection counts
            dests = table[svc.key].dests
            old = dests.get(dest.key)
            dests[dest.key] = dest if old is None else dest.replace(
                active=old.active, inactive=old.inactive, persistent=old.persistent)
    return table


RETURN_WAIT = 2.0      # seconds the kernel gets to expire a returning server's old entries


def fresh_start(cfg, kernel, returning, conn_table="/proc/net/ip_vs_conn"):
    """Take real servers that come back from down out of the kernel until their old
    connection entries are gone; the next reconcile adds them again.

    returning: [(Service, Dest)].  In direct routing the director never sees a
    real server's resets: the handshakes it refused while dying stay as
    SYN_RECV entries for a minute and its killed connections as ESTABLISHED
    ones for the TCP timeout, all counted as active connections, so a least-
    connection scheduler would pass the healed server over.  Deleting the
    real server makes the kernel expire every entry of it (expire_nodest_conn
    = 1, Linux 5.9 and later); without that setting the entries would
    survive the deletion, so nothing is done.  Returns the ops made.
    """
    from .plan import DEL_DEST, Op
    try:
        with open(os.path.join(kernelsettings.SYSCTL_DIR, "expire_nodest_conn")) as f:
            if f.read().strip() != "1":
                return []
    except OSError:
        return []
    from .lock import Lock
    with Lock(cfg.run_dir, "ipvs-table", wait=TABLE_LOCK_WAIT):
        ops = [Op(DEL_DEST, svc, dest) for svc, dest in returning]
        failed = {id(op) for op, _ in kernel.execute(ops)}      # already gone (on_failure = remove): fine
        ops = [op for op in ops if id(op) not in failed]
        log.infos(f"{op.ipvsadm()}: a fresh start for a returning real server" for op in ops)
        deadline = time.monotonic() + RETURN_WAIT
        while ops and _entries_of(conn_table, ops) and time.monotonic() < deadline:
            time.sleep(0.02)
    return ops


def _entries_of(conn_table, ops):
    """Whether the connection table still holds an entry of one of the deleted real servers."""
    gone = {(ipaddress.ip_address(op.dest.address), op.dest.port) for op in ops}
    try:
        with open(conn_table) as f:
            next(f, None)       # the header
            for line in f:
                words = line.split()
                if len(words) >= 7 and _endpoint(words[5], words[6]) in gone:
                    return True
    except OSError:
        return False
    return False


def _endpoint(address, port):
    """(ip_address, port) of /proc/net/ip_vs_conn's columns: IPv4 in hex, IPv6 as text."""
    try:
        ip = ipaddress.ip_address(address) if ":" in address else ipaddress.ip_address(int(address, 16))
        return ip, int(port, 16)
    except ValueError:
        return None


def _bird_pending(cfg, result):
    """[announce] mode = bgp: what ipvs-sync would still do for BIRD, as pending lines (a VIP
    list BIRD has not taken is a drift like a table's); a file it cannot read is UNKNOWN."""
    if not cfg.announce.bgp:
        return []
    from . import bird
    from .errors import CHECK_UNKNOWN
    o = bird.sync(cfg, dry_run=True)
    if o.error:
        result.add(CHECK_UNKNOWN, o.error)
        return []
    if o.write:
        return [f"{cfg.announce.include}: BIRD's include file differs from the config"]
    if o.configure:
        return [f"{shlex.join(bird.configure_argv(cfg.announce))}: BIRD has not taken "
                f"{cfg.announce.include}"]
    return []


def open_kernel():
    from .ipvs import Kernel    # late: --check-config and config errors need no kernel
    return Kernel()


def check(cfg, kernel=None):
    """monitoring-plugins style: is the kernel in line with the config?  Prints, returns the code.

    CRITICAL when changes are pending; WARNING when the kernel holds services
    that are neither in the config nor made by ipvs-sync ([global] foreign =
    ignore to accept them): an orphan, or somebody else's table.
    """
    from .errors import CHECK_CRITICAL, CHECK_UNKNOWN, CHECK_WARNING
    from .pluginoutput import Output
    result = Output("IPVS_SYNC")
    try:
        kernel = kernel or open_kernel()
        current = kernel.read()
        out = reconcile(cfg, kernel, dry_run=True, current=current, force=True)
        owned = load_owned(cfg)
    except Fatal as e:
        result.add(CHECK_UNKNOWN)
        print(*result.lines(str(e)), sep="\n")
        return result.code
    n = len(cfg.services)
    wanted = {vs.key for vs in cfg.services}
    foreign = sorted(k for k in current if k not in wanted and k not in owned) \
        if cfg.foreign == "warn" else []
    pending = [c.command() for c in out.settings] + [op.ipvsadm() for op in out.ops]
    pending += _bird_pending(cfg, result)
    result.metric("changes", len(pending), lo=0)
    result.metric("foreign", len(foreign), lo=0)
    if out.settings_error:
        result.add(CHECK_UNKNOWN, out.settings_error)
    if pending:
        result.add(CHECK_CRITICAL)
        summary = f"{len(pending)} changes pending, first: {pending[0]}"
        for line in pending[1:]:
            result.detail(line)
    else:
        summary = f"{n} services in line with the config"
    if foreign and not pending:
        result.add(CHECK_WARNING, f"{len(foreign)} in the kernel that are not in it nor made by ipvs-sync: "
                                  f"{', '.join(map(str, foreign[:5]))}{' ...' if len(foreign) > 5 else ''}")
    print(*result.lines(summary), sep="\n")
    return result.code


def announce(cfg, dry_run=False):
    """[announce] mode = bgp: BIRD's include file of the VIPs, after the table (bird.py).

    The table comes first: BIRD that cannot take the file (not running, a
    broken bird.conf) must not keep the kernel from being made right.  The
    file's protocols start disabled, so writing it never announces anything.
    Returns bird.Outcome, or None in mode none.
    """
    if not cfg.announce.bgp:
        return None
    from . import bird
    return bird.sync(cfg, dry_run)


def _once(cfg, kernel, dry_run, force):
    from .errors import ERROR, OK
    out = reconcile(cfg, kernel, dry_run=dry_run, force=force)
    routed = announce(cfg, dry_run)
    if dry_run:
        for change in out.settings:
            print(change.command())
        for op in out.ops:
            print(op.ipvsadm())
        for line in routed.commands if routed else ():
            print(line)
        return OK
    return ERROR if out.failed or out.unrecorded or out.settings_error or (routed and routed.error) else OK


def run(cfg, path, dry_run=False, every=None, kernel=None, force=False):
    """ipvs-sync's work: once, or every `every` seconds and on events (every.run).

    In the loop, a round woken by an edited config, a changed state file
    (check-real's, reweight's) or SIGHUP is planned against the table as we
    left it (Follower), so the change lands at once; the timer's rounds read
    the kernel back, which repairs hand-made drift, and so does a SIGHUP
    after its reload has landed.  A config the guard refuses is logged, and
    the previous one kept.
    """
    from . import every as loop
    from .errors import USAGE
    from .lock import Lock
    if every is not None and dry_run:
        raise Fatal("--dry-run and --every do not mix: a dry run looks once", USAGE)
    held = None if dry_run else Lock(cfg.run_dir, "ipvs-sync")  # noqa: F841 (held until exit)
    kernel = kernel or open_kernel()
    if every is None:
        return _once(cfg, kernel, dry_run, force)
    follower = Follower(kernel)

    def round_(cfg, why):
        if why == loop.SIGNAL:      # the reload lands at once; the read-back below repairs drift
            follower.step(cfg, full=False, force=force)
        out = follower.step(cfg, full=why in (loop.TIMER, loop.SIGNAL), force=force)
        announce(cfg)
        return out
    return loop.run(path, cfg, every, round_,
                    watch=lambda cfg: (state.health_path(cfg), state.weights_path(cfg)), refused=Refused)
