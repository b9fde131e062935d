"""What the table should hold right now: the config, adjusted by what we learnt.

check-real keeps each real server's health in STATE_DIR/health.json and
reweight keeps load-based weights in STATE_DIR/weights.json.  Every program
that plans the table (ipvs-sync included) applies both, so a cron run of
ipvs-sync never puts back a server that check-real took out.  Either file
may be deleted at any time: the config alone is then the answer.

health.json:  {"services": {SERVICE: {"ADDR:PORT": {"up": bool, ...}}}}
weights.json: {"services": {SERVICE: {"ADDR:PORT": {"weight": int, ...}}}}
  (reweight's controller state rides along: smooth, since, out, error,
  answer; see controller.py.  Weights count only for services whose
  config still says reweight = agent|http|external.)
"""
import os
from dataclasses import replace

from . import state


def health_path(cfg):
    return os.path.join(cfg.state_dir, "health.json")


def weights_path(cfg):
    return os.path.join(cfg.state_dir, "weights.json")


def _services(path):
    data = state.load(path, {}) or {}
    services = data.get("services") if isinstance(data, dict) else None
    return services if isinstance(services, dict) else {}


def load_weights(cfg):
    return _services(weights_path(cfg))


def adjuster(cfg, health=None, weights=None):
    """adjust(vs, real) -> Dest or None, for sync.desired_table."""
    health = _services(health_path(cfg)) if health is None else health
    weights = _services(weights_path(cfg)) if weights is None else weights

    def adjust(vs, real):
        dest = real.dest
        entry = str(dest)
        w = (weights.get(vs.name) or {}).get(entry, {}).get("weight")
        if vs.reweight != "none" and isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 65535:
            dest = replace(dest, weight=w)
        if (health.get(vs.name) or {}).get(entry, {}).get("up") is False:
            return None if vs.on_failure == "remove" else replace(dest, weight=0)
        return dest
    return adjust
