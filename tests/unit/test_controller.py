"""The weight controller: convergence, no oscillation, clamps, dead-band, slow start, keep-one."""
import pytest

from lvskit.controller import Params, drain, full_weight, initial, keep_one, step

P = Params()    # the shipped defaults: alpha 0.25, dead-band 5%, max step 10%, floor 5%, slow start 60 s


def run(caps, base=2, p=P, s=None, t0=0.0, dt=5.0):
    out = []
    for i, c in enumerate(caps):
        s = step(s, c, base, t0 + i * dt, p)
        out.append(s["weight"])
    return out, s


def test_unknown_server_starts_at_its_configured_weight_scaled():
    assert initial(2, P)["weight"] == 200
    assert initial(3, Params(scale=10, ceiling=0.5))["weight"] == 15


def test_converges_after_a_step_in_load_without_overshoot():
    ws, s = run([1.0] * 3 + [0.3] * 40)
    assert ws[:3] == [200, 200, 200]
    after = ws[3:]
    assert all(a >= b for a, b in zip(after, after[1:]))       # monotone: no overshoot
    assert after[0] < 200 and after[0] >= 200 - 0.1 * 200         # max step respected
    assert abs(after[-1] - 60) <= 0.05 * 200                      # within the dead-band of 2 x 100 x 30%
    assert len(set(after[-20:])) == 1                             # settled within 20 rounds
    # and back up when the load ends
    ws, _ = run([1.0] * 30, s=s, t0=1000)
    assert all(a <= b for a, b in zip(ws, ws[1:])) and abs(ws[-1] - 200) <= 10


def test_small_changes_fall_in_the_dead_band():
    _, s = run([0.5] * 20)
    w = s["weight"]
    ws, _ = run([0.52, 0.48, 0.53, 0.47, 0.51] * 6, s=s, t0=500)
    assert set(ws) == {w}


def test_noisy_load_does_not_make_weights_flap():
    import random
    rnd = random.Random(7)
    ws, _ = run([min(1, max(0, 0.6 + rnd.uniform(-0.08, 0.08))) for _ in range(200)])
    changes = sum(1 for a, b in zip(ws[10:], ws[11:]) if a != b)
    assert changes <= 8, ws


def closed_loop(sizes, utilisation, p=P, rounds=200):
    """Servers share a demand by weight; each one's load is its share over its size."""
    demand = utilisation * sum(sizes.values())
    states, history = {k: None for k in sizes}, []
    for i in range(rounds):
        weights = {k: (states[k] or initial(1, p))["weight"] for k in sizes}
        total = sum(weights.values())
        for k in sizes:
            used = demand * weights[k] / total / sizes[k]
            states[k] = step(states[k], max(0.0, 1 - used), 1, i * 5.0, p)
        history.append(tuple(states[k]["weight"] for k in sizes))
    return history


def test_closed_loop_settles_and_favours_the_bigger_server():
    late = closed_loop({"a": 1.0, "b": 0.5}, 0.6)[40:]
    assert len(set(late)) == 1, late[:10]
    a, b = late[-1]
    assert a > b > 0


@pytest.mark.parametrize("sizes", [{"a": 1, "b": 1}, {"a": 1, "b": 0.5}, {"a": 1, "b": 0.25},
                                   {"a": 2, "b": 1, "c": 0.5, "d": 0.5}])
@pytest.mark.parametrize("utilisation", [0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 1.1])
def test_closed_loop_never_swings_more_than_the_dead_band(sizes, utilisation):
    """Near saturation a server's spare capacity is steep in its share, so the
    weight may hunt inside the dead-band; it must never swing wider than that."""
    late = closed_loop(sizes, utilisation)[100:]
    for i in range(len(sizes)):
        column = [w[i] for w in late]
        assert max(column) - min(column) <= 2 * P.deadband * full_weight(1, P), column[:20]


def test_floor_and_ceiling_clamp():
    ws, _ = run([0.0] * 20)
    assert ws[-1] == 10                         # floor 5% of 200: load alone never drains
    p = Params(ceiling=0.8, floor=0.2, slow_start=0)
    ws, _ = run([1.0] * 20, p=p)
    assert max(ws) == 160
    ws, _ = run([0.0] * 20, p=p)
    assert ws[-1] == 40


def test_max_step_limits_each_round():
    ws, _ = run([1.0, 0.0, 0.0, 0.0], p=Params(alpha=1.0, max_step=0.1, slow_start=0))
    assert ws == [200, 180, 160, 140]


def test_no_answer_changes_nothing():
    _, s = run([0.4] * 10)
    assert step(s, None, 2, 999, P) == s
    assert step(None, None, 2, 0, P)["weight"] == 200


def test_drain_is_immediate_and_return_slow_starts():
    _, s = run([0.9] * 10)
    s = drain(s, 2, P)
    assert s["weight"] == 0 and s["out"]
    ws = []
    for t in (1000, 1015, 1030, 1045, 1060, 1075):
        s = step(s, 0.9, 2, t, P)
        ws.append(s["weight"])
    assert ws[0] == 10                              # floor at first
    assert ws[1:4] == [50, 100, 150]                # linear ramp of the ceiling, 15 s of 60
    assert ws[4] >= 170 and ws[5] >= 170
    assert s["since"] is None


def test_check_real_out_then_back_slow_starts():
    _, s = run([1.0] * 5)
    s = step(s, 1.0, 2, 100, P, out=True)
    assert s["out"] and s["weight"] == 200          # weight kept; the desired table takes it out
    s = step(s, 1.0, 2, 200, P)
    assert s["weight"] == 10 and s["since"] == 200


def test_keep_one_never_drains_every_server():
    st = {"a": dict(initial(1, P), weight=0, smooth=0.2), "b": dict(initial(1, P), weight=0, smooth=0.6),
          "c": dict(initial(1, P), weight=0, smooth=0.9)}
    # c is out (check-real): it doesn't count and isn't picked
    assert keep_one(st, ["a", "b"], {"a": 1, "b": 1, "c": 1}, P) == "b"
    assert st["b"]["weight"] == 5 and st["a"]["weight"] == 0
    assert keep_one(st, ["a", "b"], {"a": 1, "b": 1, "c": 1}, P) is None    # one has weight now
    assert keep_one(st, [], {}, P) is None
