"""hb-listen's replay floors: per peer, the (generation, seq) no beat it accepts may be at or below.

Kept in STATE_DIR (state.replay_path) so that after a restart or a crash of
hb-listen, datagrams captured before it stay refused (heartbeat.Receiver
applies them).  The file names a number beyond every beat accepted: written
ahead, a span of beats at a time (see Floors.keep), and exact at a clean
exit.  It is state, deletable: deleted, beats captured before the restart are
accepted once each again.
"""
from .. import log, state


def check_floors(data):
    """hb-replay.json's shape: {peer: {"generation": N, "seq": N}}, N in 0..2**64-1."""
    out = {}
    for name, v in state.obj(data, "the file").items():
        v = state.obj(v, name)
        out[name] = (state.integer(v.get("generation"), f"{name}.generation", 0, (1 << 64) - 1),
                     state.integer(v.get("seq"), f"{name}.seq", 0, (1 << 64) - 1))
    return out


def load_floors(path, peers):
    """The floors in path for the configured peers: {peer: (generation, seq)}.

    A file of any other shape is treated as absent, with one warning.
    """
    floors = state.load(path, {}, check_floors)
    return {name: floor for name, floor in floors.items() if name in peers}


class Floors:
    """The floors file as hb-listen keeps it.

    span: how many beats past a peer's newest one the file reserves.  After a
    crash, a live peer stays unheard until its numbers pass the reservation:
    up to a span of beats.
    """

    RETRY = 1.0         # seconds before a failed write is tried again

    def __init__(self, path, peers, span, limited):
        self.path, self.span, self.limited = path, span, limited
        self.kept = load_floors(path, peers)        # what the file holds
        self.retry_at = -1e9

    def due(self, tops, now):
        """True when a peer's newest beat (tops: {peer: (generation, seq)}) came within half a span of the file's."""
        if now < self.retry_at:
            return False
        for name, (generation, seq) in tops.items():
            kept = self.kept.get(name)
            if kept is None or kept[0] != generation or seq + self.span // 2 > kept[1]:
                return True
        return False

    def keep(self, tops, now):
        """Reserve the next span of every heard peer's numbers, ahead of the beats.

        Called after every decision, and written every half span: the half
        span's margin covers the write's delay, so the file always names a
        number beyond every beat accepted.
        """
        if self.due(tops, now):
            ahead = {n: (g, seq + self.span) for n, (g, seq) in tops.items()}
            self.save({**self.kept, **ahead}, now)

    def save(self, floors, now):
        try:
            state.save(self.path, {n: {"generation": g, "seq": seq} for n, (g, seq) in floors.items()})
        except OSError as e:
            self.retry_at = now + self.RETRY
            self.limited("floors", log.warning, f"{self.path}: {e.strerror or e}: a restart after a "
                         "crash may accept heartbeats captured before it")
            return
        self.kept = floors
