"""What the table should hold right now: the config, adjusted by what we learnt.

check-real keeps each real server's health in STATE_DIR/health.json and
reweight keeps load-based weights in STATE_DIR/weights.json.  Every program
that plans the table (ipvs-sync included) applies both, so a cron run of
ipvs-sync never puts back a server that check-real took out.  Either file
may be deleted at any time: the config alone is then the answer; so is a
file not of the shape below (health.check_file, check_weights), with one
warning.

health.json:  {"services": {SERVICE: {"ADDR:PORT": {"up": bool, ...}}}}
              optional per entry: "kept": true (down, but the service's last
              healthy set: left in), "weight_percent": N (a warning: weight
              scaled); see health.py for the rest (counters, reasons)
weights.json: {"services": {SERVICE: {"ADDR:PORT": {"weight": int, ...}}}}
  (reweight's controller state rides along: smooth, since, out, error,
  answer; see controller.py.  Weights count only for services whose
  config still says reweight = agent|http|external.)
"""
import os

from . import controller, health, state


def health_path(cfg):
    return os.path.join(cfg.state_dir, "health.json")


def weights_path(cfg):
    return os.path.join(cfg.state_dir, "weights.json")


def check_weights(data):
    """weights.json's shape, for state.load: {"services": {SERVICE: {"ADDR:PORT":
    the controller's state of that server}}}."""
    state.obj(data, "the file")
    for name, entries in state.obj(data.get("services", {}), "services").items():
        for e, s in state.obj(entries, f"services.{name}").items():
            controller.check_state(s, f"services.{name}.{e}")
    return data


def load_health(cfg):
    """health.json's "services", or {} when it is missing or not of its shape (one warning)."""
    return state.load(health_path(cfg), {}, health.check_file).get("services", {})


def load_weights(cfg):
    """weights.json's "services", or {} when it is missing or not of its shape (one warning)."""
    return state.load(weights_path(cfg), {}, check_weights).get("services", {})


class Adjuster:
    """adjust(vs, real) -> Dest or None, for sync.desired_table; extra(vs) adds a sorry server."""

    def __init__(self, health, weights):
        self.health, self.weights = health, weights

    def touches(self, vs):
        """False when no state speaks of vs: its configured entries stand as they are."""
        return vs.name in self.health or (vs.reweight != "none" and vs.name in self.weights)

    def __call__(self, vs, real):
        dest = real.dest
        entry = str(dest)
        w = (self.weights.get(vs.name) or {}).get(entry, {}).get("weight")
        if vs.reweight != "none" and isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 65535:
            dest = dest.replace(weight=w)
        return _health_adjust(vs, dest, self.health)

    def extra(self, vs):
        return _sorry(vs, self.health)


def adjuster(cfg, health=None, weights=None):
    """The Adjuster of the state files (or of the given health and weights)."""
    health = load_health(cfg) if health is None else health
    weights = load_weights(cfg) if weights is None else weights
    return Adjuster(health, weights)


# --- health (check-real) -------------------------------------------------------

def _entries(health, vs):
    entries = health.get(vs.name)
    return entries if isinstance(entries, dict) else {}


def _entry(entries, dest):
    e = entries.get(str(dest))
    return e if isinstance(e, dict) else {}


def all_down(vs, health):
    """Every real server of vs is known to be down (the case for a sorry server)."""
    entries = _entries(health, vs)
    return bool(vs.reals) and all(_entry(entries, r.dest).get("up") is False for r in vs.reals)


def _health_adjust(vs, dest, health):
    entries = _entries(health, vs)
    e = _entry(entries, dest)
    if e.get("up") is False:
        if all_down(vs, health) and not vs.sorry:
            # Never empty a service silently: keep the last healthy set (check-real
            # marks it "kept" and says so loudly), or everything if none is marked.
            marked = any(_entry(entries, r.dest).get("kept") for r in vs.reals)
            if e.get("kept") or not marked:
                return dest
        return None if vs.on_failure == "remove" else dest.replace(weight=0)
    pct = e.get("weight_percent")
    if isinstance(pct, int) and 0 <= pct < 100 and dest.weight:
        return dest.replace(weight=max(1, dest.weight * pct // 100) if pct else 0)
    return dest


def _sorry(vs, health):
    """The sorry server joins the table only while every real server is down."""
    return [vs.sorry] if vs.sorry and all_down(vs, health) else []
