"""Tell the network that an address moved: gratuitous ARP, unsolicited NA.

IPv4: a broadcast ARP request and an ARP reply, both with sender = target =
the VIP and our MAC (arping -U and -A); hosts and switches that already have
the VIP in their cache update it to our MAC.  IPv6: an unsolicited neighbour
advertisement to all-nodes with the Override flag (RFC 4861 7.2.6).  Both go
out through raw sockets: no external program to start during a takeover.
"""
import ipaddress
import socket
import struct
import threading

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def mac_of(interface):
    with open(f"/sys/class/net/{interface}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def arp_frames(mac, address):
    """The two Ethernet frames (request, reply) announcing address at mac."""
    ip = socket.inet_aton(address)
    frames = []
    for op, target_mac in ((1, b"\0" * 6), (2, BROADCAST)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target_mac, ip)
        frames.append(BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp)
    return frames


def na_message(mac, address):
    """An unsolicited neighbour advertisement (ICMPv6 136; the kernel adds the checksum)."""
    flags = 0x20000000      # Override; not Router, not Solicited
    target = ipaddress.IPv6Address(address).packed
    option = struct.pack("!BB6s", 2, 1, mac)    # target link-layer address, 8 bytes
    return struct.pack("!BBHI", 136, 0, 0, flags) + target + option


class Announcer:
    """Announces VIPs on one interface; the IPv4 packet socket is opened once and kept.

    Binding a packet socket to an interface, or closing one, waits for an RCU
    grace period of the kernel (synchronize_net): on the takeover path that
    wait would hold back the first ARP frame, then the role file.  So the
    socket is opened without a protocol (no receive hook: it queues nothing
    and needs no bind) and each frame names its interface and protocol.
    """

    def __init__(self, interface):
        self.interface, self.packet = interface, None
        self.lock = threading.Lock()        # the worker's late ARP burst runs in a thread of its own

    def announce(self, vips, count=1):
        """Send count announcements of every VIP; return the number of packets sent."""
        with self.lock:
            return self._announce(vips, count)

    def _announce(self, vips, count):
        mac = mac_of(self.interface)
        sent = 0
        v4 = [v.split("/")[0] for v in vips if ":" not in v]
        v6 = [v.split("/")[0] for v in vips if ":" in v]
        if v4:
            if self.packet is None:
                self.packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            for _ in range(count):
                for address in v4:
                    for frame in arp_frames(mac, address):
                        self.packet.sendto(frame, (self.interface, ETH_P_ARP))
                        sent += 1
        if v6:
            index = socket.if_nametoindex(self.interface)
            for address in v6:
                with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    s.bind((address, 0, 0, index))
                    for _ in range(count):
                        s.sendto(na_message(mac, address), ("ff02::1", 0, 0, index))
                        sent += 1
        return sent

    def close(self):
        if self.packet is not None:
            self.packet.close()
            self.packet = None

