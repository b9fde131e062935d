"""A real server's spare capacity, from what the kernel already counts.

The formula (knobs are [agent] keys, see lvskit.ini(5), [agent]):

  cpu     = 1 - (loadavg / cpus) / cpu_full       loadavg: the load_avg-minute figure
          = 1 - (busy / cpus) / cpu_full          with cgroup: busy = CPU seconds the
                                                  cgroup used per second (cpu.stat)
  memory  = 1 - psi_some_avg10 / psi_full         when /proc/pressure/memory exists
          = (1 - used) / (1 - mem_ok)             else, used = 1 - MemAvailable/MemTotal
  session = 1 - sessions / max_sessions           logins on a tty, pty or X display
  capacity = min(cpu, memory, session), each clamped to 0..1

The scarcest resource decides: a desktop server with idle CPUs but 40 X
sessions is full all the same.  A knob of 0 (cpu_full, psi_full,
max_sessions) or memory = off leaves that resource out.

Everything is read below ``proc_root`` (default /proc), ``utmp`` and the
cgroup directory, so a test can point the agent at prepared files; each read
is one small file, which keeps an answer cheap enough for every poll.

Why a cgroup: the load average is one figure per kernel, whatever runs; the
CPU time of a cgroup (user.slice: the desktops; a service's slice) is the
load of just that work, and a cgroup v2 counts it always (cpu.stat needs no
controller enabled).  Its pressure (cpu.pressure) is no substitute: tasks
that fill every CPU without waiting for one show none.
"""
import os
import struct
import time

from . import state
from .model import record

# struct utmp on Linux (glibc, 64-bit and 32-bit alike since ut_tv is int32 pairs).
_UTMP = struct.Struct("<hxxi32s4s32s256shhiii4i20x")
USER_PROCESS = 7


class Reading(record("Reading", "capacity", "cpu", "memory", "session",
                     "load",            # the load average, or the CPUs the cgroup kept busy
                     "cpus", "sessions", cgroup="")):
    __slots__ = ()

    def explain(self):
        what = (f"{self.load:.2f} of {self.cpus:g} cpus busy in {self.cgroup}" if self.cgroup
                else f"load {self.load:.2f} on {self.cpus:g} cpus")
        return (f"capacity {self.capacity:.0%} = min(cpu {self.cpu:.0%} [{what}], "
                f"memory {self.memory:.0%}, sessions {self.session:.0%} [{self.sessions}])")


def _clamp(x):
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _read(path):
    with open(path, "rb") as f:
        return f.read(65536).decode("ascii", "replace")


def cpu_count(proc_root="/proc"):
    """CPUs the kernel runs tasks on: the cpuN lines of /proc/stat."""
    try:
        n = sum(1 for line in _read(os.path.join(proc_root, "stat")).splitlines()
                if line.startswith("cpu") and line[3:4].isdigit())
    except OSError:
        n = 0
    return n or os.cpu_count() or 1


def loadavg(proc_root="/proc", minutes=1):
    fields = _read(os.path.join(proc_root, "loadavg")).split()
    return float(fields[{1: 0, 5: 1, 15: 2}[minutes]])


class CgroupCPU:
    """CPUs a cgroup v2 kept busy, on average, from usage_usec in its cpu.stat.

    A rate needs two readings: the previous answer's when it is between
    ``sample`` and MAX_AGE seconds old (lvs-agent --listen keeps one meter,
    so a director polling every 10 s gets the average of those 10 s), else a
    fresh pair ``sample`` seconds apart (inetd: a process per answer).
    """
    MAX_AGE = 60.0      # older than this, the average says more about the past than now

    def __init__(self, path, sample, clock=time.monotonic, sleep=time.sleep):
        self.path, self.sample, self.clock, self.sleep = path, sample, clock, sleep
        self.last = None

    def _file(self, name):
        try:
            return _read(os.path.join(self.path, name))
        except OSError as e:
            raise ValueError(f"cgroup {self.path}: cannot read {name}: "
                             f"{e.strerror or e} (not a cgroup v2 directory?)") from None

    def usage_usec(self):
        for line in self._file("cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                try:
                    return int(value)
                except ValueError:
                    break
        raise ValueError(f"cgroup {self.path}: no usage_usec number in cpu.stat")

    def busy(self):
        now, usage = self.clock(), self.usage_usec()
        last = self.last
        if last is None or not self.sample <= now - last[0] <= self.MAX_AGE or usage < last[1]:
            self.sleep(self.sample)     # usage < last: the cgroup was made anew
            last, now, usage = (now, usage), self.clock(), self.usage_usec()
        self.last = (now, usage)
        return (usage - last[1]) / 1e6 / max(now - last[0], 1e-6)

    def cpus(self, machine):
        """The machine's CPUs, or fewer when the cgroup's cpu.max caps it."""
        try:
            quota, period = _read(os.path.join(self.path, "cpu.max")).split()[:2]
            return min(machine, int(quota) / int(period))
        except (OSError, ValueError, ZeroDivisionError):
            return machine      # no cpu controller there, or "max": no cap


def memory_free(knobs, proc_root="/proc"):
    """Spare memory, 0..1, by PSI when the kernel has it, else by MemAvailable."""
    if knobs.memory == "off":
        return 1.0
    if knobs.memory in ("auto", "psi"):
        try:
            text = _read(os.path.join(proc_root, "pressure", "memory"))
        except OSError:
            if knobs.memory == "psi":
                raise
        else:
            some = dict(kv.split("=") for kv in text.splitlines()[0].split()[1:])
            if not knobs.psi_full:
                return 1.0
            return _clamp(1 - float(some["avg10"]) / knobs.psi_full)
    info = {}
    for line in _read(os.path.join(proc_root, "meminfo")).splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            info[key] = int(rest.split()[0])
    used = 1 - info["MemAvailable"] / info["MemTotal"]
    return _clamp((1 - used) / (1 - knobs.mem_ok))


def _alive(pid, proc_root):
    # utmp keeps entries of sessions whose process died without logging out
    return pid <= 0 or os.path.exists(os.path.join(proc_root, str(pid)))


def sessions(utmp="/var/run/utmp", proc_root="/proc"):
    """Interactive logins: USER_PROCESS entries on ttys, ptys or X displays."""
    try:
        with open(utmp, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    n = 0
    for off in range(0, len(data) - _UTMP.size + 1, _UTMP.size):
        rec = _UTMP.unpack_from(data, off)
        ut_type, pid, line = rec[0], rec[1], rec[2].split(b"\0", 1)[0]
        if ut_type != USER_PROCESS or not line:
            continue
        if line.startswith((b"tty", b"pts/", b":")) and _alive(pid, proc_root):
            n += 1
    return n


def utmp_record(line, user="u", pid=0, ut_type=USER_PROCESS):
    """One utmp record, for tests and for documenting the layout."""
    return _UTMP.pack(ut_type, pid, line.encode(), b"", user.encode(), b"", 0, 0, 0, 0, 0, 0, 0, 0, 0)


def measure(knobs, proc_root="/proc", utmp=None, meter=None):
    """Reading of this machine (or of its [agent] cgroup) now; meter: a
    CgroupCPU kept between readings.  OSError/ValueError/KeyError when /proc
    or the cgroup is unreadable."""
    cpus = cpu_count(proc_root)
    if knobs.cgroup and knobs.cpu_full:
        meter = meter or CgroupCPU(knobs.cgroup, knobs.cpu_sample)
        load, cpus = meter.busy(), meter.cpus(cpus)
    else:
        load = loadavg(proc_root, knobs.load_avg)
    cpu = _clamp(1 - (load / cpus) / knobs.cpu_full) if knobs.cpu_full else 1.0
    memory = memory_free(knobs, proc_root)
    n = sessions(utmp or knobs.utmp, proc_root) if knobs.max_sessions else 0
    session = _clamp(1 - n / knobs.max_sessions) if knobs.max_sessions else 1.0
    return Reading(min(cpu, memory, session), cpu, memory, session, load, cpus, n, knobs.cgroup)


ADMIN_STATES = ("up", "drain", "maint", "down")
_warned = {}    # path -> the version of the file last warned about


def admin_state(path):
    """up/drain/maint/down: the first word of the admin's state file.

    Up when there is none; also up, with one warning naming the file (once
    per version of it), when it is not a regular file, cannot be read, is
    not ASCII, or its first word is none of those.
    """
    if not path:
        return "up"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)     # a FIFO must not hang us
        data, version = state.read_regular(fd, 4096)
    except FileNotFoundError:
        return "up"
    except OSError as e:
        return _ignore(path, getattr(e, "version", None), e.strerror or str(e))
    if not data.isascii():
        return _ignore(path, version, "not ASCII text")
    words = data.decode("ascii").split()
    word = words[0].lower() if words else "up"
    if word not in ADMIN_STATES:
        return _ignore(path, version, f"{word[:20]!r} is none of {', '.join(ADMIN_STATES)}")
    return word


def _ignore(path, version, why):
    if _warned.get(path, False) != version:
        _warned[path] = version
        from . import log
        log.warning(f"{path}: ignoring this state file ({why}): saying up")
    return "up"
