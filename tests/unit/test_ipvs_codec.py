"""The IPVS message codec, byte for byte: what we send decodes to what we meant.

Proof against the real kernel is in tests/lab; this only pins the encoding."""
import struct

from lvskit import ipvs, plan as P
from lvskit.model import AF_INET, AF_INET6, F_PERSISTENT, Dest, Service, ServiceKey


def nested(attrs, kind):
    return ipvs._attrs(attrs[kind])


def test_service_round_trip_ipv4_ipv6_fwmark():
    for svc in (Service(ServiceKey(AF_INET, 17, "10.0.0.1", 177), "wlc", F_PERSISTENT, 3600, 24),
                Service(ServiceKey(AF_INET6, 6, "2001:db8::1", 80), "rr", 0, 0, 128),
                Service(ServiceKey.fw(AF_INET, 42), "sh", 0x10, 0, 32)):
        cmd, attrs = ipvs.encode_op(P.Op(P.ADD_SERVICE, svc))
        assert cmd == ipvs.CMD_NEW_SERVICE
        back = ipvs.decode_service(nested(ipvs._attrs(attrs), ipvs.CMD_ATTR_SERVICE))
        assert back.key == svc.key and back.settings() == svc.settings()


def test_wire_details_the_kernel_relies_on():
    svc = Service(ServiceKey(AF_INET, 6, "10.0.0.1", 80), "wlc", F_PERSISTENT, 300, 24)
    a = nested(ipvs._attrs(ipvs.encode_op(P.Op(P.ADD_SERVICE, svc))[1]), ipvs.CMD_ATTR_SERVICE)
    assert bytes(a[ipvs.SVC_PORT]) == b"\x00\x50"                  # network order
    assert bytes(a[ipvs.SVC_NETMASK]) == b"\xff\xff\xff\x00"       # mask, network order
    assert bytes(a[ipvs.SVC_ADDR]) == bytes([10, 0, 0, 1]) + b"\0" * 12
    assert bytes(a[ipvs.SVC_SCHED_NAME]) == b"wlc\0"
    assert struct.unpack("=II", a[ipvs.SVC_FLAGS]) == (F_PERSISTENT, 0xFFFFFFFF)


def test_dest_round_trip_and_delete_carries_identity_only():
    svc = Service(ServiceKey(AF_INET, 6, "10.0.0.1", 80))
    d = Dest("10.0.0.5", 8080, 0, 7, 100, 10)
    cmd, attrs = ipvs.encode_op(P.Op(P.EDIT_DEST, svc, d))
    assert cmd == ipvs.CMD_SET_DEST
    top = ipvs._attrs(attrs)
    assert ipvs.decode_service(nested(top, ipvs.CMD_ATTR_SERVICE) | {
        ipvs.SVC_SCHED_NAME: b"wlc\0"}).key == svc.key
    assert ipvs.decode_dest(AF_INET, nested(top, ipvs.CMD_ATTR_DEST)) == d
    cmd, attrs = ipvs.encode_op(P.Op(P.DEL_DEST, svc, d))
    dest = nested(ipvs._attrs(attrs), ipvs.CMD_ATTR_DEST)
    assert cmd == ipvs.CMD_DEL_DEST and set(dest) == {ipvs.DEST_ADDR, ipvs.DEST_PORT, ipvs.DEST_ADDR_FAMILY}


def test_truncated_attribute_stream_stops_cleanly():
    good = ipvs._attr(1, b"abcd") + ipvs._attr(2, b"xy")
    assert set(ipvs._attrs(good)) == {1, 2}
    assert set(ipvs._attrs(good[:-3])) == {1}            # the cut attribute is dropped
    assert ipvs._attrs(b"\x02\x00\x01\x00") == {}       # length below header: stop
