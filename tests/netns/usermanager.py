"""A systemd service manager of a test's own, on a machine whose PID 1 need not be systemd.

`systemd --user`, run as root, in namespaces of its own:

- cgroups: a new child of the test's own cgroup in every hierarchy, made the
  root of a cgroup namespace, the hierarchies mounted again inside it.  A
  manager takes the cgroup it starts in for the root of all it manages, and
  moves every process it finds there into init.scope: started in the
  machine's root cgroup, that is every process on the machine.  Here the root
  it sees holds itself alone (checked before it starts), and everything it
  makes stays below that child, removed when it ends.
- mounts: private, with a tmpfs on /run/systemd holding /run/systemd/system
  (without it a manager refuses to start: "not booted with systemd").

Ready when it says so: it is started as a Type=notify service, with a
NOTIFY_SOCKET of the caller's.
"""
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time

SYSTEMD = "/lib/systemd/systemd"
CGROUPS = "/sys/fs/cgroup"


def _cgroup_mounts():
    """[(mount point, fstype, super options)] under /sys/fs/cgroup, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            at, rest = fields[4], fields[fields.index("-") + 1:]
            if at == CGROUPS or at.startswith(CGROUPS + "/"):
                out.append((at, rest[0], rest[2]))
    return out


def _own_cgroup(fstype, options):
    """This process's cgroup in the hierarchy mounted with fstype and options."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if fstype == "cgroup2" and controllers == "":
                return path
            if fstype == "cgroup" and controllers and set(controllers.split(",")) <= set(options.split(",")):
                return path
    return None


class UserManager:
    def __init__(self, workdir, notify_socket, name):
        self.dirs, self.proc, self.log = [], None, None
        self.runtime = os.path.join(workdir, "runtime")
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.runtime)
        try:
            self._start(workdir, notify_socket, name)
        except BaseException:
            self.close()        # nothing half-made stays behind
            raise

    def _start(self, workdir, notify_socket, name):
        mounts = _cgroup_mounts()
        for at, fstype, options in mounts:
            if fstype not in ("cgroup", "cgroup2"):
                continue
            own = _own_cgroup(fstype, options)
            if own is None:
                continue
            d = os.path.join(at + own, name)
            os.mkdir(d)
            self.dirs.append(d)
            if "cpuset" in options.split(","):      # an empty cpuset takes no process
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(at + own, knob)) as src, open(os.path.join(d, knob), "w") as dst:
                        dst.write(src.read())
        os.mkdir(self.runtime, 0o700)
        remount = ["umount -R " + CGROUPS] + [
            f"mkdir -p {at}; mount -t {fstype} -o {shlex.quote(options)} {fstype} {at}"
            for at, fstype, options in mounts]
        # The root it will see: this shell alone (builtins only, no subshell in it).
        alone = [f'while read -r p; do [ "$p" = "$$" ] || {{ echo "{at}: not alone ($p)" >&2; exit 1; }}; '
                 f"done < {at}/cgroup.procs" for at, fstype, _ in mounts if fstype != "tmpfs"]
        script = "\n".join(remount + alone + [
            "[ -d /run/systemd ] || mkdir /run/systemd",
            "mount -t tmpfs tmpfs /run/systemd", "mkdir /run/systemd/system",
            f"exec {SYSTEMD} --user"])
        self.log = open(os.path.join(workdir, "manager.log"), "w")
        self.proc = subprocess.Popen(
            ["unshare", "--cgroup", "--mount", "--propagation", "private", "sh", "-ec", script],
            env=dict(self.env, NOTIFY_SOCKET=notify_socket), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self._enter)

    def _enter(self):
        # in the child, before exec: into the new cgroups, so that the namespace is rooted there
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def said(self):
        with open(self.log.name) as f:
            return f.read()

    def close(self):
        """It stops its units as it ends; then its cgroups go, bottom up."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        for d in self.dirs:
            for _ in range(50):
                left = []
                for sub, _, _ in os.walk(d, topdown=False):
                    try:
                        with open(os.path.join(sub, "cgroup.procs")) as f:
                            pids = [int(p) for p in f.read().split()]
                    except OSError:
                        continue
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    try:
                        os.rmdir(sub)
                    except OSError:
                        left.append(sub)
                if not left:
                    break
                # a process killed above leaves its cgroup when it has been reaped
                time.sleep(0.1)


def available():
    """Whether this machine can run one: systemd's binary, systemctl and unshare."""
    return bool(os.path.exists(SYSTEMD) and shutil.which("systemctl") and shutil.which("unshare"))


@contextlib.contextmanager
def running(workdir, name):
    """A UserManager in workdir, once it said READY=1; yields the environment systemctl --user needs."""
    from hbtopo import NotifySocket
    ready = NotifySocket(os.path.join(workdir, "manager.notify"))
    m = UserManager(workdir, ready.path, name)
    try:
        while True:
            said = ready.next(30)
            assert said, f"no READY=1 from systemd --user: {m.said()[-2000:]}"
            if said[2].get("READY") == "1":
                break
        yield m.env
    finally:
        ready.close()
        m.close()


def systemctl(env, *args):
    return subprocess.run(["systemctl", "--user", *args], env=env, capture_output=True, text=True, timeout=90)


def show(env, unit):
    """ActiveState, MainPID and NRestarts of a unit."""
    out = systemctl(env, "show", unit, "-p", "ActiveState,MainPID,NRestarts").stdout
    return dict(line.partition("=")[::2] for line in out.splitlines())
