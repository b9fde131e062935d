import pytest

from lvskit import xdmcp


def test_query_wire_format():
    # version 1, opcode Query 2, length 1, zero authentication names
    assert xdmcp.query() == b"\x00\x01\x00\x02\x00\x01\x00"
    q = xdmcp.query([b"MIT-MAGIC-COOKIE-1"])
    assert q[:6] == b"\x00\x01\x00\x02\x00\x15" and q[6] == 1
    assert xdmcp.parse(q) == (xdmcp.QUERY, {"auth_names": [b"MIT-MAGIC-COOKIE-1"]})


def test_willing_and_unwilling_round_trip():
    w = xdmcp.willing(b"hades", b"Linux 6.1")
    assert w[:4] == b"\x00\x01\x00\x05"
    assert xdmcp.parse(w) == (xdmcp.WILLING, {"auth": b"", "hostname": b"hades", "status": b"Linux 6.1"})
    u = xdmcp.unwilling(b"kama", b"busy")
    assert xdmcp.parse(u) == (xdmcp.UNWILLING, {"hostname": b"kama", "status": b"busy"})


@pytest.mark.parametrize("data", [
    b"\x00\x01\x00",                                  # short header
    b"\x00\x02\x00\x05\x00\x00",                      # version 2
    b"\x00\x01\x00\x05\x00\x09" + b"\x00\x00",        # length says 9
    b"\x00\x01\x00\x05\x00\x04\x00\x00\x00\x05",      # ARRAY8 runs past the end
    xdmcp.willing(b"h", b"s") [:-1],                 # truncated
    b"\x00\x01\x00\x02\x00\x00",                      # Query without names
])
def test_bad_packets_rejected(data):
    with pytest.raises(xdmcp.BadPacket):
        xdmcp.parse(data)
