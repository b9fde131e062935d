"""The director's IPVS kernel settings, from the config's [ipvs] section.

Two switches under /proc/sys/net/ipv4/vs (expire_nodest_conn,
expire_quiescent_template) and the three connection timeouts of ``ipvsadm
--set`` (netlink IPVS_CMD_SET_CONFIG, ipvs.Kernel.set_timeouts).  Why they
matter to a client: see config/kernel.py and lvskit.ini(5), [ipvs].

read() gives the kernel's values, plan() the changes that make them the
config's (only what differs; a key set to ``keep`` is never touched), apply()
makes them with one syslog line each.  ipvs-sync does this on every whole
run (sync.reconcile), so a takeover's ipvs-sync sets them on the spare too.
"""
import os

from . import log
from .config.kernel import SWITCHES, TIMEOUTS
from .model import record

SYSCTL_DIR = "/proc/sys/net/ipv4/vs"


class Change(record("Change", "name", "old", "new")):
    """One setting to change: name (an [ipvs] key), the kernel's value, the wanted one."""
    __slots__ = ()

    def command(self):
        """The change as an admin would type it."""
        if self.name in SWITCHES:
            return f"sysctl -w net.ipv4.vs.{self.name}={self.new}"
        return "ipvsadm --set " + " ".join(str(self.new) if key == self.name else "0" for key in TIMEOUTS)

    def __str__(self):
        return f"[ipvs] {self.name}: {self.old} -> {self.new}"


def read(kernel, sysctl_dir=None):
    """{[ipvs] key: the kernel's value, or None when it has no such setting}."""
    sysctl_dir = sysctl_dir or SYSCTL_DIR
    out = {}
    for name in SWITCHES:
        try:
            with open(os.path.join(sysctl_dir, name)) as f:
                out[name] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            out[name] = None
    timeouts = kernel.timeouts()
    for name in TIMEOUTS:
        out[name] = timeouts.get(name.rsplit("_", 1)[0])
    return out


def plan(wanted, current):
    """[Change] that make current ({key: value}) what wanted (config.Ipvs) asks; keep is skipped."""
    changes = []
    for name in SWITCHES + TIMEOUTS:
        want, have = getattr(wanted, name), current.get(name)
        if want is not None and have is not None and want != have:
            changes.append(Change(name, have, want))
    return changes


def apply(kernel, changes, sysctl_dir=None):
    """Make the changes; one syslog line each.  An OSError of a sysctl is raised."""
    sysctl_dir = sysctl_dir or SYSCTL_DIR
    timeouts = {}
    for ch in changes:
        if ch.name in SWITCHES:
            with open(os.path.join(sysctl_dir, ch.name), "w") as f:
                f.write(f"{ch.new}\n")
        else:
            timeouts[ch.name.rsplit("_", 1)[0]] = ch.new
    if timeouts:
        kernel.set_timeouts(**timeouts)
    for ch in changes:
        log.info(str(ch))


def sync(wanted, kernel, dry_run=False, sysctl_dir=None):
    """Plan and (unless dry_run) apply; returns the changes."""
    changes = plan(wanted, read(kernel, sysctl_dir))
    if changes and not dry_run:
        apply(kernel, changes, sysctl_dir)
    return changes
