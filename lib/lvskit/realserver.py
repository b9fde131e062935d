"""A direct-routing real server: the VIP on lo, and ARP kept quiet about it.

With direct routing the director forwards the client's packet unchanged (its
destination is still the VIP) to the real server's MAC, so the real server
must accept the VIP as local (the VIP on lo, /32 or /128) without ever
answering ARP for it, or the router's ARP cache would point the VIP at a real
server instead of the director.  The kernel does that with two sysctls,
applied as the maximum of `all` and the receiving interface:

  arp_ignore = 1    answer ARP only for addresses on the interface it came in
  arp_announce = 2  never use the VIP as the source of our own ARP requests

The sysctls go first, then the address: the other order leaves a window in
which the real server answers ARP for the VIP.  IPv6 needs no sysctl: Linux
answers neighbour solicitations only for addresses on the receiving interface.

Addresses and the link are read and changed through lvskit.vip (pyroute2),
the one way lvskit changes addresses; --dry-run still prints `ip` syntax.
"""
import ipaddress
import os

from . import log, vip as vipmod
from .errors import PERMISSION, Fatal
from .model import FORWARD

DEVICE = "lo"
SYSCTL_ROOT = "/proc/sys"
# arp_ignore 1, 2, 3 and 8 all keep quiet about the VIP; a stricter value an
# admin chose is left alone.
ARP_IGNORE_OK = (1, 2, 3, 8)
SYSCTLS = (("arp_ignore", 1), ("arp_announce", 2))
SYSCTL_DEVICES = ("all", DEVICE)


def vips_of(cfg):
    """The VIPs of the services that send a real server anything by direct routing."""
    vips = []
    for vs in cfg.services:
        addr = vs.key.address
        if addr and addr not in vips and any(r.dest.forward == FORWARD["dr"] for r in vs.reals):
            vips.append(addr)
    return vips


def parse_vips(texts):
    vips = []
    for text in texts:
        try:
            addr = str(ipaddress.ip_address(text.strip("[]")))
        except ValueError:
            raise Fatal(f"{text!r} is not an IPv4 or IPv6 address", 2) from None
        if addr not in vips:
            vips.append(addr)
    return vips


def _prefix(addr):
    return f"{addr}/{128 if ':' in addr else 32}"


_lo = None


def _device():
    """lo's Addresses, one netlink socket for the whole run."""
    global _lo
    if _lo is None:
        _lo = vipmod.Addresses(DEVICE)
    return _lo


def device_state():
    """(is_up, set of addresses) of lo."""
    lo = _device()
    return lo.is_up(), {str(ipaddress.ip_address(a.split("/")[0])) for a in lo.list()}


def _sysctl_path(device, name):
    return os.path.join(SYSCTL_ROOT, "net", "ipv4", "conf", device, name)


def read_sysctl(device, name):
    with open(_sysctl_path(device, name)) as f:
        return int(f.read().strip())


def _sysctl_ok(name, value, wanted):
    return value in ARP_IGNORE_OK if name == "arp_ignore" else value == wanted


class Step:
    """One change, printable in ip/sysctl syntax and applicable."""

    def __init__(self, text, apply):
        self.text, self.apply = text, apply

    def __str__(self):
        return self.text


def _sysctl_step(device, name, value):
    def apply():
        try:
            with open(_sysctl_path(device, name), "w") as f:
                f.write(f"{value}\n")
        except PermissionError:
            raise Fatal(f"net.ipv4.conf.{device}.{name}: permission denied (not root?)",
                        PERMISSION) from None
    return Step(f"sysctl -w net.ipv4.conf.{device}.{name}={value}", apply)


def _link_up_step():
    return Step(f"ip link set {DEVICE} up", lambda: _device().set_up())


def _addr_step(command, vip):
    def apply():
        lo = _device()
        lo.add(_prefix(vip)) if command == "add" else lo.delete(_prefix(vip))
    return Step(f"ip addr {command} {_prefix(vip)} dev {DEVICE}", apply)


def plan_up(vips):
    """The steps that make this host a DR real server for vips; [] when it is one."""
    steps = []
    if any(":" not in v for v in vips):
        for device in SYSCTL_DEVICES:
            for name, wanted in SYSCTLS:
                if not _sysctl_ok(name, read_sysctl(device, name), wanted):
                    steps.append(_sysctl_step(device, name, wanted))
    is_up, addrs = device_state()
    if not is_up:
        steps.append(_link_up_step())
    for vip in vips:
        if vip not in addrs:
            steps.append(_addr_step("add", vip))
    return steps


def plan_down(vips):
    """The steps that take vips off lo.  The sysctls stay: harmless, maybe shared."""
    _, addrs = device_state()
    return [_addr_step("del", v) for v in vips if v in addrs]


def apply(steps):
    for step in steps:
        step.apply()
        log.info(str(step))


def status(vips):
    """(ready, lines): whether every VIP is on lo and ARP is quiet, and why not."""
    lines, ready = [], True
    _, addrs = device_state()
    for vip in vips:
        here = vip in addrs
        ready &= here
        lines.append(f"{_prefix(vip)} on {DEVICE}: {'yes' if here else 'no'}")
    if any(":" not in v for v in vips):
        for device in SYSCTL_DEVICES:
            for name, wanted in SYSCTLS:
                value = read_sysctl(device, name)
                ok = _sysctl_ok(name, value, wanted)
                ready &= ok
                lines.append(f"net.ipv4.conf.{device}.{name} = {value}" + ("" if ok else f" (want {wanted})"))
    return ready, lines
