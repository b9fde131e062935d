"""The XDMCP wire format, as much of it as a health check needs.

The seed's main service is XDMCP (UDP 177): a display manager is alive when it
answers a Query with Willing.  X Display Manager Control Protocol 1.1: every
packet is a header (version CARD16 = 1, opcode CARD16, length CARD16 of what
follows, all big-endian) and a body of CARD8 / ARRAY8 (CARD16 length + bytes)
/ ARRAYofARRAY8 (CARD8 count + ARRAY8s) fields.
"""
import struct

VERSION = 1
QUERY, WILLING, UNWILLING = 2, 5, 6
_HEADER = struct.Struct("!HHH")


class BadPacket(ValueError):
    pass


def _array8(data):
    return struct.pack("!H", len(data)) + data


def _read_array8(body, pos):
    if pos + 2 > len(body):
        raise BadPacket("truncated ARRAY8 length")
    (n,) = struct.unpack_from("!H", body, pos)
    end = pos + 2 + n
    if end > len(body):
        raise BadPacket("truncated ARRAY8")
    return body[pos + 2:end], end


def packet(opcode, body=b""):
    return _HEADER.pack(VERSION, opcode, len(body)) + body


def query(auth_names=()):
    """A Query offering these authentication names (none: accept any)."""
    return packet(QUERY, bytes([len(auth_names)]) + b"".join(_array8(a) for a in auth_names))


def willing(hostname, status, auth_name=b""):
    return packet(WILLING, _array8(auth_name) + _array8(hostname) + _array8(status))


def unwilling(hostname, status):
    return packet(UNWILLING, _array8(hostname) + _array8(status))


def parse(data):
    """(opcode, fields): Willing -> {auth, hostname, status}; Unwilling -> {hostname, status};
    Query -> {auth_names}; other opcodes -> {}."""
    if len(data) < _HEADER.size:
        raise BadPacket("shorter than the XDMCP header")
    version, opcode, length = _HEADER.unpack_from(data)
    if version != VERSION:
        raise BadPacket(f"XDMCP version {version}, want {VERSION}")
    body = data[_HEADER.size:]
    if len(body) != length:
        raise BadPacket(f"length field says {length}, body has {len(body)} bytes")
    fields = {}
    if opcode == WILLING:
        fields["auth"], pos = _read_array8(body, 0)
        fields["hostname"], pos = _read_array8(body, pos)
        fields["status"], pos = _read_array8(body, pos)
    elif opcode == UNWILLING:
        fields["hostname"], pos = _read_array8(body, 0)
        fields["status"], pos = _read_array8(body, pos)
    elif opcode == QUERY:
        if not body:
            raise BadPacket("Query without authentication names")
        names, pos = [], 1
        for _ in range(body[0]):
            name, pos = _read_array8(body, pos)
            names.append(name)
        fields["auth_names"] = names
    else:
        pos = len(body)
    if pos != len(body):
        raise BadPacket(f"{len(body) - pos} bytes after the last field")
    return opcode, fields
