"""arp.Announcer: one packet socket for every announcement, never bound (no kernel re-hook wait)."""
import socket

from lvskit import arp


class FakeSocket:
    made = []

    def __init__(self, family, kind, proto=0):
        self.args, self.sent, self.bound, self.closed = (family, kind, proto), [], False, False
        FakeSocket.made.append(self)

    def bind(self, address):
        self.bound = True

    def sendto(self, frame, address):
        self.sent.append((frame, address))

    def close(self):
        self.closed = True


def test_one_unbound_socket_without_a_protocol_for_every_burst(monkeypatch):
    FakeSocket.made = []
    monkeypatch.setattr(arp.socket, "socket", FakeSocket)
    monkeypatch.setattr(arp, "mac_of", lambda interface: b"\x02\x00\x0a\xc9\x01\x03")
    a = arp.Announcer("eth0")
    assert a.announce(["10.0.0.100/32", "10.0.0.101/32"], count=3) == 12
    assert a.announce(["10.0.0.100/32"], count=1) == 2
    [s] = FakeSocket.made
    assert s.args == (socket.AF_PACKET, socket.SOCK_RAW, 0) and not s.bound and not s.closed
    assert {address for _, address in s.sent} == {("eth0", arp.ETH_P_ARP)}
    assert [f for f, _ in s.sent[:2]] == arp.arp_frames(b"\x02\x00\x0a\xc9\x01\x03", "10.0.0.100")
    a.close()
    assert s.closed


def test_frames_say_the_vip_is_at_our_mac():
    mac = b"\x02\x00\x0a\xc9\x01\x03"
    request, reply = arp.arp_frames(mac, "10.0.0.100")
    for frame, op in ((request, 1), (reply, 2)):
        assert frame[:6] == arp.BROADCAST and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
        assert frame[21] == op and frame[22:28] == mac
        assert frame[28:32] == frame[38:42] == socket.inet_aton("10.0.0.100")
