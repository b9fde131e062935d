"""A fake IPVS table kept in a file, shared by the processes that run on it.

tests/unit/fakekernel.py's table lives in one process; here each read and
each write goes through a pickle file, so ipvs-sync, lvs-announce and the
test itself see the same "kernel", and emptying the file is `ipvsadm -C`.
For hosts without IPVS (tests/netns/test_announce_gate.py); the guest's real
table is tests/lab/test_announce_gate.py's.

    python3 -S filekernel.py TABLE_FILE SCRIPT ARGS...
"""
import os
import pickle
import runpy
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "unit"), os.path.join(HERE, "..", "..", "lib")]
from fakekernel import FakeKernel  # noqa: E402


def load(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (FileNotFoundError, EOFError):
        return {}


def save(path, table):
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(table, f)
    os.replace(tmp, path)


class FileKernel(FakeKernel):
    path = None

    def read(self, keys=None):
        self.table = load(self.path)
        return super().read(keys)

    def execute(self, ops):
        self.table = load(self.path)
        failed = super().execute(ops)
        save(self.path, self.table)
        return failed


if __name__ == "__main__":
    FileKernel.path = sys.argv[1]
    fake = types.ModuleType("lvskit.ipvs")
    fake.Kernel = FileKernel
    sys.modules["lvskit.ipvs"] = fake
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
