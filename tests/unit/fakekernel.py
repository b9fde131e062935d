"""The unit tests' fake IPVS kernel: a table of plain dicts with lvskit.ipvs.Kernel's interface.

It keeps the kernel's rules that matter to the planner: adding what exists
fails with EEXIST, changing or deleting what is missing fails with ESRCH
(no such service) or ENOENT (no such real server), and a service is deleted
with its real servers.  Every operation that reached it is in ``writes``.

As a program it runs a bin/ script unchanged on that fake kernel (lvskit.ipvs
replaced by a module whose Kernel is an empty FakeKernel), so a test can run
ipvs-sync, check-real, reweight and lvs-status as real processes on a host
without IPVS, and never touch a real table:

    python3 -S fakekernel.py SCRIPT ARGS...
"""
import errno
import os
import runpy
import sys
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from lvskit import plan as P  # noqa: E402


class FakeKernel:
    def __init__(self, services=None):
        self.table = {}         # ServiceKey -> Service (with its own dests dict)
        self.writes = []        # every operation that reached "the kernel"
        for svc in (services or {}).values() if isinstance(services, dict) else (services or ()):
            self.table[svc.key] = svc.replace(dests=dict(svc.dests))

    def read(self, keys=None):
        return {k: s.replace(dests=dict(s.dests)) for k, s in self.table.items()
                if keys is None or k in keys}

    def dests(self, key):
        return dict(self.table[key].dests) if key in self.table else {}

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    fake = types.ModuleType("lvskit.ipvs")
    fake.Kernel = FakeKernel
    sys.modules["lvskit.ipvs"] = fake
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
