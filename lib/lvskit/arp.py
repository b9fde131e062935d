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


def announce(interface, vips, count=1):
    """Send count announcements of every VIP; return the number of packets sent."""
    mac = mac_of(interface)
    sent = 0
    v4 = [v.split("/")[0] for v in vips if ":" not in v]
    v6 = [v.split("/")[0] for v in vips if ":" in v]
    if v4:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((interface, 0))
            for _ in range(count):
                for address in v4:
                    for frame in arp_frames(mac, address):
                        s.send(frame)
                        sent += 1
    if v6:
        index = socket.if_nametoindex(interface)
        for address in v6:
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                s.bind((address, 0, 0, index))
                for _ in range(count):
                    s.sendto(na_message(mac, address), ("ff02::1", 0, 0, index))
                    sent += 1
    return sent
