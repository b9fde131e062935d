"""nftables: the rules of a failback's or a handover's grace, and `nft -f -` to load them.

The one module that knows nft's syntax and runs nft.  Two tables of
lvskit's own, each loaded whole and deleted whole (nothing else in the
ruleset is touched):

    table ip lvskit_grace {             # on the node that takes the VIPs over
      chain input {
        type filter hook input priority 99; policy accept;
        ip daddr 10.0.0.100 tcp dport { 80, 443 } tcp flags & syn == 0 dup to 10.0.0.3 device "eth0" drop
      }
    }
    table arp lvskit_grace {            # on the node that lets them go
      chain output {
        type filter hook output priority 0; policy accept;
        arp saddr ip 10.0.0.100 drop
      }
    }

The first: a packet of a TCP connection that is not a new one (no SYN),
to a service port of a VIP, which IPVS did not take (IPVS's LOCAL_IN hook
runs at priority 98, NF_IP_PRI_NAT_SRC - 2: a packet of a connection it
knows is gone by 99) would reach this node's own TCP stack and be reset.
It goes to the previous holder instead, whose IPVS entry names its real
server.  The second: the previous holder keeps the VIP as a local address
for those packets but never answers ARP for it (the network must keep
sending to the new holder).  Only IPv4: a Neighbour Advertisement names its
address inside the ICMPv6 body, where no plain nft match reaches.
"""
from . import log
from .model import record

TABLE = "lvskit_grace"
PRIORITY = 99           # after IPVS's LOCAL_IN hook (98), before the local TCP stack
TIMEOUT = 3.0           # s nft may take: less than hb-listen gives its worker for an answer (5 s)


class Forward(record("Forward", "vips", "peer", "device")):
    """vips: ((address, (port, ...)), ...), port 0 meaning every port; peer: its IPv4
    address; device: the interface it is on (None: routed)."""
    __slots__ = ()


def forward_text(fw):
    """The `nft -f` script loading the new holder's table (replacing any older one)."""
    dev = f' device "{fw.device}"' if fw.device else ""
    rules = []
    for address, ports in fw.vips:
        match = f"ip daddr {address}"
        if 0 not in ports:         # 0: a service of every port (persistent, port 0)
            match += f" tcp dport {{ {', '.join(str(p) for p in sorted(ports))} }}"
        rules.append(f"    {match} tcp flags & syn == 0 dup to {fw.peer}{dev} drop")
    return _replace("ip", "input", PRIORITY, rules)


def silence_text(vips):
    """The `nft -f` script loading the letting-go node's table: no ARP from it for the VIPs."""
    return _replace("arp", "output", 0, [f"    arp saddr ip {v} drop" for v in vips])


def _replace(family, chain, priority, rules):
    # add-then-delete: deleting a table that is not there is an error, and the
    # whole script is one transaction, so the old table never coexists with the new
    return "\n".join([f"table {family} {TABLE} {{}}", f"delete table {family} {TABLE}",
                      f"table {family} {TABLE} {{",
                      f"  chain {chain} {{",
                      f"    type filter hook {chain} priority {priority}; policy accept;"]
                     + rules + ["  }", "}", ""])


def delete_text(family):
    return f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"


def load(text, what, missing_ok=False):
    """Run `nft -f -` with text; True when it took it, else one log line naming `what`.

    missing_ok: no nft is no failure and no line (a cleanup: without nft
    nothing of ours can be there)."""
    from . import run
    result = run.run(["nft", "-f", "-"], timeout=TIMEOUT, stdin=text)
    if result.code == 0:
        return True
    if result.code == 127 and missing_ok:
        return True
    if result.code == 127:
        why = "nft not found (apt-get install nftables)"
    elif result.timed_out:
        why = f"nft timed out after {TIMEOUT:g} s"
    else:
        lines = (result.stderr or result.stdout).strip().splitlines()
        why = f"nft exit {result.code}" + (f": {lines[0]}" if lines else "")
    log.error(f"{what}: {why}")
    return False
