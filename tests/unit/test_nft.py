"""The handover grace's nft scripts: their text, and nft itself parsing them (`nft --check`)."""
import os
import shutil
import subprocess

import pytest

from lvskit import nft

FW = nft.Forward((("10.0.0.100", (80, 443)), ("10.0.0.101", (0,))), "10.0.0.3", "lo")


def test_forward_text_sends_what_ipvs_left_of_established_tcp_to_the_peer():
    text = nft.forward_text(FW)
    assert "type filter hook input priority 99; policy accept;" in text      # after IPVS's 98
    assert ('ip daddr 10.0.0.100 tcp dport { 80, 443 } tcp flags & syn == 0 dup to 10.0.0.3 device "lo" drop'
            in text)
    # a service of every port (port 0): every TCP port of that VIP
    assert 'ip daddr 10.0.0.101 tcp flags & syn == 0 dup to 10.0.0.3 device "lo" drop' in text
    # replaces an older table of ours in one transaction, and touches no other table
    assert text.startswith("table ip lvskit_grace {}\ndelete table ip lvskit_grace\ntable ip lvskit_grace {")
    routed = nft.forward_text(FW._replace(device=None))
    assert "dup to 10.0.0.3 drop" in routed and "device" not in routed


def test_silence_text_drops_this_nodes_arp_for_the_vips_only():
    text = nft.silence_text(["10.0.0.100", "10.0.0.101"])
    assert "table arp lvskit_grace {" in text and "type filter hook output priority 0" in text
    assert text.count("arp saddr ip 10.0.0.10") == 2 and text.count(" drop") == 2


def test_delete_text_is_harmless_when_the_table_is_absent():
    assert nft.delete_text("arp") == "table arp lvskit_grace {}\ndelete table arp lvskit_grace\n"


@pytest.mark.skipif(not shutil.which("nft") or os.geteuid() != 0, reason="needs nft and root (nft --check)")
@pytest.mark.parametrize("text", [nft.forward_text(FW), nft.silence_text(["10.0.0.100"]),
                                  nft.delete_text("ip") + nft.delete_text("arp")], ids=["forward", "silence", "delete"])
def test_nft_takes_the_scripts(text):
    # --check: parsed and validated by the kernel, nothing committed; in a namespace of its own anyway
    r = subprocess.run(["unshare", "-n", "nft", "--check", "-f", "-"], input=text, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


def test_load_failure_is_one_line_and_false(monkeypatch):
    from lvskit import run
    lines = []
    monkeypatch.setattr(nft.log, "error", lines.append)
    monkeypatch.setattr(run, "run", lambda argv, **kw: run.Result(1, "", "Error: Could not process rule\nmore\n"))
    assert nft.load("x", "handover grace: forwarding") is False
    assert lines == ["handover grace: forwarding: nft exit 1: Error: Could not process rule"]
    monkeypatch.setattr(run, "run", lambda argv, **kw: run.Result(127, "", "nft: not found"))
    assert nft.load("x", "clearing", missing_ok=True) is True and len(lines) == 1
    assert nft.load("x", "w") is False and lines[-1] == "w: nft not found (apt-get install nftables)"
