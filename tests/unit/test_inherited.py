"""lvskit.inherited: which entries a takeover re-counts, and the sync messages that say so.

The message layout is the kernel's (net/netfilter/ipvs/ip_vs_sync.c, version 1);
the lab test (tests/lab/test_takeover.py) has the kernel read them.
"""
import ipaddress

from lvskit import inherited

HEAD = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires"
# /proc/net/ip_vs_conn_sync as Linux 6.1 prints it (the first three lines read from the
# lab guest): IPv4 in hex, IPv6 written out
TABLE = """\
TCP 0AC80102 D3A4 0AC80164 0050 0AC8010B 0050 ESTABLISHED SYNC       897
TCP 0AC80102 BDBC 0AC80164 0050 0AC8010B 0050 FIN_WAIT    SYNC         9
TCP 0AC80102 D3A6 0AC80164 0050 0AC8010C 0050 ESTABLISHED LOCAL      899
UDP 0AC80102 9C40 0AC80164 00B1 0AC8010B 00B1 UDP         SYNC       290
TCP 0AC80102 D3AA 0AC80164 0050 0AC8010C 0050 ESTABLISHED SYNC         1
TCP 2001:0db8:0000:0000:0000:0000:0000:0002 C350 2001:0db8:0000:0000:0000:0000:0000:0100 0016 \
2001:0db8:0000:0000:0000:0000:0000:000b 0016 ESTABLISHED SYNC       640
TCP 0AC80102 nothex 0AC80164 0050 0AC8010C 0050 ESTABLISHED SYNC       500
""".splitlines()


def test_only_tcp_established_entries_the_sync_daemon_made_and_not_about_to_end():
    got = inherited.established(TABLE)
    assert [(str(e.caddr), e.cport, str(e.vaddr), e.vport, str(e.daddr), e.dport, e.expires) for e in got] == [
        ("10.200.1.2", 0xD3A4, "10.200.1.100", 80, "10.200.1.11", 80, 897),
        ("2001:db8::2", 50000, "2001:db8::100", 22, "2001:db8::b", 22, 640)]


def test_a_header_or_a_short_line_is_no_entry():
    assert inherited.established([HEAD, "", "TCP 0AC80102"]) == []


def decode(message):
    """The kernel's reading of a version 1 message: (syncid, [fields per connection])."""
    reserved, syncid, size, count, version, spare = inherited.HEADER.unpack_from(message)
    assert (reserved, version, spare, size) == (0, 1, 0, len(message))
    conns, at = [], inherited.HEADER.size
    for _ in range(count):
        kind = message[at]
        conn = inherited.CONN[6 if kind & inherited.STYPE_F_INET6 else 4]
        fields = conn.unpack_from(message, at)
        assert fields[2] == conn.size and at % 4 == 0      # version 0 | size; 32-bit aligned
        conns.append(fields)
        at += conn.size
    assert at == len(message)
    return syncid, conns


def test_each_entry_is_said_established_and_inactive_for_its_time_left():
    entries = inherited.established(TABLE)
    [message] = inherited.messages(entries, syncid=7)
    syncid, conns = decode(message)
    assert syncid == 7
    v4, v6 = conns
    assert v4 == (0, 6, 36, 0x0100, 1, 0xD3A4, 80, 80, 0, 897, ipaddress.ip_address("10.200.1.2").packed,
                  ipaddress.ip_address("10.200.1.100").packed, ipaddress.ip_address("10.200.1.11").packed)
    assert v6[0] == inherited.STYPE_F_INET6 and v6[2] == 72 and v6[3:5] == (0x0100, 1) and v6[9] == 640


def test_messages_fit_what_a_backup_reads_and_count_in_a_byte():
    e = inherited.established(TABLE)[0]
    many = inherited.messages([e] * 1000, syncid=0)
    assert all(len(m) <= inherited.MAXLEN for m in many)
    counts = [decode(m)[1] for m in many]
    assert sum(len(c) for c in counts) == 1000
    assert max(len(c) for c in counts) == (inherited.MAXLEN - inherited.HEADER.size) // 36
    six = inherited.established(TABLE)[1]
    assert all(len(m) <= inherited.MAXLEN for m in inherited.messages([six] * 300, syncid=0))


def test_nothing_to_say_is_no_message():
    assert inherited.messages([], syncid=1) == []


def test_a_missing_table_changes_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LVSKIT_NO_SYSLOG", "1")
    from lvskit import log
    log.setup("test", verbose=True)
    assert inherited.count_as_inactive("eth0", 0, conn_table=str(tmp_path / "none")) == 0
    assert "keep counting as active" in capsys.readouterr().err


def test_the_header_is_the_kernels():
    # struct ip_vs_sync_mesg: reserved u8, syncid u8, size be16, nr_conns u8, version s8, spare u16
    assert inherited.HEADER.size == 8
    # struct ip_vs_sync_v4 and ip_vs_sync_v6
    assert (inherited.CONN[4].size, inherited.CONN[6].size) == (36, 72)
