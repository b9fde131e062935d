"""BIRD 2, the routing daemon of [announce] mode = bgp: the include file of the VIPs, and birdc.

The one module that knows BIRD's syntax and runs birdc.  ipvs-sync, after
the table, writes the VIPs (every [service]'s address) as BIRD static
protocols into [announce] include, which the operator's bird.conf includes:

    protocol static lvskit_vip {        # [announce] protocol: the IPv4 VIPs
      ipv4;
      disabled yes;                     # BIRD starts without announcing
      route 192.168.45.26/32 blackhole;
    }
    protocol static lvskit_vip_v6 {     # the same name + _v6: the IPv6 VIPs
      ipv6;                             # (a static protocol has one channel)
      disabled yes;
    }

Both are always written, empty or not, so their names are there for
bird.conf's export filters and for whoever enables them.  The file is
written only when its text changes (a temp file renamed over it, mode
0644: BIRD runs as its own user), then `birdc configure` makes BIRD read
it.  STATE_DIR/bird.json records the text BIRD took (its SHA-256): a
configure that failed is tried again by the next run, and an unchanged
file is not configured again (a configure restarts a protocol that was
enabled at run time: BIRD disables it again, as the file says).

The switch (lvs-announce's gate, gate.py): `birdc show protocols` read into
{name: state}, and `birdc enable|disable NAME`, each with a timeout.
"""
import hashlib
import os
import shlex
import socket

from . import log, state
from .errors import Fatal
from .model import AF_INET, AF_INET6, record

CONFIGURE_TIMEOUT = 30.0        # seconds birdc may take (BIRD parses the whole config)


def record_path(cfg):
    """STATE_DIR/bird.json: the SHA-256 of the include text BIRD last took (this module owns it)."""
    return os.path.join(cfg.state_dir, "bird.json")


def vips(cfg):
    """{family: [address, ...]} of the services' addresses, each once, in address order."""
    out = {AF_INET: set(), AF_INET6: set()}
    for vs in cfg.services:
        if not vs.key.fwmark:
            out[vs.key.af].add(vs.key.address)
    return {af: sorted(addrs, key=lambda a, af=af: socket.inet_pton(af, a)) for af, addrs in out.items()}


def vip_prefixes(cfg):
    """The VIPs as BIRD's routes name them (192.0.2.26/32, 2001:db8::26/128)."""
    by_family = vips(cfg)
    return [f"{a}/32" for a in by_family[AF_INET]] + [f"{a}/128" for a in by_family[AF_INET6]]


def protocols(announce):
    """[(BIRD protocol name, family)]: the IPv4 protocol, then the IPv6 one."""
    return [(announce.protocol, AF_INET), (announce.protocol + "_v6", AF_INET6)]


def include_text(cfg):
    """The include file's text for cfg (stable: the same config gives the same bytes)."""
    lines = ["# Written by lvskit's ipvs-sync from its config's [service] addresses ([announce] mode = bgp).",
             "# Do not edit: its next run writes it again.  Included by bird.conf; announced only while",
             "# a protocol is enabled (birdc enable), which BIRD forgets at a restart or a configure."]
    by_family = vips(cfg)
    for name, af in protocols(cfg.announce):
        channel, bits = ("ipv4", 32) if af == AF_INET else ("ipv6", 128)
        lines += [f"protocol static {name} {{", f"  {channel};", "  disabled yes;"]
        lines += [f"  route {addr}/{bits} blackhole;" for addr in by_family[af]]
        lines.append("}")
    return "\n".join(lines) + "\n"


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _check_record(data):
    loaded = state.obj(data, "the file").get("loaded")
    return state.text(loaded, "loaded", 64)


class Outcome(record("Outcome", write=False, configure=False, error=None, commands=())):
    """What sync did (or, in a dry run, would do): write the file, run birdc configure; the
    error line when one of them failed; commands: the dry run's lines, as an admin types them."""
    __slots__ = ()


def configure_argv(announce):
    return shlex.split(announce.birdc) + ["configure"]


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Fatal(f"{path}: cannot read: {e.strerror or e}") from None


_logged = {}    # include path: the last error line logged (a resident ipvs-sync says it once)


def _error(path, why):
    if _logged.get(path) != why:
        log.error(why)
    _logged[path] = why


def sync(cfg, dry_run=False):
    """Make the include file cfg's and BIRD take it; an Outcome.  Errors are logged, never raised;
    in one process (ipvs-sync --every) the same error only once, until it changes or heals."""
    an = cfg.announce
    text = include_text(cfg)
    argv = configure_argv(an)
    try:
        write = _read(an.include) != text
    except Fatal as e:
        _error(an.include, str(e))
        return Outcome(error=str(e))
    configure = write or state.load(record_path(cfg), None, _check_record) != digest(text)
    if dry_run:
        commands = []
        if write:
            commands += [f"cat > {shlex.quote(an.include)} <<'EOF'"] + text.splitlines() + ["EOF"]
        if configure:
            commands.append(shlex.join(argv))
        return Outcome(write, configure, None, tuple(commands))
    if write:
        try:
            state.replace(an.include, text.encode(), mode=0o644)
        except OSError as e:
            why = f"{an.include}: cannot write BIRD's include file: {e}"
            _error(an.include, why)
            return Outcome(error=why)
        log.info(f"{an.include}: {sum(map(len, vips(cfg).values()))} VIPs for BIRD")
    if configure:
        from . import run
        r = run.run(argv, timeout=CONFIGURE_TIMEOUT)
        if r.code != 0:
            said = [l.strip() for l in (r.stdout + "\n" + r.stderr).splitlines() if l.strip()]
            why = (f"{shlex.join(argv)}: BIRD did not take {an.include}: "
                   + ("timed out" if r.timed_out else said[-1] if said else f"exit {r.code}"))
            _error(an.include, why)
            return Outcome(write, True, why)
        log.info(f"{shlex.join(argv)}: BIRD took {an.include}")
        _logged.pop(an.include, None)
        try:
            state.save(record_path(cfg), {"loaded": digest(text)}, indent=None)
        except OSError as e:        # the next run configures once more: harmless but for its restart
            log.warning(f"{record_path(cfg)}: cannot record what BIRD took: {e}")
    return Outcome(write, configure)


# --- the switch: birdc show protocols / enable / disable (lvs-announce's gate) -----------

BIRDC_TIMEOUT = 2.0     # seconds one birdc call of the gate may take: a hung BIRD must not stall it


def birdc_argv(announce, *words):
    return shlex.split(announce.birdc) + list(words)


def _said(r):
    """The last line birdc said (its 'BIRD x ready.' greeting left out), or why it said nothing."""
    if r.timed_out:
        return "timed out"
    lines = [l.strip() for l in (r.stdout + "\n" + r.stderr).splitlines()
             if l.strip() and not (l.startswith("BIRD ") and l.rstrip().endswith("ready."))]
    return lines[-1] if lines else f"exit {r.code}"


def protocol_states(announce, timeout=BIRDC_TIMEOUT):
    """({protocol: state}, None) from `birdc show protocols` (state: up, down, start, ...),
    or (None, why) when BIRD did not answer within timeout."""
    from . import run
    argv = birdc_argv(announce, "show", "protocols")
    r = run.run(argv, timeout=timeout)
    if r.code != 0 or "ready." not in r.stdout:
        return None, f"{shlex.join(argv)}: {_said(r)}"
    states = {}
    for line in r.stdout.splitlines():
        words = line.split()
        # Name Proto Table State Since Info: the header and the greeting are skipped by
        # their own words, every other line of 4 words or more is a protocol.
        if len(words) >= 4 and words[0] != "Name" and not line.startswith("BIRD "):
            states[words[0]] = words[3]
    return states, None


def switch(announce, name, on, timeout=BIRDC_TIMEOUT, dry_run=False):
    """birdc enable NAME (on) or disable NAME; None when BIRD did it (or had it so), else why.
    dry_run: the command line, run nothing."""
    argv = birdc_argv(announce, "enable" if on else "disable", name)
    if dry_run:
        return shlex.join(argv)
    from . import run
    r = run.run(argv, timeout=timeout)
    # BIRD answers "NAME: enabled" or "NAME: already enabled" (exit 0); a name it does not
    # know is a syntax error (exit 1).
    if r.code != 0 or f"{name}:" not in r.stdout:
        return f"{shlex.join(argv)}: {_said(r)}"
    return None


# --- what the routers are told: BGP sessions, BFD, exported VIPs (lvs-status) ------------
#
# Three kinds of birdc answer, each parsed here from BIRD 2's plain text (captured
# from BIRD 2.0.12 in tests/unit/data/bird/):
#
#   show protocols all      a "Name Proto Table State Since Info" row per protocol, then
#                           its "Key: value" lines, indented (a BGP one's "BGP state:",
#                           "Neighbor address:", "Last error:"), and its channels
#   show bfd sessions       per BFD protocol "NAME:", a header, a row per session:
#                           address, interface, state (Up, Down, Init, AdminDown), since...
#                           (no BFD protocol: "There is no BFD protocol running", exit 1)
#   show route export S     "Table master4:" then a row per route S is sent (prefix first;
#                           indented rows continue the one above); nothing when S exports
#                           nothing, "No valid tables" (exit 1) when none of its channels is up
#
# BIRD's "Since" is its own timeformat (a time of day today, a date before): kept as text.

class Protocol(record("Protocol", "name", "proto", "state", since="", info="", details=None)):
    """One protocol of `show protocols all`: BIRD's state (up, down, start...), its
    Info column, details: {key: value} of its own "Key: value" lines (channels' left out)."""
    __slots__ = ()


class Session(record("Session", "name", "neighbor", "state", "bgp_state", since="", error="",
                     bfd=None, exported=None)):
    """A BGP protocol: BIRD's state, its BGP state (Established, Active, Connect, Idle...),
    since (BIRD's text), error (its "Last error", "" none); bfd: the BFD session's state for
    its neighbour (Up, Down, Init, AdminDown), None when there is none (bfd off); exported:
    the VIP prefixes BIRD sends on it (a tuple), None when not known (BIRD did not say)."""
    __slots__ = ()

    @property
    def established(self):
        return self.bgp_state == "Established"


def _body(text):
    """birdc's lines without its greeting and blank lines."""
    return [l for l in text.splitlines() if l.strip() and not (l.startswith("BIRD ") and l.rstrip().endswith("ready."))]


def _since(words):
    """(BIRD's since, the words after it): `timeformat protocol iso long` gives two words."""
    if len(words) > 1 and len(words[0]) == 10 and words[0][4:5] == "-" and ":" in words[1]:
        return " ".join(words[:2]), words[2:]
    return (words[0], words[1:]) if words else ("", [])


def parse_protocols(text):
    """[Protocol] from `birdc show protocols all` (or `show protocols`); ValueError when
    the text is not BIRD's protocol table."""
    lines = _body(text)
    if not lines or lines[0].split()[:4] != ["Name", "Proto", "Table", "State"]:
        raise ValueError(f"not BIRD's protocol table: {(lines or ['nothing'])[0].strip()[:80]!r}")
    out, details, in_channel = [], None, False
    for line in lines[1:]:
        if not line[0].isspace():
            words = line.split()
            if len(words) < 4:
                raise ValueError(f"not a protocol row: {line.strip()[:80]!r}")
            since, info = _since(words[4:])
            details, in_channel = {}, False
            out.append(Protocol(words[0], words[1], words[3], since, " ".join(info), details))
        elif line.strip().startswith("Channel "):
            in_channel = True
        elif not in_channel and ":" in line:
            key, _, value = line.strip().partition(":")
            details.setdefault(key, value.strip())
    return out


def sessions_of(protocols):
    """[Session] of the BGP protocols, in BIRD's order (bfd and exported not yet known).

    A dynamic BGP protocol's listener (`neighbor range`, always Passive) is
    no session: the sessions it spawns are protocols of their own."""
    out = []
    for p in protocols:
        d = p.details or {}
        if p.proto != "BGP" or "Neighbor range" in d:
            continue
        bgp_state = d.get("BGP state") or (p.info.split() or ["?"])[0]
        out.append(Session(p.name, d.get("Neighbor address", ""), p.state, bgp_state, p.since,
                           d.get("Last error", "")))
    return out


def _is_address(text):
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(af, text)
            return True
        except OSError:
            pass
    return False


def parse_bfd(text):
    """{neighbour address: BFD state} from `birdc show bfd sessions` ({} without a BFD
    protocol); one address in two BFD protocols: Up wins.  ValueError for anything else."""
    out = {}
    for line in _body(text):
        words = line.split()
        if line.strip() == "There is no BFD protocol running":
            return {}
        if words[:2] == ["IP", "address"] or (len(words) == 1 and words[0].endswith(":")):
            continue
        if len(words) < 4 or not _is_address(words[0]):
            raise ValueError(f"not a BFD session row: {line.strip()[:80]!r}")
        if out.get(words[0]) != "Up":
            out[words[0]] = words[2]
    return out


def parse_exported(text):
    """[prefix] of the routes in `birdc show route export S` ([] for "No valid tables")."""
    out = []
    for line in _body(text):
        if line.strip() == "No valid tables" or line.startswith("Table ") or line[0].isspace():
            continue
        prefix = line.split()[0]
        if "/" not in prefix:
            raise ValueError(f"not a route row: {line.strip()[:80]!r}")
        out.append(prefix)
    return out


def _norm(prefix):
    """A prefix as BIRD prints it (inet_ntop's form), or as it is when it is not one."""
    addr, slash, bits = prefix.partition("/")
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(af, socket.inet_pton(af, addr)) + slash + bits
        except OSError:
            pass
    return prefix


def _ask(announce, words, timeout):
    """(birdc's text, None) when BIRD answered (whatever its exit code), or (None, why)."""
    from . import run
    argv = birdc_argv(announce, *words)
    r = run.run(argv, timeout=timeout)
    if r.timed_out or "ready." not in r.stdout:
        return None, f"{shlex.join(argv)}: {_said(r)}"
    return r.stdout, None


class View(record("View", protocols=None, sessions=(), error=None)):
    """BIRD's side for lvs-status: protocols {name: state} (None: BIRD did not answer),
    sessions [Session], error: the first thing BIRD did not answer or answered wrongly."""
    __slots__ = ()


def view(announce, prefixes, timeout=BIRDC_TIMEOUT):
    """What BIRD tells the routers: its protocols' states, every BGP session with its BFD state
    and which of prefixes (the VIPs as BIRD writes them, 192.0.2.26/32) it exports.

    `show protocols all`, then `show bfd sessions` when there is a BGP session, then
    `show route export S` for each Established one (a session that is not exports nothing):
    2 + sessions birdc calls, each within timeout.  Never raises: what BIRD did not say is
    None in the View and error says why, in one line."""
    said, why = _ask(announce, ("show", "protocols", "all"), timeout)
    if why:
        return View(error=why)
    try:
        protocols = parse_protocols(said)
    except ValueError as e:
        return View(error=f"{shlex.join(birdc_argv(announce, 'show', 'protocols', 'all'))}: {e}")
    states = {p.name: p.state for p in protocols}
    sessions, errors = sessions_of(protocols), []
    if not sessions:
        return View(states, ())
    said, why = _ask(announce, ("show", "bfd", "sessions"), timeout)
    try:
        bfd = parse_bfd(said) if said is not None else None
    except ValueError as e:
        bfd, why = None, f"{shlex.join(birdc_argv(announce, 'show', 'bfd', 'sessions'))}: {e}"
    errors.append(why)
    wanted = set(map(_norm, prefixes))
    out = []
    for s in sessions:
        exported = ()
        if s.established:
            words = ("show", "route", "export", s.name)
            said, why = _ask(announce, words, timeout)
            try:
                exported = None if said is None else tuple(p for p in map(_norm, parse_exported(said))
                                                           if p in wanted)
            except ValueError as e:
                exported, why = None, f"{shlex.join(birdc_argv(announce, *words))}: {e}"
            errors.append(why)
        out.append(s.replace(bfd=None if bfd is None else bfd.get(s.neighbor.split("%")[0]),
                             exported=exported))
    return View(states, tuple(out), next((e for e in errors if e), None))
