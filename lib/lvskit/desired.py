"""What the kernel's table should hold right now: the config, adjusted by what we learnt.

check-real keeps each real server's health in STATE_DIR/health.json and
reweight keeps load-based weights in STATE_DIR/weights.json.  Every program
that plans the table (ipvs-sync included) asks ``desired_table``, which
applies both, so a cron run of ipvs-sync never puts back a server that
check-real took out.  Either file may be deleted at any time: the config
alone is then the answer; so is a file not of its shape (health.check_file,
check_weights), with one warning.

Health (health.View): a server that is down gets weight 0 or leaves the
table (the service's on_failure), unless every server of the service is
down: then its sorry server joins, or, without one, the last healthy set
(check-real marks it "kept") stays.  A server in "warning" runs at the
service's check_warning_weight percent of its weight.

weights.json: {"services": {SERVICE: {"ADDR:PORT": {"weight": int, ...}}}}
  (reweight's controller state rides along: smooth, since, out, error,
  answer; see controller.py.  Weights count only for services whose config
  still says reweight = agent|http|external.)
"""
from . import controller, health as health_mod, state


def check_weights(data):
    """weights.json's shape, for state.load: {"services": {SERVICE: {"ADDR:PORT":
    the controller's state of that server}}}."""
    state.obj(data, "the file")
    for name, entries in state.obj(data.get("services", {}), "services").items():
        for e, s in state.obj(entries, f"services.{name}").items():
            controller.check_state(s, f"services.{name}.{e}")
    return data


def load_weights(cfg):
    """weights.json's "services", or {} when it is missing or not of its shape (one warning)."""
    return state.load(state.weights_path(cfg), {}, check_weights).get("services", {})


def desired_table(cfg, health=None, weights=None):
    """{ServiceKey: Service with dests} the kernel should hold.

    health (health.View) and weights (weights.json's "services") default to
    the state files; check-real and reweight pass what they hold in memory.
    """
    health = health_mod.read(cfg) if health is None else health
    weights = load_weights(cfg) if weights is None else weights
    table = {}
    for vs in cfg.services:
        svc = vs.wanted()
        reweighted = vs.reweight != "none" and vs.name in weights
        if vs.name in health.tracks or reweighted:
            dests = {}
            for real in vs.reals:
                d = _adjusted(vs, real.dest, health, weights)
                if d is not None:
                    dests[d.key] = d
            if vs.sorry and all_down(vs, health.of(vs.name)):
                dests.setdefault(vs.sorry.key, vs.sorry)
            svc = svc.replace(dests=dests)
        table[vs.key] = svc
    return table


def all_down(vs, tracks):
    """Every real server of vs is known to be down (tracks: {"ADDR:PORT": Track} of vs)."""
    return bool(vs.reals) and all(_up(tracks, r.dest) is False for r in vs.reals)


def _up(tracks, dest):
    t = tracks.get(str(dest))
    return None if t is None else t.up


def _adjusted(vs, dest, health, weights):
    """dest as health and load have it: None leaves it out of the table."""
    w = (weights.get(vs.name) or {}).get(str(dest), {}).get("weight")
    if vs.reweight != "none" and isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 65535:
        dest = dest.replace(weight=w)
    tracks = health.of(vs.name)
    t = tracks.get(str(dest))
    if t is None:
        return dest
    if t.up is False:
        if not vs.sorry and all_down(vs, tracks):
            # Never empty a service silently: keep the last healthy set (check-real
            # marks it "kept" and says so loudly), or everything if none is marked.
            marked = any(tracks[str(r.dest)].kept for r in vs.reals)
            if t.kept or not marked:
                return dest
        return None if vs.on_failure == "remove" else dest.replace(weight=0)
    pct = vs.check.warning_weight
    if t.state == health_mod.WARNING and pct < 100 and dest.weight:
        return dest.replace(weight=max(1, dest.weight * pct // 100) if pct else 0)
    return dest
