"""One lock per program, as mon had: a run never overlaps the previous one.

And one more, ``ipvs-table``, that every writer of the kernel table (ipvs-sync,
check-real, reweight, takeover) holds from reading its state to the last
write, waiting for it: their plans then never interleave.
"""
import fcntl
import os
import time

from .errors import BUSY, Fatal, PERMISSION


class Lock:
    """flock() on RUN_DIR/NAME.lock, held until close or process exit."""

    def __init__(self, run_dir, name, wait=0.0):
        """wait: seconds to wait for the lock before giving up (0: not at all)."""
        self.path = os.path.join(run_dir, f"{name}.lock")
        try:
            os.makedirs(run_dir, mode=0o755, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:    # RUN_DIR cannot be made or written: a setup problem
            raise Fatal(f"{self.path}: {e.strerror}", PERMISSION) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(self.fd)
                raise Fatal(f"another {name} is running (lock {self.path})", BUSY) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
