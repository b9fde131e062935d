"""The virtual IP addresses on an interface: add, delete, list (pyroute2).

The only module that changes interface addresses.  IPv6 VIPs are added with
IFA_F_NODAD, as keepalived does: duplicate address detection would keep a
taken-over address tentative (unusable) for a second or more, and the
previous holder is exactly the node we know is gone.
"""
import ipaddress

from .errors import Fatal, NOT_CONFIGURED, NOT_INSTALLED, PERMISSION

IFA_F_NODAD = 0x02
IFF_UP = 0x1


def _iproute():
    # Late: a large import, only for who changes addresses.  Debian's own
    # python3-pyroute2 (0.7.2) does for addresses; a real server installed
    # without the vendored copy (make install-realserver) uses it.
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise Fatal("needs pyroute2: apt-get install python3-pyroute2", NOT_INSTALLED) from None
    return IPRoute()


class Addresses:
    """One interface's addresses, through one netlink socket (kept open: takeover is hot)."""

    def __init__(self, interface, ipr=None):
        self.interface = interface
        self.ipr = ipr or _iproute()
        found = self.ipr.link_lookup(ifname=interface)
        if not found:
            raise Fatal(f"no interface {interface!r}", NOT_CONFIGURED)
        self.index = found[0]

    def close(self):
        self.ipr.close()

    def list(self):
        """Set of 'address/prefix' on the interface."""
        out = set()
        for msg in self.ipr.get_addr(index=self.index):
            out.add(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        return out

    def is_up(self):
        """The interface's administrative state (IFF_UP)."""
        return bool(self.ipr.get_links(self.index)[0]["flags"] & IFF_UP)

    def set_up(self):
        try:
            self.ipr.link("set", index=self.index, state="up")
        except Exception as e:     # pyroute2's NetlinkError
            code = getattr(e, "code", 0)
            raise Fatal(f"ip link set {self.interface} up: {e}", PERMISSION if code == 1 else 1) from None

    def holds(self, vip):
        address = vip.split("/")[0]
        return any(a.split("/")[0] == address for a in self.list())

    def labelled(self, label):
        """Set of 'address/prefix' on the interface whose IPv4 label is `label`."""
        return {f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in self.ipr.get_addr(index=self.index)
                if m.get_attr("IFA_LABEL") == label}

    def add(self, vip, present=None, label=None):
        """Add vip ('address/prefix'); True when it was added, False when already there.

        present: the list() result when the caller already has it (one dump per takeover).
        label: an IPv4 address label (INTERFACE:NAME), to find it again by.
        """
        present = self.list() if present is None else present
        if any(a.split("/")[0] == vip.split("/")[0] for a in present):
            return False
        iface = ipaddress.ip_interface(vip)
        kw = {"index": self.index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if label:
            kw["label"] = label
        if iface.version == 6:
            kw["flags"] = IFA_F_NODAD
        self._call("add", vip, **kw)
        return True

    def delete(self, vip):
        """Delete vip; True when it was deleted, False when it was not there."""
        found = [a for a in self.list() if a.split("/")[0] == vip.split("/")[0]]
        for a in found:
            address, prefix = a.split("/")
            self._call("del", a, index=self.index, address=address, prefixlen=int(prefix))
        return bool(found)

    def _call(self, command, vip, **kw):
        try:
            self.ipr.addr(command, **kw)
        except Exception as e:     # pyroute2's NetlinkError and friends
            code = getattr(e, "code", 0)
            if command == "add" and code == 17:     # EEXIST: raced with another adder
                return
            if command == "del" and code == 99:     # EADDRNOTAVAIL: already gone
                return
            raise Fatal(f"ip addr {command} {vip} dev {self.interface}: {e}",
                        PERMISSION if code == 1 else 1) from None


def ip_syntax(command, vip, interface, label=None):
    """The same change as an ip(8) command line, for --dry-run."""
    extra = " nodad" if ":" in vip and command == "add" else ""
    extra += f" label {label}" if label and command == "add" else ""
    return f"ip addr {command} {vip} dev {interface}{extra}"
