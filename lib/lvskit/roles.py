"""Who is the director: a pure state machine over what the heartbeats said.

Each node ranks by (priority, then name): higher priority wins, and between
equal priorities the alphabetically first name wins, so every node that sees
the same peers reaches the same answer without talking more.

- standby, no live peer active: the best-ranked eligible node (standby, alive)
  acquires; the others wait for it.  During initdead after start, a node does
  not act until it has heard every peer once (they may still be booting).
- active, another live peer active (a healed partition): the lower-ranked one
  releases, the higher-ranked one announces again (gratuitous ARP), so the
  network's ARP caches end up pointing at the one that stays.
- failback, make-before-break: with auto_failback a standby that outranks
  every live active peer acquires once it has run failback_delay; the active
  one then sees a higher-ranked rival and releases (the rule above).  The
  VIPs are never given up before a node that is ready has taken them: a
  returning director whose hb-listen is not running yet takes nothing, so the
  spare keeps serving.  Without auto_failback the spare stays active.
- held (taken out by hand, ``takeover --release``): never acts; its peers do
  not count it as eligible, so they take over from it.
"""
from .heartbeat import ACTIVE, HELD, STANDBY
from .model import record

ACQUIRE, RELEASE, ANNOUNCE = "acquire", "release", "announce"


class Policy(record("Policy", "deadtime", initdead=0.0, auto_failback=True, failback_delay=0.0)):
    __slots__ = ()


class PeerView:
    """What hb-listen knows of a peer; not frozen: a routine heartbeat moves `last` in place.

    priority; state: what its last heartbeat said; last: when its last valid
    heartbeat arrived (monotonic seconds); since: since when it has been alive
    without a gap of deadtime; generation: its hb-send's run (a new one at
    every start), None when unknown.
    """
    __slots__ = ("priority", "state", "last", "since", "generation")

    def __init__(self, priority, state, last, since, generation=None):
        self.priority, self.state, self.last, self.since = priority, state, last, since
        self.generation = generation


def outranks(a_priority, a_name, b_priority, b_name):
    """True when node a wins over node b."""
    return (-a_priority, a_name) < (-b_priority, b_name)


def alive(peer, now, policy):
    return peer is not None and now - peer.last <= policy.deadtime


def decide(me, my_priority, my_state, peers, now, started, policy, all_peers=()):
    """ACQUIRE, RELEASE, ANNOUNCE or None.

    peers: {name: PeerView} of the peers heard so far; all_peers: the names of
    every configured peer (for initdead).
    """
    live = {n: p for n, p in peers.items() if alive(p, now, policy)}
    if my_state == HELD:
        return None
    if my_state == ACTIVE:
        rivals = {n: p for n, p in live.items() if p.state == ACTIVE}
        if any(outranks(p.priority, n, my_priority, me) for n, p in rivals.items()):
            return RELEASE
        if rivals:
            return ANNOUNCE
        return None
    if now - started < policy.initdead and any(n not in peers for n in all_peers):
        return None
    active = {n: p for n, p in live.items() if p.state == ACTIVE}
    if active:
        failback = (policy.auto_failback and now - started >= policy.failback_delay
                    and all(outranks(my_priority, me, p.priority, n) for n, p in active.items()))
        if not failback:
            return None
    for n, p in live.items():
        if p.state == STANDBY and outranks(p.priority, n, my_priority, me):
            return None
    return ACQUIRE
