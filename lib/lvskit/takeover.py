"""Become the director, or stop being it: VIPs, ARP, IPVS table, sync daemon, hooks.

The order is the point.  Acquire: VIPs, then the ARP burst (the network now
sends to us), then the role file (our heartbeats say "active"); only then the
slower steps (ipvs-sync, connection-sync daemon to master, monitoring, hooks,
the repeated ARP), each of which may fail without taking the VIP down again.
Release runs the reverse; with ``hold`` (by hand, for maintenance) it first
says "held" in the heartbeats and waits for a peer to become active before it
drops the VIPs, so the handover is make-before-break.

A failback or a handover (the previous holder alive, letting go on purpose)
has a grace (lvskit.grace): for handover_grace s the new holder forwards the
TCP that IPVS does not know yet to the previous holder, which keeps serving it.

The role file (lvskit.rolefile) is what hb-send advertises.  Deleting it is
harmless: hb-send keeps advertising the role it last read, and hb-listen has
its worker (``status``, current_role) rewrite it from the VIPs the interface
holds.  A held node's file deleted comes back as standby.
"""
import shlex
import threading
import time

from . import arp, errors, log, nft, state, vip
from .errors import Fatal
from .grace import FORWARD, LABEL, SILENCE, Grace, forwarding, grace_vips
from .heartbeat import ACTIVE, HELD, STANDBY
from .rolefile import ROLES, read_role, write_role

def check_peers(data):
    """hb-peers.json's shape (hbnet.listener writes it), for state.load."""
    state.obj(data, "the file")
    if "written" in data:
        state.timestamp(data["written"], "written")
    for name, p in state.obj(data.get("peers", {}), "peers").items():
        where = f"peers.{name}"
        state.obj(p, where)
        if p.get("state") is not None:
            state.one_of(p["state"], f"{where}.state", ROLES)
        if "alive" in p:
            state.boolean(p["alive"], f"{where}.alive")
        if "priority" in p:
            state.integer(p["priority"], f"{where}.priority", 0, 65535)
        if "heard" in p:
            state.timestamp(p["heard"], f"{where}.heard")
        for path, t in state.obj(p.get("paths", {}), f"{where}.paths").items():
            state.timestamp(t, f"{where}.paths.{path}")
    return data


def load_peers(cfg):
    """hb-peers.json as it is, {} when missing or not of its shape (one warning)."""
    return state.load(state.peers_path(cfg), {}, check_peers)


def read_peers(cfg, max_age=None):
    """{peer: {"state", "alive", "priority", "heard", "paths": {path: time}}} of hb-peers.json.

    max_age: None (unknown) when the file was written longer ago than this
    (its "written" time), or is missing: hb-listen is dead or stuck, and what
    the file says about the peers is history.
    """
    data = load_peers(cfg)
    if max_age is not None:
        written = data.get("written")
        if written is None or abs(time.time() - written) > max_age:
            return None
    return data.get("peers", {})


class Director:
    def __init__(self, cfg, addresses=None, kernel_factory=None, loopback=None):
        if cfg.heartbeat is None:
            raise Fatal(f"{cfg.path}: no [heartbeat] section: nothing to take over",
                        errors.NOT_CONFIGURED)
        self.cfg, self.hb = cfg, cfg.heartbeat
        self.addresses = addresses
        self.kernel_factory = kernel_factory
        self.loopback = loopback or (lambda: vip.Addresses("lo"))     # a socket per use: threads
        self._slow = threading.Lock()
        # The late ARP burst checks the role and sends under this lock, and a
        # release says standby under it: no burst of ours goes out after the
        # release began (a failback's new holder announced already).
        self._late_arp = threading.Lock()
        self._said_no_ipvs = False
        self._announcer = arp.Announcer(self.hb.vip_interface)
        self.grace = Grace(self.hb.handover_grace, self.loopback, self._grace_expired)

    @property
    def addrs(self):
        if self.addresses is None:
            self.addresses = vip.Addresses(self.hb.vip_interface)
        return self.addresses

    # --- what the kernel says ----------------------------------------------------
    def held_vips(self):
        return [v for v in self.hb.vips if self.addrs.holds(v)]

    def current_role(self):
        """The role, checked against the interface: the file may be gone, or stale after a crash.

        A file that says active without the VIPs would make our heartbeats
        claim a role nobody serves, and the spare would never take over.
        Held stays held: the admin's word.
        """
        role = read_role(self.cfg)
        if role != HELD:
            actual = ACTIVE if len(self.held_vips()) == len(self.hb.vips) else STANDBY
            if role != actual:
                if role is not None:
                    log.warning(f"{state.role_path(self.cfg)} said {role}, the interface says {actual}")
                role = actual
                try:
                    write_role(self.cfg, role)
                except Fatal as e:      # the interface is the answer; hb-listen asks again
                    log.error(str(e))
        return role

    # --- plans for --dry-run ---------------------------------------------------------
    def plan(self, acquire, peer=None):
        """The steps in ip/ipvsadm/nft syntax; peer: a failback's or handover's other node."""
        hb, lines = self.hb, []
        grace = hb.handover_grace > 0 and grace_vips(self.cfg)
        if acquire:
            fw = forwarding(self.cfg, peer, self._own()) if grace and peer else None
            if fw:
                lines.append(f"# failback or handover from {peer}, for handover_grace {hb.handover_grace:g} s: "
                             "TCP that IPVS does not know goes to it")
                lines.append(f"nft -f - <<'EOF'\n{nft.forward_text(fw)}EOF")
            elif grace:
                lines.append("# a failback or handover also forwards to the previous holder for "
                             f"handover_grace {hb.handover_grace:g} s (nft; which node that is: not known here)")
            lines += [vip.ip_syntax("add", v, hb.vip_interface) for v in hb.vips]
            lines += [f"arping -U -c {hb.arp_count} -I {hb.vip_interface} {v.split('/')[0]}"
                      if ":" not in v else
                      f"ndsend {v.split('/')[0]} {hb.vip_interface}  # unsolicited NA x{hb.arp_count}"
                      for v in hb.vips]
            lines.append(f"ipvs-sync -c {self.cfg.path}")
            if hb.sync_interface:
                lines.append("# the inherited ESTABLISHED entries (/proc/net/ip_vs_conn_sync, origin SYNC) "
                             "told to count as inactive, through the backup daemon")
                if not fw:
                    lines.append("ipvsadm --stop-daemon backup")
                lines.append(f"ipvsadm --start-daemon master --mcast-interface {hb.sync_interface} "
                             f"--syncid {hb.syncid}")
            lines += [c for c in (hb.monitor_start, hb.on_acquire) if c]
            if fw:
                lines.append(f"# {hb.handover_grace:g} s later")
                lines.append(f"nft -f - <<'EOF'\n{nft.delete_text('ip')}EOF")
                if hb.sync_interface:
                    lines.append("ipvsadm --stop-daemon backup")
        else:
            lines += [c for c in (hb.monitor_stop, hb.on_release) if c]
            if grace:
                lines.append(f"# for handover_grace {hb.handover_grace:g} s (a peer took the VIPs over): "
                             "the VIPs stay local, without ARP, and the sync daemon master")
                lines.append(f"nft -f - <<'EOF'\n{nft.silence_text(grace)}EOF")
                lines += [vip.ip_syntax("add", f"{a}/32", "lo", LABEL) for a in grace]
            lines += [vip.ip_syntax("del", v, hb.vip_interface) for v in hb.vips]
            if hb.sync_interface:
                if not grace:
                    lines.append("ipvsadm --stop-daemon master")
                lines.append(f"ipvsadm --start-daemon backup --mcast-interface {hb.sync_interface} "
                             f"--syncid {hb.syncid}")
            if grace:
                lines.append(f"# {hb.handover_grace:g} s later")
                lines += [vip.ip_syntax("del", f"{a}/32", "lo") for a in grace]
                lines.append(f"nft -f - <<'EOF'\n{nft.delete_text('arp')}EOF")
                if hb.sync_interface:
                    lines.append("ipvsadm --stop-daemon master")
        return lines

    # --- the grace of a failback or a handover (lvskit.grace) -------------------------------
    def _own(self):
        """This node's addresses on vip_interface (ADDRESS/PREFIX); [] when they cannot be read."""
        try:
            return self.addrs.list()
        except Fatal:
            return []

    def start_forwarding(self, peer):
        """Before the VIPs of a failback or handover from node `peer`: its grace's forwarding."""
        self.grace.end()
        if self.hb.handover_grace <= 0:
            return True
        fw = forwarding(self.cfg, peer, self._own())
        if fw is None or not fw.vips:
            return True
        return self.grace.forward(fw, peer)

    def _grace_expired(self, kind):
        """The grace ran its time: the sync daemon it kept stops, if the role is still its."""
        if self.hb.sync_interface:
            with self._slow:
                role = read_role(self.cfg)
                if (role == ACTIVE) == (kind == FORWARD):
                    self._stop_daemon("backup" if kind == FORWARD else "master")

    def _stop_daemon(self, which):
        from . import sync
        try:
            kernel = self.kernel_factory() if self.kernel_factory else sync.open_kernel()
        except Fatal:
            return
        try:
            if which in kernel.sync_daemons():
                kernel.stop_sync_daemon(which)
                log.info(f"ipvsadm --stop-daemon {which}")
        except Fatal as e:
            log.error(f"IPVS: {e}")
        finally:
            kernel.close()

    # --- acquire -----------------------------------------------------------------------
    def acquire_fast(self):
        """VIPs and the first ARP burst, then the role file; Fatal only if no VIP went up."""
        failed, added = [], []
        present = self.addrs.list()
        for v in self.hb.vips:
            try:
                if self.addrs.add(v, present):
                    added.append(v)
            except Fatal as e:
                failed.append(str(e))
        if len(failed) == len(self.hb.vips):
            raise Fatal(failed[0], errors.ERROR)
        self._announce(self.hb.arp_count)
        write_role(self.cfg, ACTIVE)
        for v in added:     # logged after the ARP: syslog may be slow
            log.info(vip.ip_syntax("add", v, self.hb.vip_interface))
        for message in failed:
            log.error(message)
        return not failed

    def _announce(self, count):
        try:
            self._announcer.announce(self.hb.vips, count)
        except OSError as e:
            log.error(f"gratuitous ARP on {self.hb.vip_interface}: {e.strerror or e}")

    def acquire_slow(self, started=None):
        """Table, sync daemon, monitoring, hooks, the late ARP; each failure logged, none fatal."""
        started = time.monotonic() if started is None else started
        # Our own letting-go of a moment ago, or a `takeover --release` still in its
        # grace: ARP replies for the VIPs must go out again.
        if self.grace.kind is not None or (self.hb.handover_grace > 0 and grace_vips(self.cfg)):
            self.grace.speak_again()
        with self._slow:
            ok = self._ipvs(ACTIVE)
            for cmd in (self.hb.monitor_start, self.hb.on_acquire):
                ok &= self._hook(cmd)
            rest = started + self.hb.arp_repeat - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            # Still ours? A release may have come in the meantime.
            with self._late_arp:
                if read_role(self.cfg) == ACTIVE:
                    self._announce(self.hb.arp_count)
        return ok

    def announce(self):
        self._announce(self.hb.arp_count)

    # --- release -------------------------------------------------------------------------
    def release(self, hold=False, wait=0.0, force=False, grace=False):
        """Drop the VIPs (after waiting up to `wait` s for a peer to be active), sync to backup.

        With `wait`, no live active peer seen in that time (or hb-listen's view
        too old to tell) keeps the VIPs and raises Fatal, unless `force`:
        dropping them then may leave nobody serving.  grace: a peer takes
        them over (failback, handover): the handover grace's side of ours.
        """
        with self._late_arp:
            write_role(self.cfg, HELD if hold else STANDBY)
        if wait > 0 and self.held_vips():
            seen = self._wait_for_peer(wait)
            if seen is not True:
                why = (f"no peer became active within {wait:g} s" if seen is False else
                       f"{state.peers_path(self.cfg)} missing or older than "
                       f"{self.hb.deadtime + 1:g} s (hb-listen not running?): peer state unknown")
                if not force:
                    write_role(self.cfg, ACTIVE)
                    raise Fatal(f"{why}; keeping the VIPs (--force releases anyway)", errors.ERROR)
                log.warning(f"{why}; releasing anyway (--force)")
                grace = False
        vips = grace_vips(self.cfg) if grace and self.hb.handover_grace > 0 else []
        if vips and self.held_vips():
            self.grace.silence(vips)
        ok = True
        for v in self.hb.vips:
            try:
                if self.addrs.delete(v):
                    log.info(vip.ip_syntax("del", v, self.hb.vip_interface))
            except Fatal as e:
                log.error(str(e))
                ok = False
        if not ok:      # still holding some: answer ARP for them again
            self.grace.end(SILENCE)
        return ok

    def release_slow(self):
        with self._slow:
            ok = True
            for cmd in (self.hb.monitor_stop, self.hb.on_release):
                ok &= self._hook(cmd)
            return self._ipvs(STANDBY) and ok

    def standby_setup(self):
        """A standby keeps the table loaded and receives connection state."""
        with self._slow:
            return self._ipvs(STANDBY, table=True)

    def _wait_for_peer(self, wait):
        """True: a live peer is active; False: hb-listen says none is; None: nobody knows."""
        deadline, seen = time.monotonic() + wait, None
        while time.monotonic() < deadline:
            peers = read_peers(self.cfg, max_age=self.hb.deadtime + 1.0)
            if peers is not None:
                seen = False
                if any(p.get("state") == ACTIVE and p.get("alive") for p in peers.values()):
                    return True
            time.sleep(0.005)
        return seen

    # --- IPVS ------------------------------------------------------------------------------
    def _ipvs(self, role, table=True):
        """ipvs-sync once and the sync daemon's role; one log line if IPVS is missing."""
        from . import sync
        hb = self.hb
        if not (self.cfg.services and table) and not hb.sync_interface:
            return True
        try:
            kernel = self.kernel_factory() if self.kernel_factory else sync.open_kernel()
        except Fatal as e:
            if not self._said_no_ipvs:
                self._said_no_ipvs = True
                log.warning(f"IPVS steps skipped: {e}")
            return e.code == errors.NOT_INSTALLED     # no IPVS here is a setup, not a failure
        ok = True
        try:
            if table and self.cfg.services:
                out = sync.reconcile(self.cfg, kernel)
                ok = not out.failed
            if hb.sync_interface:
                running = kernel.sync_daemons()
                if role == ACTIVE and "backup" in running:
                    # before the backup daemon, which must read the news, stops
                    from . import inherited
                    inherited.count_as_inactive(*running["backup"])
                # in a grace the other daemon stays: the peer's entries keep coming (or going)
                keep = self.grace.kind == (FORWARD if role == ACTIVE else SILENCE)
                ok &= self._sync_daemon(kernel, role, running, keep)
        except Fatal as e:
            log.error(f"IPVS: {e}")
            ok = False
        finally:
            kernel.close()
        return ok

    def _sync_daemon(self, kernel, role, running, keep_other=False):
        """The sync daemon in role; running: kernel.sync_daemons() as read before."""
        hb = self.hb
        want, other = ("master", "backup") if role == ACTIVE else ("backup", "master")
        if other in running and not keep_other:
            kernel.stop_sync_daemon(other)
            log.info(f"ipvsadm --stop-daemon {other}")
        if running.get(want) != (hb.sync_interface, hb.syncid):
            if want in running:
                kernel.stop_sync_daemon(want)
            kernel.start_sync_daemon(want, hb.sync_interface, hb.syncid)
            log.info(f"ipvsadm --start-daemon {want} --mcast-interface {hb.sync_interface} "
                     f"--syncid {hb.syncid}")
        return True

    def _hook(self, cmd):
        if not cmd:
            return True
        from . import run
        result = run.run(shlex.split(cmd), timeout=60)
        if result.code != 0:
            detail = "timed out" if result.timed_out else f"exit {result.code}"
            text = (result.stderr or result.stdout).strip().splitlines()
            log.error(f"hook {cmd!r}: {detail}{': ' + text[-1] if text else ''}")
            return False
        log.info(f"hook {cmd!r}: ok")
        return True


def serve(director, stdin, stdout):
    """The worker hb-listen keeps running: one command per line, one answer per line.

    Commands: acquire [PEER], release, announce, status.  The fast part is done
    before the answer; the slow part runs in a thread, so a hook that hangs
    never delays the next command.
    """
    def slow(fn):
        def body():
            try:
                fn()
            except Exception as e:     # a bug in a slow step must not kill the worker
                log.error(f"{fn.__name__}: {e}")
        threading.Thread(target=body, daemon=True).start()

    def say(text):
        stdout.write(text + "\n")
        stdout.flush()

    if director.hb.handover_grace > 0 and grace_vips(director.cfg):
        director.grace.clear()      # a worker before us may have died in one
    say(f"ready {director.current_role()}")
    slow(director.standby_setup if read_role(director.cfg) != ACTIVE else director.acquire_slow)
    for line in stdin:
        command, _, arg = line.strip().partition(" ")
        try:
            if command == "acquire":
                # "acquire PEER": a failback or handover from the live node PEER
                started = time.monotonic()
                if arg:
                    director.start_forwarding(arg)
                director.acquire_fast()
                say("done active")
                slow(lambda: director.acquire_slow(started))
            elif command == "release":
                # A live peer is active (hb-listen releases for nothing else): it may forward
                # to us.  Even a split brain's winner, which forwards nothing, may be a
                # failback's new holder whose first heartbeat we heard only once it was active.
                if director.release(grace=True):
                    say("done standby")
                    slow(director.release_slow)
                else:
                    # Some VIP is still here: our heartbeats must not say
                    # standby, and hb-listen, still active, asks again.
                    left = director.held_vips()
                    if left:
                        write_role(director.cfg, ACTIVE)
                    say(f"error release failed, still holding {' '.join(left) or 'nothing'}"
                        if left else "done standby")
            elif command == "announce":
                director.announce()
                say(f"done {read_role(director.cfg)}")
            elif command == "status":
                say(f"done {director.current_role()}")
            elif command:
                say(f"error unknown command {command!r}")
        except Fatal as e:
            log.error(str(e))
            say(f"error {e}")
