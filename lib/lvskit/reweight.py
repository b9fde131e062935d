"""One reweight round: ask every real server for its load, weigh, apply.

Only services with ``reweight = agent|http|external`` take part.  A server
that serves several services is asked once per round.  The result goes to
STATE_DIR/weights.json (which ipvs-sync's desired table applies too, so
the two never fight), then the changed weights, and nothing else, go to the
kernel through sync.reconcile.  check-real's verdicts win: a server it took
out stays out (desired.py), and is not counted when making sure a service
keeps at least one server with weight.
"""
import shlex
import time

from . import agentproto, controller, health as health_mod, log, state
from .desired import desired_table, load_weights
from .plan import EDIT_DEST
from .sync import reconcile

STATE_KEYS = ("weight", "smooth", "since", "out", "error", "answer")


def params(cfg):
    r = cfg.reweight
    return controller.Params(r.alpha, r.deadband, r.max_step, r.floor, r.ceiling, r.scale, r.slow_start)


def _query(cfg, vs, real):
    """(method, what to ask): the same tuple for a server asked by several services."""
    r = cfg.reweight
    fields = {"address": real.dest.address, "name": real.name, "port": real.dest.port,
              "agent_port": r.agent_ports.get(real.name, r.agent_port)}
    if vs.reweight == "agent":
        return ("agent", (real.dest.address, fields["agent_port"]))
    if vs.reweight == "http":
        host = f"[{real.dest.address}]" if ":" in real.dest.address else real.dest.address
        return ("http", r.http_url.format(**dict(fields, address=host)))
    return ("external", r.command.format(**fields))


def ask(queries, timeout):
    """{query: bytes or error string}, every method's polls in turn."""
    by_method = {}
    for q in queries:
        by_method.setdefault(q[0], []).append(q)
    out = {}
    if by_method.get("agent"):
        from . import agentpoll
        out.update(agentpoll.poll({q: q[1] for q in by_method["agent"]}, timeout))
    if by_method.get("http"):
        from . import httpcheck
        from .agentproto import MAX_LINE
        out.update(httpcheck.poll_load({q: q[1] for q in by_method["http"]}, MAX_LINE, timeout))
    if by_method.get("external"):
        out.update(run_commands({q: q[1] for q in by_method["external"]}, timeout))
    return out


def run_commands(commands, timeout, workers=8):
    """commands: {key: shell-words string} -> {key: bytes or an error string}.

    Each command's stdout is one agent-protocol line; a non-zero exit or a
    timeout is no answer.  A few at a time in threads, each a process: for
    tens of servers, not thousands (the agent is for those).
    """
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(workers, len(commands))) as pool:
        futures = {key: pool.submit(_command, shlex.split(cmd), timeout) for key, cmd in commands.items()}
        return {key: f.result() for key, f in futures.items()}


def _command(argv, timeout):
    from . import run
    res = run.run(argv, timeout=timeout)
    if res.timed_out:
        return "timeout"
    if res.code != 0:
        err = (res.stderr.strip().splitlines() or [""])[-1][:80]
        return f"exit {res.code}" + (f": {err}" if err else "")
    return res.stdout.encode("utf-8", "replace")[:agentproto.MAX_LINE + 1]


def _peer(query):
    method, what = query
    if method == "agent":
        return f"agent {what[0]}:{what[1]}" if ":" not in what[0] else f"agent [{what[0]}]:{what[1]}"
    return f"{method} {what}"


def decide(cfg, replies, old, health, now):
    """Pure part of a round: new weights.json services from replies and old state.

    replies: {query: bytes or error string}; old: weights.json's "services";
    health: check-real's health.View.  Returns (services, notes) where
    notes are log lines (warnings once per server and problem).
    """
    p = params(cfg)
    new, notes = {}, []
    parsed = {}
    for q, raw in replies.items():
        if isinstance(raw, (bytes, bytearray)):
            try:
                parsed[q] = agentproto.parse(bytes(raw), _peer(q))
            except agentproto.AgentError as e:
                parsed[q] = str(e)
        else:
            parsed[q] = f"{_peer(q)}: {raw}"
    for vs in cfg.services:
        if vs.reweight == "none":
            continue
        states, bases, eligible = {}, {}, []
        for real in vs.reals:
            entry, base = str(real.dest), real.dest.weight
            prev = (old.get(vs.name) or {}).get(entry)
            prev = prev if isinstance(prev, dict) and isinstance(prev.get("weight"), int) else None
            track = health.track(vs.name, entry)
            taken_out = track is not None and track.up is False
            answer = parsed.get(_query(cfg, vs, real), "no answer")
            if taken_out:
                s = controller.step(prev, None, base, now, p, out=True)
            elif isinstance(answer, str):
                s = controller.step(prev, None, base, now, p)
                if (prev or {}).get("error") != answer:
                    notes.append(f"{vs.name} {entry}: {answer}; weight stays {s['weight']}")
                s["error"] = answer
            else:
                if answer.state != "up":
                    s = controller.drain(prev, base, p)
                else:
                    s = controller.step(prev, answer.usable(), base, now, p)
                if (prev or {}).get("error"):
                    notes.append(f"{vs.name} {entry}: answers again")
                s.pop("error", None)
                s["answer"] = agentproto.format_answer(answer.state, answer.capacity).strip()
            states[entry], bases[entry] = {k: v for k, v in s.items() if k in STATE_KEYS}, base
            if not taken_out and base > 0:
                eligible.append(entry)
        kept = controller.keep_one(states, eligible, bases, p)
        if kept:
            notes.append(f"{vs.name}: every server would be at weight 0; keeping {kept} "
                         f"at {states[kept]['weight']}")
        new[vs.name] = states
    return new, notes


def _weight_edit(reweighted):
    def select(op):
        return op.kind == EDIT_DEST and op.service.key in reweighted
    return select


def round_(cfg, kernel, dry_run=False, now=None, unsaved=None):
    """Ask, decide, apply, save; returns the sync Outcome.

    The kernel first, from the weights in memory; then weights.json, whose
    failure raises state.WriteError (naming it) after the kernel has them.
    unsaved: a dict a loop keeps between rounds; weights that could not be
    saved wait there as the next round's state (which tries to save again).
    """
    now = time.time() if now is None else now
    queries = {_query(cfg, vs, real) for vs in cfg.services if vs.reweight != "none" for real in vs.reals}
    replies = ask(queries, cfg.reweight.timeout)
    old = load_weights(cfg) if not unsaved else unsaved.pop("services")
    health = health_mod.read(cfg)
    services, notes = decide(cfg, replies, old, health, now)
    for note in notes:
        log.warning(note)
    for name, states in services.items():
        for entry, s in states.items():
            log.debug(f"{name} {entry}: {s.get('answer') or s.get('error', '-')} -> weight {s['weight']}")
    desired = desired_table(cfg, health=health, weights=services)
    reweighted = {vs.key for vs in cfg.services if vs.reweight != "none"}
    # dests that are in the kernel and wanted: we edit their weight, never add or remove
    out = reconcile(cfg, kernel, desired, dry_run=dry_run, select=_weight_edit(reweighted))
    # unchanged state is not rewritten: ipvs-sync --every wakes on every write
    if not dry_run and services != old:
        try:
            state.save(state.weights_path(cfg), {"services": services})
        except state.WriteError:
            if unsaved is not None:
                unsaved["services"] = services
            raise
    return out


def run(cfg, path, dry_run=False, every=None, kernel=None):
    """reweight's work: one round, or rounds every `every` seconds (every.run)."""
    from . import every as loop
    from .errors import ERROR, OK, USAGE, Fatal
    from .lock import Lock
    from .sync import open_kernel
    if every is not None and dry_run:
        raise Fatal("--dry-run and --every do not mix: a dry run looks once", USAGE)
    if not any(vs.reweight != "none" for vs in cfg.services):
        log.debug("no service has reweight = agent|http|external: nothing to do")
    lock = None if dry_run else Lock(cfg.run_dir, "reweight")   # noqa: F841 (held until exit)
    kernel = kernel or open_kernel()
    if every is None:
        out = round_(cfg, kernel, dry_run=dry_run)
        if dry_run:
            for op in out.ops:
                print(op.ipvsadm())
        return ERROR if out.failed else OK
    unsaved = {}

    def looped(cfg, why):
        try:
            round_(cfg, kernel, unsaved=unsaved)
        except state.WriteError as e:   # the kernel has the weights; the next round saves them
            log.error(str(e))
    return loop.run(path, cfg, every, looped)
