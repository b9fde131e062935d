"""Connections a spare inherited by the sync daemon: forwarded, not counted as busy.

The kernel's sync daemon copies the director's connection entries to the
spare, so established connections survive a takeover.  The director sends
them in batches, flushed at the latest every two seconds, and when it dies
its last batch dies with it.  A connection whose "established" had been
copied but whose close was in that last batch stays ESTABLISHED on the spare
for the whole TCP timeout, and a least-connection scheduler counts it as 256
new ones (wlc: active x 256 + inactive): the real server it names gets no new
connection until the others have taken 256 each.  Nothing on the spare can
tell such a ghost from a live connection that is only idle.

So at a takeover, while its backup daemon still runs, the spare tells its own
kernel, in the sync daemon's message format, that each inherited ESTABLISHED
entry is inactive.  The entries keep their state and time left and keep
forwarding; only the count changes: a live one counts as one connection, not
256, until it closes.  The messages go to the backup daemon's multicast group
with a TTL of 0, so the host loops them back to its own sockets and no copy
leaves it; a socket of ours in the same group sees the last one arrive, after
which stopping the daemon cannot lose them (its thread reads its socket empty
before it ends).  They go out a window at a time, each window's last one seen
back before the next, so a large table does not overflow a receive buffer.
"""
import ipaddress
import select
import socket
import struct
import time

from . import log
from .model import record

# The kernel's defaults (IP_VS_SYNC_GROUP, IP_VS_SYNC_PORT); takeover starts
# the daemons without --mcast-group/--mcast-port, so they are the daemon's.
GROUP, PORT = "224.0.0.81", 8848
CONN_TABLE = "/proc/net/ip_vs_conn_sync"

SYNC_PROTO_VER = 1
STYPE_F_INET6 = 1
IP_VS_CONN_F_INACTIVE = 0x0100
TCP_ESTABLISHED = 1                     # IP_VS_TCP_S_ESTABLISHED
HEADER = struct.Struct("!BBHBbH")       # reserved, syncid, size, nr_conns, version, spare
# type, protocol, version|size, flags, state, cport, vport, dport, fwmark, timeout, caddr, vaddr, daddr
CONN = {4: struct.Struct("!BBHIHHHHII4s4s4s"), 6: struct.Struct("!BBHIHHHHII16s16s16s")}
# A backup reads at most its interface's MTU (at least 1500) less the IP and
# UDP headers; a longer message would be cut and dropped whole.
MAXLEN = 1500 - 20 - 8
SOON = 2            # s: an entry this close to its end is left alone (a message would re-create it)
CONFIRM = 1.0       # s to see our own last message come back
# Messages sent before the last one comes back: far less than a socket's default receive
# buffer, so neither the daemon's socket nor ours drops any of a large table's messages.
WINDOW = 16


class Entry(record("Entry", "caddr", "cport", "vaddr", "vport", "daddr", "dport", "expires")):
    """One line of /proc/net/ip_vs_conn_sync: addresses (ipaddress), ports, seconds left."""
    __slots__ = ()


def _address(text):
    return ipaddress.ip_address(text if ":" in text else int(text, 16))


def established(lines):
    """The TCP entries the sync daemon made (Origin SYNC) that are ESTABLISHED, as Entry."""
    out = []
    for line in lines:
        w = line.split()
        if len(w) < 10 or w[0] != "TCP" or w[7] != "ESTABLISHED" or w[8] != "SYNC":
            continue
        try:
            c, v, d = _address(w[1]), _address(w[3]), _address(w[5])
            ports = [int(w[i], 16) for i in (2, 4, 6)]
            expires = int(w[9])
        except ValueError:
            continue
        if c.version == v.version == d.version and expires > SOON:
            out.append(Entry(c, ports[0], v, ports[1], d, ports[2], expires))
    return out


def messages(entries, syncid):
    """Sync messages (version 1) saying each entry is ESTABLISHED and inactive, for its time left."""
    out, body, count = [], b"", 0

    def close():
        out.append(HEADER.pack(0, syncid, HEADER.size + len(body), count, SYNC_PROTO_VER, 0) + body)
    for e in entries:
        conn = CONN[e.caddr.version]
        part = conn.pack(STYPE_F_INET6 if e.caddr.version == 6 else 0, socket.IPPROTO_TCP, conn.size,
                         IP_VS_CONN_F_INACTIVE, TCP_ESTABLISHED, e.cport, e.vport, e.dport, 0, e.expires,
                         e.caddr.packed, e.vaddr.packed, e.daddr.packed)
        if count == 255 or HEADER.size + len(body) + len(part) > MAXLEN:
            close()
            body, count = b"", 0
        body += part
        count += 1
    if count:
        close()
    return out


def count_as_inactive(interface, syncid, conn_table=CONN_TABLE):
    """Tell this host's backup daemon (on `interface`, `syncid`) that the inherited
    ESTABLISHED entries are inactive.  Returns how many; logs one line."""
    try:
        with open(conn_table) as f:
            next(f, None)                               # the header
            entries = established(f)
    except OSError as e:
        log.warning(f"{conn_table}: {e.strerror}: inherited connections keep counting as active")
        return 0
    if not entries:
        return 0
    sent = messages(entries, syncid)
    try:
        index = socket.if_nametoindex(interface)
        with _listener(index) as ear, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mouth:
            mouth.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", b"", b"", index))
            mouth.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)      # never on the wire
            mouth.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            seen = True
            for at in range(0, len(sent), WINDOW):
                window = sent[at:at + WINDOW]
                for m in window:
                    mouth.sendto(m, (GROUP, PORT))
                seen = _heard(ear, window[-1], CONFIRM)
                if not seen:
                    break
    except OSError as e:
        log.warning(f"telling the backup daemon on {interface} about {len(entries)} inherited connections: "
                    f"{e.strerror or e}: they keep counting as active")
        return 0
    if not seen:
        log.warning(f"{len(entries)} inherited connections: the message to the backup daemon on {interface} "
                    f"did not come back within {CONFIRM:g} s; they may keep counting as active")
        return 0
    log.info(f"{len(entries)} inherited established connections count as inactive "
             f"(still forwarded; their closes may have died with the director)")
    return len(entries)


def _listener(index):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((GROUP, PORT))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     struct.pack("=4s4si", socket.inet_aton(GROUP), b"\0" * 4, index))
    except OSError:
        s.close()
        raise
    return s


def _heard(sock, message, timeout):
    """Whether `message` arrives on sock within timeout s (other traffic on the group is skipped)."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return False
        if sock.recv(65536) == message:
            return True
