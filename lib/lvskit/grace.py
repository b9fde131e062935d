"""The handover grace: after a failback or a handover, the TCP that the new holder cannot know yet.

A failback or a handover (the previous holder alive, letting go on
purpose) has a grace of [heartbeat] handover_grace s, because the sync
daemon tells the new holder of a connection only after some packets and up
to 2 s later, and never of one still in its handshake.  For that long:

- the new holder (FORWARD) sends the TCP packets to the VIPs that IPVS does
  not know to the previous holder instead of its own TCP stack, which would
  reset them (nft.Forward, loaded before its VIPs);
- the previous holder (SILENCE) keeps the VIPs as local addresses on lo
  (label LABEL) without answering ARP for them (nft.silence_text), its table,
  and its sync daemon master beside the new backup one, so its entries keep
  forwarding and reach the new holder;
- the new holder keeps its backup daemon beside the master.

After the grace both undo it.  takeover.Director runs one Grace; the sync
daemons are its business (the expiry callback), the tables and the lo
addresses this module's.  IPv4 only: nft cannot match an address inside an
IPv6 Neighbour Advertisement, so an IPv6 VIP is let go at once.
"""
import ipaddress
import threading

from . import log, nft
from .errors import Fatal

LABEL = "lo:lvskit"         # the previous holder's VIPs on lo during a grace, found again by it
FORWARD, SILENCE = "forward", "silence"     # the two sides of a grace


def grace_vips(cfg):
    """The IPv4 VIPs that have a TCP service: the grace's addresses."""
    out = []
    for v in cfg.heartbeat.vips:
        address = v.split("/")[0]
        if ":" not in address and any(vs.key.protocol == 6 and vs.key.address == address
                                      for vs in cfg.services):
            out.append(address)
    return out


def forwarding(cfg, peer, own):
    """The nft.Forward to node `peer`: its IPv4 path address on one of our networks (own: this
    node's addresses on vip_interface, "ADDRESS/PREFIX"; sent out there), else its first IPv4
    one (routed); None when it has none."""
    node = next((n for n in cfg.nodes if n.name == peer), None)
    if node is None:
        return None
    candidates = [a for _, a in sorted(node.paths.items()) if ":" not in a]
    if not candidates:
        return None
    address, device = candidates[0], None
    own = [ipaddress.ip_interface(a) for a in own]
    for a in candidates:
        if any(i.version == 4 and i.network.prefixlen < 32 and ipaddress.ip_address(a) in i.network
               for i in own):
            address, device = a, cfg.heartbeat.vip_interface
            break
    vips = tuple((a, tuple(sorted({vs.key.port for vs in cfg.services
                                   if vs.key.protocol == 6 and vs.key.address == a})))
                 for a in grace_vips(cfg))
    return nft.Forward(vips, address, device)


class Grace:
    """At most one grace at a time, ended by its timer or at once (a change of role).

    seconds: handover_grace; loopback(): a vip.Addresses of lo; on_expiry(kind):
    called when a grace ran its time (the sync daemon it kept may stop)."""

    def __init__(self, seconds, loopback, on_expiry):
        self.seconds, self.loopback, self.on_expiry = seconds, loopback, on_expiry
        self._now = None            # (FORWARD or SILENCE, its timer, the lo addresses we added)
        self._lock = threading.Lock()

    @property
    def kind(self):
        """FORWARD or SILENCE during a grace, else None."""
        now = self._now
        return now[0] if now is not None else None

    def forward(self, fw, peer):
        """Before the VIPs of a failback or handover from node `peer` (fw: its nft.Forward)."""
        self.end()
        if not nft.load(nft.forward_text(fw), f"handover grace: forwarding to {peer} ({fw.peer})"):
            return False
        self._begin(FORWARD, [])
        log.info(f"handover grace: TCP that IPVS does not know goes to {peer} ({fw.peer}) "
                 f"for {self.seconds:g} s")
        return True

    def silence(self, vips):
        """Before the VIPs leave vip_interface: they stay on lo, unannounced.  False: plain release."""
        self.end()
        if not nft.load(nft.silence_text(vips), "handover grace: keeping the VIPs without ARP"):
            return False
        added = []
        try:
            lo = self.loopback()
            present = lo.list()
            for a in vips:
                if lo.add(f"{a}/32", present, label=LABEL):
                    added.append(f"{a}/32")
            lo.close()
        except Fatal as e:
            log.error(f"handover grace: {e}")
        self._begin(SILENCE, added)
        return True

    def _begin(self, kind, added):
        timer = threading.Timer(self.seconds, self.end, (kind, True))
        timer.daemon = True
        with self._lock:
            self._now = (kind, timer, added)
        timer.start()

    def wait(self):
        """Until the grace ends (takeover --release by hand stays for it)."""
        now = self._now
        if now is not None:
            now[1].join()

    def end(self, kind=None, expired=False):
        """End the grace now (of that kind only, when given): its table and its lo addresses;
        on_expiry when it ran its time (else a change of role is under way, which sets the
        sync daemons)."""
        with self._lock:
            now = self._now
            if now is None or (kind is not None and now[0] != kind):
                return
            if expired and now[1] is not threading.current_thread():
                return      # the timer of an earlier grace, cancelled too late: not this one's end
            self._now = None
        kind, timer, added = now
        if timer is not threading.current_thread():
            timer.cancel()
        if added:       # first: the ARP stays silenced while they are local
            try:
                lo = self.loopback()
                for a in added:
                    lo.delete(a)
                lo.close()
            except Fatal as e:
                log.error(f"handover grace: {e}")
        nft.load(nft.delete_text("ip" if kind == FORWARD else "arp"), "handover grace: its end")
        if expired:
            self.on_expiry(kind)
        log.info(f"handover grace ended ({kind})")

    def speak_again(self):
        """This node acquires: its ARP for the VIPs must go out again, whoever silenced it
        (its own letting-go of a moment ago, or a `takeover --release` still in its grace)."""
        if self._now is not None:
            self.end(SILENCE)
        else:
            nft.load(nft.delete_text("arp"), "handover grace: clearing", missing_ok=True)

    def clear(self):
        """A grace another process (or a worker before us) left: its tables and lo addresses."""
        try:
            lo = self.loopback()
            for a in lo.labelled(LABEL):
                lo.delete(a)
            lo.close()
        except Fatal as e:
            log.error(f"handover grace: {e}")
        nft.load(nft.delete_text("ip") + nft.delete_text("arp"), "handover grace: clearing", missing_ok=True)
