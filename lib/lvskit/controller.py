"""The weight controller: agents' spare capacity in, kernel weights out.  Pure.

For one real server each round (the knobs are [reweight] keys):

  full    = configured weight x scale       (IPVS weights are relative: scale
                                              gives them room to move, 2 -> 200)
  smooth  = alpha x capacity + (1 - alpha) x smooth     EWMA of the answers
  target  = full x smooth, within floor x full .. ceiling x full
  slow start: for slow_start seconds after a server came back, target is at
          most full x ceiling x (time since back / slow_start)
  dead-band: a target within deadband x full of the current weight is ignored
  max step: the weight moves at most max_step x full per round

A server whose agent says drain, maint or down gets weight 0 at once, and
slow-starts when it says up again.  No answer (missing, late, garbage) leaves
the server exactly as it was.  Across a service, ``keep_one`` makes sure load
alone never leaves every server at weight 0.

State per server is a plain dict (it lives in weights.json):
  weight   int, what the kernel should have
  smooth   float or None, the EWMA of capacity
  since    float or None, when the server came back (slow start)
  out      bool, check-real or the agent took it out last round
(reweight adds "error" and "answer", the last answer's problem or text).
check_state is that dict's shape, for whoever reads weights.json.
"""
from . import state
from .model import record


class Params(record("Params",
                    alpha=0.25,         # weight of the newest answer in the EWMA
                    deadband=0.05,      # fraction of full weight
                    max_step=0.1,       # fraction of full weight per round
                    floor=0.05,         # fraction of full weight; load alone never goes below
                    ceiling=1.0,        # fraction of full weight
                    scale=100,
                    slow_start=60.0)):  # seconds; 0 = off
    __slots__ = ()


def check_state(s, where):
    """A server's state dict read from weights.json, checked key by key (state.Shape if bad).

    smooth is an EWMA of fractions, so 0..1; a time out of range or not finite
    would overflow the slow-start arithmetic.
    """
    state.obj(s, where)
    for key, check in (("weight", lambda v, w: state.integer(v, w, 0, 65535)),
                       ("smooth", lambda v, w: state.number(v, w, 0, 1)),
                       ("since", state.timestamp),
                       ("out", state.boolean),
                       ("error", state.text),
                       ("answer", state.text)):
        if s.get(key) is not None:
            check(s[key], f"{where}.{key}")
    return s


def full_weight(base, p):
    return base * p.scale


def initial(base, p):
    """A server we know nothing about: its configured weight, scaled."""
    return {"weight": min(65535, round(full_weight(base, p) * p.ceiling)), "smooth": None,
            "since": None, "out": False}


def step(prev, capacity, base, now, p, out=False):
    """New state of one server.

    prev: its state dict or None; capacity: 0..1 from a good answer, or None
    when there was no usable answer; out: check-real has it out of the table.
    """
    s = dict(prev) if prev else initial(base, p)
    full = full_weight(base, p)
    if out:
        s["out"] = True
        return s
    if capacity is None:
        return s
    if s.get("out"):
        # back from check-real or an agent's drain: old smoothing is stale
        s["out"], s["since"], s["smooth"] = False, now, None
    smooth = capacity if s.get("smooth") is None else p.alpha * capacity + (1 - p.alpha) * s["smooth"]
    s["smooth"] = smooth
    lo, hi = p.floor * full, p.ceiling * full
    target = min(max(full * smooth, lo), hi)
    if s.get("since") is not None:
        if p.slow_start > 0 and now - s["since"] < p.slow_start:
            ramp = max((now - s["since"]) / p.slow_start, p.floor)
            s["weight"] = _clip(min(target, hi * ramp))
            return s
        s["since"] = None
    weight = s["weight"]
    if abs(target - weight) < p.deadband * full:
        return s
    limit = p.max_step * full
    s["weight"] = _clip(weight + max(-limit, min(limit, target - weight)))
    return s


def _clip(w):
    return max(0, min(65535, round(w)))


def drain(prev, base, p):
    """The agent asked for no new work (drain, maint, down): weight 0 now."""
    s = dict(prev) if prev else initial(base, p)
    s["weight"], s["out"] = 0, True
    return s


def keep_one(states, eligible, bases, p):
    """Never leave every eligible server of a service at weight 0.

    states: {key: state}; eligible: keys check-real has in the table.  When
    all of them are at 0, the one with the most spare capacity gets the floor
    weight back.  Returns the key it kept, or None.
    """
    eligible = [k for k in eligible if k in states]
    if not eligible or any(states[k]["weight"] > 0 for k in eligible):
        return None
    best = max(sorted(eligible), key=lambda k: states[k].get("smooth") or 0.0)
    s = dict(states[best])
    s["weight"] = max(1, round(p.floor * full_weight(bases[best], p)))
    states[best] = s
    return best
