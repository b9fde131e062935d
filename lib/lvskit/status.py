"""One view of the whole director: role, peers, every service and real server.

``gather`` reads, changes nothing, and returns a plain dict (the JSON of
``lvs-status --json``); ``text`` and ``prometheus`` render it.  Sources:

  the config                      services, real servers, configured weights
  the kernel (ipvs.Kernel.read)   kernel weights, active/inactive connections
  STATE_DIR/health.json           check-real's state and reason per server
  STATE_DIR/weights.json          reweight's load-based weight per server
  RUN_DIR/takeover.json           this node's role
  RUN_DIR/hb-peers.json           hb-listen's view: each peer's state, and
                                  when it was last heard on each path
  RUN_DIR/announce.json           lvs-announce's verdict ([announce] mode = bgp)

A missing file or a kernel without IPVS leaves its part empty and says so;
the rest is still shown.  A state file not of its shape is taken as missing,
with one warning naming it (state.load).

JSON schema (``"schema": 1``; keys are only ever added):

  schema, time (epoch s), config (path), director ([global] director)
  node:     {name, role: active|standby|held|null, priority} or null (no [heartbeat])
  heartbeat: {view_age: s since hb-listen last wrote its view, or null;
              deadtime: s}
  peers:    [{name, state, alive, priority, heard_age,
              paths: {PATH: age s or null (never heard)}}]
  ipvs:     {available: bool, error: str or null}
  settings: [{key: an [ipvs] key, wanted: the config's value or null (keep),
              kernel: the kernel's value or null (unknown)}]
  services: [{name, key ("tcp 192.168.45.26:80"), protocol, address, port,
              fwmark, scheduler, in_kernel: bool or null (unknown), check,
              checked_age,
              reals: [{server, address, port, entry ("ADDR:PORT"), forward,
                       configured: bool (false: in the kernel only, leaving),
                       sorry: bool, configured_weight, load_weight,
                       wanted_weight (what ipvs-sync would set; null: out),
                       kernel_weight, in_kernel, active, inactive,
                       health: up|warning|down|held|maint|unknown or null
                       (no check), up: bool or null, reason, since_age,
                       kept: bool}]}]
  foreign:  [{key, scheduler, reals: [{entry, weight, active, inactive}]}]
  announce: only with [announce] mode = bgp (absent: mode none):
            {mode: "bgp", file: RUN_DIR/announce.json,
             gate: ok|stale|missing|malformed (stale: its last round is
             older than stale_after s; missing, malformed: no verdict),
             announced: bool or null (no verdict), key: the gate's reason
             key (ok, drain, empty, table, health, bird, config, stopped)
             or null, reason: its one line or null, since_age: s since the
             verdict last changed, checked_age: s since its last round,
             stale_after: s,
             bird: BIRD's own view (bird.view: `birdc show protocols all`,
             `show bfd sessions`, `show route export S` per Established
             session, each within bird.BIRDC_TIMEOUT): {answered: bool
             (show protocols all), error: the first thing BIRD did not say,
             or null, protocols: {NAME: BIRD's state (up, down, start...)
             or null (BIRD has no such protocol)} of [announce] protocol
             for the IPv4 VIPs, and NAME_v6 when there are IPv6 VIPs,
             sessions: [{name (the BGP protocol), neighbor, state (BIRD's:
             up, start, down = disabled), bgp_state (Established, Active,
             Connect, Idle...), established: bool, since (BIRD's text, its
             timeformat), error (its Last error) or null, bfd: the BFD
             session's state for the neighbor (Up, Down, Init, AdminDown)
             or null (none: bfd off), exported: [the VIPs' prefixes BIRD
             sends on it] ([] when not Established) or null (not known)}]}}

Ages are seconds before ``time``.  Kernel fields are null when the kernel
could not be read or the entry is not in it.
"""
import os
import time

from . import errors, health as health_mod, log, state, verdict
from .desired import desired_table, load_weights
from .model import FORWARD_NAMES, PROTOCOL_NAMES, hostport
from .pluginoutput import Output

SCHEMA = 1
NO_HEALTH = health_mod.View()


def _age(now, t):
    return round(now - t, 3) if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 else None


def _read_kernel(kernel):
    """(table or None, [ipvs] settings {key: value} or None, error text or None, exit code)."""
    try:
        if kernel is None:
            from .ipvs import Kernel    # late: only a real run reads the kernel
            with Kernel() as k:
                return k.read(), _settings(k), None, errors.OK
        return kernel.read(), _settings(kernel), None, errors.OK
    except errors.Fatal as e:
        return None, None, str(e), e.code


def _settings(kernel):
    """The kernel's [ipvs] settings, or None for a kernel that cannot tell (a test's fake)."""
    if not hasattr(kernel, "timeouts"):
        return None
    from . import kernelsettings
    return kernelsettings.read(kernel)


def _settings_rows(cfg, settings):
    """[{key, wanted (null: keep), kernel (null: unknown)}] of the [ipvs] settings."""
    from .config.kernel import SWITCHES, TIMEOUTS
    return [{"key": key, "wanted": getattr(cfg.ipvs, key), "kernel": (settings or {}).get(key)}
            for key in SWITCHES + TIMEOUTS]


def _node(cfg, node_name):
    if cfg.heartbeat is None:
        return None
    from .takeover import read_role
    name = node_name
    if name is None:
        from .hbnet import which_node
        try:
            name = which_node(cfg).name
        except errors.Fatal:
            name = None
    priority = None
    if name is not None:
        try:
            priority = cfg.node(name).priority
        except KeyError:
            raise errors.Fatal(f"{cfg.path}: no [node {name}]", errors.NOT_CONFIGURED) from None
    return {"name": name, "role": read_role(cfg), "priority": priority}


def _peers(cfg, node, now):
    from .takeover import load_peers
    data = load_peers(cfg)
    written, heard = data.get("written"), data.get("peers", {})
    me = node["name"] if node else None
    out = []
    for n in cfg.nodes:
        if n.name == me:
            continue
        p = heard.get(n.name, {})
        paths = p.get("paths", {})
        out.append({"name": n.name, "state": p.get("state"), "alive": p.get("alive") is True,
                    "priority": n.priority, "heard_age": _age(now, p.get("heard")),
                    "paths": {path: _age(now, paths.get(path)) for path in sorted(n.paths)}})
    return {"view_age": _age(now, written), "deadtime": cfg.heartbeat.deadtime}, out


def _real_row(vs, name, dest, kdest, health, loads, wanted, configured=True, sorry=False, now=0):
    entry = str(dest)
    t = health.track(vs.name, entry)
    w = (loads.get(vs.name) or {}).get(entry)
    load = w.get("weight") if isinstance(w, dict) and vs.reweight != "none" else None
    state_ = t.state if t else ("unknown" if vs.check.kind != "none" else None)
    return {"server": name, "address": dest.address, "port": dest.port, "entry": entry,
            "forward": FORWARD_NAMES.get(dest.forward, str(dest.forward)),
            "configured": configured, "sorry": sorry,
            "configured_weight": dest.weight if configured or sorry else None,
            "load_weight": load if isinstance(load, int) and not isinstance(load, bool) else None,
            "wanted_weight": wanted.weight if wanted is not None else None,
            "kernel_weight": kdest.weight if kdest else None, "in_kernel": kdest is not None,
            "active": kdest.active if kdest else None, "inactive": kdest.inactive if kdest else None,
            "health": state_, "up": t.up if t else None, "last": t.last or None if t else None,
            "reason": t.reason if t else "", "since_age": _age(now, t.since) if t else None,
            "kept": t.kept if t else False}


STALE_AFTER = 10.0     # s: lvs-announce.service's WatchdogSec; the gate rounds every 1 s
STALE_ROUNDS = 3       # rounds of a slower gate (its "every") its verdict may be behind


def stale_after(data):
    """Seconds after its last round at which the gate's verdict is stale: STALE_AFTER, or
    STALE_ROUNDS of its own interval when it rounds slower than that allows."""
    every = data.get("every")
    return max(STALE_AFTER, STALE_ROUNDS * every) if every else STALE_AFTER


def _bird(cfg):
    """BIRD's side: the announcement's protocols and every BGP session (bird.view)."""
    from . import bird
    v = bird.view(cfg.announce, bird.vip_prefixes(cfg))
    by_family = bird.vips(cfg)
    names = [name for name, af in bird.protocols(cfg.announce) if by_family[af]]
    return {"answered": v.protocols is not None, "error": v.error,
            "protocols": {name: (v.protocols or {}).get(name) for name in names},
            "sessions": [{"name": s.name, "neighbor": s.neighbor, "state": s.state,
                          "bgp_state": s.bgp_state, "established": s.established, "since": s.since,
                          "error": s.error or None, "bfd": s.bfd,
                          "exported": None if s.exported is None else list(s.exported)}
                         for s in v.sessions]}


def _announce(cfg, now):
    """The "announce" part (bgp mode only): the gate's verdict and how fresh it is."""
    path = state.announce_path(cfg)
    out = {"mode": cfg.announce.mode, "file": path, "gate": "missing", "announced": None, "key": None,
           "reason": None, "since_age": None, "checked_age": None, "stale_after": STALE_AFTER}
    from .gate import check_verdict
    # BIRD first, the verdict after: the gate switches BIRD, then writes its verdict, so
    # BIRD already exporting under a verdict still "withdrawn" is a window of one file write
    out["bird"] = _bird(cfg)
    data = state.load(path, None, check_verdict)
    if data is None:
        if os.path.lexists(path):       # there, but state.load warned that it is not the gate's
            out["gate"] = "malformed"
        return out
    checked_age, bound = round(now - data["checked"], 3), stale_after(data)
    out.update(announced=data["announced"], key=data["key"], reason=data["reason"],
               since_age=_age(now, data.get("since")), checked_age=checked_age, stale_after=bound,
               gate="stale" if checked_age > bound else "ok")
    return out


def gather(cfg, kernel=None, node_name=None, now=None):
    """(status dict, exit code): 0, or the code of why the kernel could not be read."""
    now = time.time() if now is None else now
    table, settings, error, code = _read_kernel(kernel)
    health = health_mod.read(cfg)
    loads = load_weights(cfg)
    desired = desired_table(cfg, health=health, weights=loads)
    node = _node(cfg, node_name)
    hb, peers = _peers(cfg, node, now) if cfg.heartbeat else (None, [])
    out = {"schema": SCHEMA, "time": round(now, 3), "config": cfg.path, "director": cfg.director,
           "node": node, "heartbeat": hb, "peers": peers,
           "ipvs": {"available": table is not None, "error": error},
           "settings": _settings_rows(cfg, settings), "services": [], "foreign": []}
    for vs in cfg.services:
        k = vs.key
        ksvc = table.get(k) if table is not None else None
        kdests = dict(ksvc.dests) if ksvc else {}
        want = desired[k].dests
        rows = []
        for real in vs.reals:
            d = real.dest
            rows.append(_real_row(vs, real.name, d, kdests.pop(d.key, None), health, loads,
                                  want.get(d.key), now=now))
        if vs.sorry and vs.sorry.key not in {r.dest.key for r in vs.reals}:
            rows.append(_real_row(vs, "sorry", vs.sorry, kdests.pop(vs.sorry.key, None), health, loads,
                                  want.get(vs.sorry.key), configured=False, sorry=True, now=now))
        for kd in sorted(kdests.values(), key=lambda d: d.key):     # leaving (drained) or by hand
            rows.append(_real_row(vs, None, kd, kd, NO_HEALTH, {}, None, configured=False, now=now))
        out["services"].append({
            "name": vs.name, "key": str(k), "protocol": PROTOCOL_NAMES.get(k.protocol) if not k.fwmark else None,
            "address": k.address or None, "port": k.port or None, "fwmark": k.fwmark or None,
            "family": "inet6" if k.af == 10 else "inet",
            "scheduler": vs.service.scheduler, "in_kernel": (ksvc is not None) if table is not None else None,
            "kernel_scheduler": ksvc.scheduler if ksvc else None, "check": vs.check.kind,
            "reweight": vs.reweight, "checked_age": _age(now, health.checked.get(vs.name)), "reals": rows})
    configured = {vs.key for vs in cfg.services}
    for key, ksvc in sorted((table or {}).items()):
        if key not in configured:
            out["foreign"].append({"key": str(key), "scheduler": ksvc.scheduler, "reals": [
                {"entry": str(d), "weight": d.weight, "active": d.active, "inactive": d.inactive}
                for d in sorted(ksvc.dests.values(), key=lambda d: d.key)]})
    if cfg.announce.bgp:
        out["announce"] = _announce(cfg, now)
    return out, code


# --- text ----------------------------------------------------------------------------

def _n(v, fmt="{}"):
    return "-" if v is None else fmt.format(v)


def _secs(v):
    if v is None:
        return "never"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if v >= size:
            return f"{v / size:.0f}{unit}"
    return f"{v:.1f}s"


def _role_lines(st):
    node = st["node"]
    if node is None:
        return [f"director {st['director'] or '-'}: no [heartbeat] (no failover)"]
    role = node["role"] or "unknown (no role file: hb-listen not running?)"
    head = f"node {node['name'] or '? (which [node] is this? use --node)'}: {role}"
    if node["priority"] is not None:
        head += f", priority {node['priority']}"
    hb = st["heartbeat"]
    if hb["view_age"] is None:
        head += "; no peers view (hb-listen not running?)"
    elif hb["view_age"] > 5:
        head += f"; peers view is {_secs(hb['view_age'])} old (hb-listen stopped?)"
    lines = [head]
    for p in st["peers"]:
        paths = ", ".join(f"{name} {_secs(age)}" for name, age in p["paths"].items())
        lines.append(f"  peer {p['name']}: {p['state'] or 'never heard'}"
                     f"{'' if p['alive'] else ', SILENT'}, priority {p['priority']}; "
                     f"heartbeat age {paths}")
    return lines


def announce_line(a):
    """One line of the gate's verdict: announced/WITHDRAWN, since when, why, its last round."""
    head = f"announce {a['mode']}: "
    if a["gate"] == "missing":
        return head + f"no verdict, {a['file']} missing (lvs-announce not running?)"
    if a["gate"] == "malformed":
        return head + f"no verdict, {a['file']} is not lvs-announce's (see the warning; " \
                      "lvs-announce not running?)"
    line = head + ("announced" if a["announced"] else "WITHDRAWN")
    if a["since_age"] is not None:
        line += f" for {_secs(a['since_age'])}"
    line += f": {a['reason']}; last round {_secs(a['checked_age'])} ago"
    if a["gate"] == "stale":
        line += f", STALE (over {_secs(a['stale_after'])}: lvs-announce not running?)"
    return line


def bird_lines(b):
    """BIRD's view: each protocol's state, then a line per BGP session; or why BIRD did not say."""
    if not b["answered"]:
        return [f"  BIRD does not answer: {b['error']}"]
    lines = ["  BIRD: " + ", ".join(f"{name} {st or 'MISSING (not in bird.conf?)'}"
                                    for name, st in b["protocols"].items())]
    for s in b["sessions"]:
        line = f"  BGP {s['name']} {s['neighbor'] or '-'}: {s['bgp_state']}"
        if s["state"] == "down":
            line += " (disabled)"
        line += f" since {s['since']}" if s["since"] else ""
        line += f" ({s['error']})" if s["error"] and not s["established"] else ""
        line += ", no BFD" if s["bfd"] is None else f", BFD {s['bfd']}"
        if s["exported"] is None:
            line += "; exports: unknown" if s["established"] else ""
        else:
            line += "; exports " + (", ".join(s["exported"]) or "no VIP")
        lines.append(line)
    if b["error"]:
        lines.append(f"  BIRD did not say all: {b['error']}")
    return lines


def _weight_cell(r, available):
    if not available:
        return "-"
    if r["kernel_weight"] is None:
        return "-" if r["wanted_weight"] is None else f"- (want {r['wanted_weight']})"
    if r["wanted_weight"] is not None and r["wanted_weight"] != r["kernel_weight"]:
        return f"{r['kernel_weight']} (want {r['wanted_weight']})"
    return str(r["kernel_weight"])


def _health_cell(r):
    if r["sorry"]:
        return "sorry"
    if not r["configured"]:
        return "leaving"
    h = r["health"] or "-"
    return h + " (kept)" if r["kept"] else h


def text(st):
    """The sysadmin's view: role on top, then an ipvsadm -Ln like table with health."""
    lines = _role_lines(st)
    if "announce" in st:
        lines.append(announce_line(st["announce"]))
        lines += bird_lines(st["announce"]["bird"])
    ipvs = st["ipvs"]
    if not ipvs["available"]:
        lines.append(f"IPVS: {ipvs['error']}; kernel columns are empty")
    head = ("  -> SERVER", "ADDRESS:PORT", "FWD", "CONF", "LOAD", "WEIGHT", "ACTIVE", "INACT",
            "HEALTH", "REASON")
    rows = []
    for s in st["services"]:
        where = "" if s["in_kernel"] is not False else "  NOT IN THE KERNEL"
        rows.append(f"{s['key']} {s['scheduler']}  [{s['name']}]{where}")
        for r in s["reals"]:
            rows.append((f"  -> {r['server'] or '-'}", hostport(r["address"], r["port"]), r["forward"],
                         _n(r["configured_weight"]), _n(r["load_weight"]), _weight_cell(r, ipvs["available"]),
                         _n(r["active"]), _n(r["inactive"]), _health_cell(r), r["reason"]))
    cells = [head] + [r for r in rows if isinstance(r, tuple)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]

    def fmt(cols):
        return "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    lines.append("PROT VIP:PORT SCHEDULER  [SERVICE]")
    lines.append(fmt(head))
    lines += [fmt(r) if isinstance(r, tuple) else r for r in rows]
    lines.append(_settings_line(st["settings"]))
    for f in st["foreign"]:
        lines.append(f"{f['key']} {f['scheduler']}  (foreign: not in the config)")
        for r in f["reals"]:
            lines.append(f"  -> {r['entry']}  weight {r['weight']}  active {r['active']}  "
                         f"inactive {r['inactive']}")
    return "\n".join(lines) + "\n"


def _settings_line(rows):
    """kernel: expire_nodest_conn 1, ..., tcpfin_timeout 30 (want 120): the [ipvs] settings."""
    cells = []
    for r in rows:
        cell = f"{r['key']} {_n(r['kernel'])}"
        if r["wanted"] is not None and r["kernel"] is not None and r["wanted"] != r["kernel"]:
            cell += f" (want {r['wanted']})"
        cells.append(cell)
    return "kernel: " + ", ".join(cells)


# --- Prometheus text exposition (node_exporter's textfile collector) -----------------

def _label(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(d):
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in d.items()) + "}" if d else ""


METRICS = (  # name, type, help
    ("lvskit_status_time_seconds", "gauge", "When lvs-status gathered these figures (epoch seconds)."),
    ("lvskit_ipvs_available", "gauge", "1 when the kernel's IPVS table could be read."),
    ("lvskit_director_active", "gauge", "1 when this node's role file says active."),
    ("lvskit_peer_alive", "gauge", "1 when hb-listen last saw the peer alive."),
    ("lvskit_heartbeat_age_seconds", "gauge",
     "Seconds since a heartbeat from the peer arrived on the path (about 1 s resolution)."),
    ("lvskit_service_in_kernel", "gauge", "1 when the configured virtual service (key: tcp VIP:PORT "
                                          "or fwmark N) is in the kernel."),
    ("lvskit_real_server_up", "gauge", "1 when check-real has the real server up (or warning); "
                                       "absent when it has no health."),
    ("lvskit_real_server_configured_weight", "gauge", "Weight in the config."),
    ("lvskit_real_server_load_weight", "gauge", "Weight reweight chose from the server's load."),
    ("lvskit_real_server_weight", "gauge", "Weight in the kernel's IPVS table."),
    ("lvskit_real_server_active_connections", "gauge", "Active connections (kernel)."),
    ("lvskit_real_server_inactive_connections", "gauge", "Inactive connections (kernel)."),
)

ANNOUNCE_METRICS = (  # only with [announce] mode = bgp: mode none's textfile stays as it was
    ("lvskit_announced", "gauge", "1 when lvs-announce's last round announced the VIPs (key: its "
                                  "reason, ok when announced); absent without a verdict."),
    ("lvskit_announce_round_age_seconds", "gauge", "Seconds since lvs-announce's last round "
                                                   "(it rounds every second; absent without a verdict)."),
    ("lvskit_bird_available", "gauge", "1 when BIRD answered birdc show protocols all."),
    ("lvskit_bgp_session_up", "gauge", "1 when BIRD's BGP session (session: its protocol name) is "
                                       "Established; absent when BIRD does not answer."),
    ("lvskit_bgp_session_bfd_up", "gauge", "1 when the BFD session to the BGP session's neighbor is "
                                           "Up; absent when there is none (bfd off)."),
    ("lvskit_bgp_session_exported_vips", "gauge", "How many of the VIPs BIRD exports on the BGP "
                                                  "session (0 when it is not Established); absent "
                                                  "when BIRD did not say."),
)


def prometheus(st):
    metrics = METRICS + (ANNOUNCE_METRICS if "announce" in st else ())
    samples = {name: [] for name, _, _ in metrics}
    samples["lvskit_status_time_seconds"].append(({}, st["time"]))
    samples["lvskit_ipvs_available"].append(({}, int(st["ipvs"]["available"])))
    node = st["node"]
    if node is not None:
        samples["lvskit_director_active"].append(({"node": node["name"] or ""},
                                                  int(node["role"] == "active")))
    for p in st["peers"]:
        samples["lvskit_peer_alive"].append(({"peer": p["name"]}, int(p["alive"])))
        for path, age in p["paths"].items():
            if age is not None:
                samples["lvskit_heartbeat_age_seconds"].append(({"peer": p["name"], "path": path}, age))
    for s in st["services"]:
        vip = s["key"]
        if s["in_kernel"] is not None:
            # key, not address: "tcp VIP:PORT" or "fwmark N" is a service's identity (lvs-status
            # --json's "key"); address is always a real server's ADDR:PORT
            samples["lvskit_service_in_kernel"].append(({"service": s["name"], "key": vip},
                                                        int(s["in_kernel"])))
        for r in s["reals"]:
            lab = {"service": s["name"], "server": r["server"] or "", "address": r["entry"]}
            for metric, value in (("up", None if r["up"] is None else int(r["up"])),
                                  ("configured_weight", r["configured_weight"]),
                                  ("load_weight", r["load_weight"]),
                                  ("weight", r["kernel_weight"]),
                                  ("active_connections", r["active"]),
                                  ("inactive_connections", r["inactive"])):
                if value is not None:
                    samples["lvskit_real_server_" + metric].append((lab, value))
    a = st.get("announce")
    if a is not None and a["announced"] is not None:
        samples["lvskit_announced"].append(({"key": a["key"]}, int(a["announced"])))
        samples["lvskit_announce_round_age_seconds"].append(({}, a["checked_age"]))
    if a is not None:
        samples["lvskit_bird_available"].append(({}, int(a["bird"]["answered"])))
        for s in a["bird"]["sessions"]:
            lab = {"session": s["name"], "neighbor": s["neighbor"]}
            samples["lvskit_bgp_session_up"].append((lab, int(s["established"])))
            if s["bfd"] is not None:
                samples["lvskit_bgp_session_bfd_up"].append((lab, int(s["bfd"] == "Up")))
            if s["exported"] is not None:
                samples["lvskit_bgp_session_exported_vips"].append((lab, len(s["exported"])))
    out = []
    for name, kind, help_ in metrics:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out += [f"{name}{_labels(lab)} {value}" for lab, value in samples[name]]
    return "\n".join(out) + "\n"


def write_textfile(path, body):
    """Temp file + rename in the same directory: node_exporter never reads half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise errors.Fatal(f"{path}: {e.strerror or e}") from None
    log.debug(f"wrote {path}")


# --- --check (monitoring-plugins) --------------------------------------------------

def _table_wrong(s):
    """Why the kernel's table cannot serve service s (None: it can): lvs-status's table verdict."""
    if not s["in_kernel"]:
        return f"{s['name']} not in the kernel"
    if not any(r["kernel_weight"] for r in s["reals"]):
        return f"{s['name']} has no real server with weight"
    return None


def _announce_check(out, a, wrong):
    """The gate's part of --check ([announce] mode = bgp); the summary's words about it.

    CRITICAL: the gate says announced (fresh or stale: a gate that died
    without withdrawing may leave BIRD announcing) while the table is not
    right.  WARNING: no verdict (no file, or not the gate's), a stale one
    (the gate not running), or withdrawn for any reason but a drain
    (stopped included: the gate is not running).  A drain is planned: OK.
    Then what BIRD tells the routers (_sessions_check).
    """
    if a["gate"] in ("missing", "malformed"):
        out.add(errors.CHECK_WARNING, f"lvs-announce gives no verdict ({a['file']} "
                                      f"{'missing' if a['gate'] == 'missing' else 'not its'})")
        said = "no announce verdict"
    else:
        if a["announced"] and wrong:
            out.add(errors.CHECK_CRITICAL, f"ANNOUNCED with a wrong table ({wrong[0]})")
        if a["gate"] == "stale":
            out.add(errors.CHECK_WARNING, f"lvs-announce's last round {_secs(a['checked_age'])} ago "
                                          f"(not running?)")
        if a["announced"]:
            said = "announced"
        else:
            if a["key"] != "drain":
                out.add(errors.CHECK_WARNING)
            said = f"withdrawn: {a['reason']}"
    return said + _sessions_check(out, a, wrong)


def _sessions_check(out, a, wrong):
    """BIRD's BGP sessions against the gate's verdict; the summary's words about them.

    Nothing is judged when BIRD does not answer (the gate withdraws for that
    itself, and its verdict says so).  CRITICAL: a session exports a VIP while
    the gate says withdrawn (a drain or a stopped gate included: the router
    still sends this director flows nobody meant it to have), or while there
    is no verdict and the table is wrong.  WARNING: announced (a fresh
    verdict) but no session exports a VIP: none is Established ("announced
    to nobody"), or bird.conf's export filter lets none through; a BGP
    session BIRD runs that is not Established (a router lost: one path
    less); an Established one whose BFD session is not Up (a death is then
    seen only by the hold timer).  A BGP protocol disabled in BIRD (state
    down) is the admin's and is not judged.
    """
    b = a["bird"]
    if not b["answered"]:
        return ""
    sessions = b["sessions"]
    exporting = [s["name"] for s in sessions if s["exported"]]
    if exporting and a["announced"] is False:
        out.add(errors.CHECK_CRITICAL, f"VIPs EXPORTED to {', '.join(exporting)} while lvs-announce "
                                       f"says withdrawn")
    elif exporting and a["announced"] is None and wrong:
        out.add(errors.CHECK_CRITICAL, f"VIPs EXPORTED to {', '.join(exporting)} with a wrong table "
                                       f"({wrong[0]})")
    elif not exporting and a["announced"] and a["gate"] == "ok":
        if not any(s["established"] for s in sessions):
            out.add(errors.CHECK_WARNING, "announced to nobody: no BGP session Established")
        elif all(s["exported"] is not None for s in sessions):
            out.add(errors.CHECK_WARNING, "announced but no BGP session exports a VIP "
                                          "(bird.conf's export filter?)")
    for s in sessions:
        if s["state"] == "down":
            continue
        if not s["established"]:
            out.add(errors.CHECK_WARNING, f"BGP {s['name']} {s['bgp_state']}"
                                          + (f" ({s['error']})" if s["error"] else ""))
        elif s["bfd"] not in (None, "Up"):
            out.add(errors.CHECK_WARNING, f"BGP {s['name']} BFD {s['bfd']}")
    return f"; BGP {_sessions_up(a)}/{len(sessions)} up" if sessions else ""


def _sessions_up(a):
    return sum(s["established"] for s in a["bird"]["sessions"])


def check(st):
    """(exit code, one line): each service's state as check-real says it (verdict.service),
    and CRITICAL when a service is missing from the kernel or has nothing with weight
    there; WARNING when a peer or one of its paths is silent.  In [announce] mode = bgp,
    the gate's verdict too (_announce_check)."""
    out = Output("LVS_STATUS")
    if not st["ipvs"]["available"]:
        out.add(errors.CHECK_UNKNOWN)
        return out.code, out.lines(st["ipvs"]["error"])[0]
    wrong = [why for why in map(_table_wrong, st["services"]) if why]
    announce = _announce_check(out, st["announce"], wrong) if "announce" in st else None
    named, up, total, conns = [], 0, 0, 0
    for s in st["services"]:
        why = _table_wrong(s)
        if why:
            out.add(errors.CHECK_CRITICAL, why)
        if not s["in_kernel"]:
            continue
        reals = [r for r in s["reals"] if r["configured"] and not r["sorry"]]
        states = [(r["health"], r["last"]) for r in reals]
        out.add(verdict.service(states))
        if verdict.all_down(h for h, _ in states):
            sorry = next((r["entry"] for r in s["reals"] if r["sorry"]), None)
            out.add(errors.CHECK_CRITICAL, verdict.all_down_text(s["name"], sorry,
                                                                 [r["server"] for r in reals if r["kept"]]))
        for r in s["reals"]:
            conns += r["active"] or 0
        for r in reals:
            total += 1
            up += verdict.is_up(r["health"])
            code = verdict.server(r["health"], r["last"])
            if code != errors.CHECK_OK:
                named.append((code, f"{s['name']} {r['server']} {r['health']}: {r['reason']}"))
    for p in st["peers"]:
        if not p["alive"]:
            named.append((errors.CHECK_WARNING, f"peer {p['name']} silent"))
        else:
            named += [(errors.CHECK_WARNING, f"peer {p['name']} path {path} silent")
                      for path, age in p["paths"].items()
                      if age is None or age > st["heartbeat"]["deadtime"] + 2]
    for code, text in sorted(named, key=lambda x: x[0] != errors.CHECK_UNKNOWN):  # after every critical one
        out.add(code, text)
    out.metric("up", up, lo=0, hi=total)
    out.metric("active", conns, lo=0)
    if "announce" in st and st["announce"]["bird"]["sessions"]:
        out.metric("bgp_up", _sessions_up(st["announce"]), lo=0, hi=len(st["announce"]["bird"]["sessions"]))
    role = f"; {st['node']['role'] or 'no role'}" if st["node"] else ""
    role += f"; {announce}" if announce else ""
    return out.code, out.lines(f"{up}/{total} real servers up{role}")[0]
