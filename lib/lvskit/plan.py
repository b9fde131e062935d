"""Desired table vs the table read back from the kernel: the exact operations.

Pure functions, no I/O (kube-proxy's IPVS reconciler is the model):
- services and real servers are matched by identity; any other difference is
  an edit in place: a service is never deleted to be changed, never flushed;
- only services we manage are touched; a service we created earlier and that
  left the config (``owned``) is deleted; every other kernel entry is foreign;
- a real server that left a service is drained (weight 0, deleted once its
  connections are gone; UDP at once) or deleted, per the service's removal.
"""
import operator
from itertools import repeat

from .model import PROTOCOLS, SETTINGS, dest_ipvsadm, service_ipvsadm
from .record import record

ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE = "add-service", "edit-service", "del-service"
ADD_DEST, EDIT_DEST, DEL_DEST = "add-dest", "edit-dest", "del-dest"
_FLAG = {ADD_SERVICE: "-A", EDIT_SERVICE: "-E", DEL_SERVICE: "-D",
         ADD_DEST: "-a", EDIT_DEST: "-e", DEL_DEST: "-d"}


class Op(record("Op", "kind", "service", dest=None)):
    """One change: kind, the Service it is about, and the Dest for a real-server change."""
    __slots__ = ()

    def ipvsadm(self):
        """The same change as an ipvsadm command line."""
        kind, svc, dest = self
        if kind in (ADD_DEST, EDIT_DEST):      # first: 10,000 lines of a cold load
            return f"ipvsadm {_FLAG[kind]} {dest_ipvsadm(svc.key, dest)}"
        if kind == DEL_SERVICE:
            args = svc.key.ipvsadm()
        elif kind in (ADD_SERVICE, EDIT_SERVICE):
            args = service_ipvsadm(svc)
        else:
            args = f"{svc.key.ipvsadm()} -r {dest}"
        return f"ipvsadm {_FLAG[kind]} {args}"

    def __str__(self):
        what = {ADD_SERVICE: "add service", EDIT_SERVICE: "change service", DEL_SERVICE: "delete service",
                ADD_DEST: "add real server", EDIT_DEST: "change real server",
                DEL_DEST: "delete real server"}[self.kind]
        if self.dest is None:
            return f"{what} {self.service.key}"
        extra = f" weight {self.dest.weight}" if self.kind != DEL_DEST else ""
        return f"{what} {self.dest} in {self.service.key}{extra}"


def _drain_or_delete(svc, dest, removal):
    """What to do with a real server that should no longer be in the service."""
    udp = svc.key.protocol == PROTOCOLS["udp"]
    if removal == "delete" or udp or (dest.weight == 0 and dest.active + dest.inactive == 0):
        return Op(DEL_DEST, svc, dest)
    if dest.weight != 0:
        return Op(EDIT_DEST, svc, dest.replace(weight=0, active=0, inactive=0, persistent=0))
    return None     # weight 0 already, connections still draining


_new = tuple.__new__
_SETTINGS = operator.itemgetter(*range(SETTINGS.start, SETTINGS.stop))


def _as_wanted(wd, hd):
    """The usual case: every real server in place and as wanted, no other one.

    Compared by C-level map()s over itemgetters: 10,000 real servers a run.
    """
    return wd.keys() == hd.keys() and \
        list(map(_SETTINGS, wd.values())) == list(map(_SETTINGS, map(hd.__getitem__, wd)))


def plan_changes(desired, current, owned=(), removal=None):
    """Operations that turn ``current`` into ``desired``.

    desired, current: {ServiceKey: Service with .dests}.  owned: keys of
    services we created before (state file); those no longer desired are
    deleted.  removal: {ServiceKey: "drain"|"delete"} (default drain).
    """
    removal = removal or {}
    changed = []    # (key, its operations): only these are sorted, not 1,000 keys a run
    for key, want in desired.items():
        have = current.get(key)
        if have is None:    # Ops by C-level maps: a cold load makes 10,000
            wd = want.dests
            changed.append((key, [Op(ADD_SERVICE, want)] + list(map(
                _new, repeat(Op), zip(repeat(ADD_DEST), repeat(want), map(wd.__getitem__, sorted(wd)))))))
            continue
        mine = []
        if want.settings() != have.settings():
            mine.append(Op(EDIT_SERVICE, want))
        wd, hd = want.dests, have.dests
        if not _as_wanted(wd, hd):
            for dkey, dest in sorted(hd.items()):
                if dkey not in wd:
                    op = _drain_or_delete(want, dest, removal.get(key, "drain"))
                    if op:
                        mine.append(op)
            for dkey, dest in sorted(wd.items()):
                old = hd.get(dkey)
                if old is None:
                    mine.append(Op(ADD_DEST, want, dest))
                elif old.settings() != dest.settings():
                    mine.append(Op(EDIT_DEST, want, dest))
        if mine:
            changed.append((key, mine))
    changed.sort(key=lambda item: item[0])
    ops = [op for _, mine in changed for op in mine]
    for key in sorted(set(owned) - set(desired)):
        if key in current:
            ops.append(Op(DEL_SERVICE, current[key]))
    return ops
