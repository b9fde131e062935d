"""Run a bin/ script unchanged, with a fake IPVS kernel: python3 -S fakekernel.py SCRIPT ARGS...

lvskit.ipvs is replaced by a module whose Kernel is an empty MemoryTable, so
a test can run ipvs-sync, check-real, reweight and lvs-status as real
processes on a host without IPVS (and never touch a real table).
"""
import os
import runpy
import sys
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from lvskit.memtable import MemoryTable  # noqa: E402


class Kernel(MemoryTable):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


fake = types.ModuleType("lvskit.ipvs")
fake.Kernel = Kernel
sys.modules["lvskit.ipvs"] = fake
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
