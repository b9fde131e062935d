"""An IPVS table of plain dicts with the kernel module's interface.

Two uses: the fake kernel of the unit tests, and ipvs-sync --every's memory
of the kernel table between full reads (so a config change costs one plan
and its writes, not a dump of the whole table).  It keeps the kernel's rules
that matter to the planner: adding what exists fails with EEXIST, changing or
deleting what is missing fails with ESRCH or ENOENT, and a service is deleted
with its real servers.
"""
import errno
import os

from . import plan as P


class MemoryTable:
    def __init__(self, services=None):
        self.table = {}         # ServiceKey -> Service (with its own dests dict)
        self.writes = []        # every operation that reached "the kernel"
        for svc in (services or {}).values() if isinstance(services, dict) else (services or ()):
            self.table[svc.key] = svc.replace(dests=dict(svc.dests))

    def read(self, keys=None):
        return {k: s.replace(dests=dict(s.dests)) for k, s in self.table.items()
                if keys is None or k in keys}

    def _one(self, op):
        key = op.service.key
        have = self.table.get(key)
        if op.kind == P.ADD_SERVICE:
            if have:
                return errno.EEXIST
            self.table[key] = op.service.replace(dests={})
        elif have is None:
            return errno.ESRCH
        elif op.kind == P.EDIT_SERVICE:
            self.table[key] = op.service.replace(dests=have.dests)
        elif op.kind == P.DEL_SERVICE:
            del self.table[key]
        elif op.kind == P.ADD_DEST:
            if op.dest.key in have.dests:
                return errno.EEXIST
            have.dests[op.dest.key] = op.dest
        elif op.dest.key not in have.dests:
            return errno.ENOENT
        elif op.kind == P.EDIT_DEST:
            old = have.dests[op.dest.key]
            have.dests[op.dest.key] = op.dest.replace(active=old.active, inactive=old.inactive)
        elif op.kind == P.DEL_DEST:
            del have.dests[op.dest.key]
        return 0

    def execute(self, ops):
        """Apply every operation; return [(op, message)] for the ones that failed."""
        failed = []
        for op in ops:
            self.writes.append(op)
            err = self._one(op)
            if err:
                failed.append((op, os.strerror(err)))
        return failed

    def close(self):
        pass
