"""Desired table vs the table read back from the kernel: the exact operations.

Pure functions, no I/O (kube-proxy's IPVS reconciler is the model):
- services and real servers are matched by identity; any other difference is
  an edit in place: a service is never deleted to be changed, never flushed;
- only services we manage are touched; a service we created earlier and that
  left the config (``owned``) is deleted; every other kernel entry is foreign;
- a real server that left a service is drained (weight 0, deleted once its
  connections are gone; UDP at once) or deleted, per the service's removal.
"""
from .model import PROTOCOLS, dest_ipvsadm, record, service_ipvsadm

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
        if kind in (ADD_DEST, EDIT_DEST):
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


def plan_changes(desired, current, owned=(), removal=None):
    """Operations that turn ``current`` into ``desired``.

    desired, current: {ServiceKey: Service with .dests}.  owned: keys of
    services we created before (state file); those no longer desired are
    deleted.  removal: {ServiceKey: "drain"|"delete"} (default drain).
    """
    removal = removal or {}
    ops = []
    for key in sorted(desired):
        want, have = desired[key], current.get(key)
        wd = want.dests
        if have is None:
            ops.append(Op(ADD_SERVICE, want))
            ops += [Op(ADD_DEST, want, wd[dkey]) for dkey in sorted(wd)]
            continue
        if want.settings() != have.settings():
            ops.append(Op(EDIT_SERVICE, want))
        hd = have.dests
        if hd.keys() != wd.keys():
            for dkey in sorted(hd.keys() - wd.keys()):
                op = _drain_or_delete(want, hd[dkey], removal.get(key, "drain"))
                if op:
                    ops.append(op)
        changed = []    # sorted only when there are any: most runs change nothing
        for dkey, dest in wd.items():
            old = hd.get(dkey)
            if old is None or old.settings() != dest.settings():
                changed.append(dkey)
        for dkey in sorted(changed):
            ops.append(Op(EDIT_DEST if dkey in hd else ADD_DEST, want, wd[dkey]))
    for key in sorted(set(owned) - set(desired)):
        if key in current:
            ops.append(Op(DEL_SERVICE, current[key]))
    return ops
