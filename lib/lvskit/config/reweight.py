"""[reweight] (how reweight asks real servers for load) and [agent] (lvs-agent's capacity formula)."""
import os

from ..model import normalize_address
from ..model import record
from . import values as v


class Reweight(record(
        "Reweight",
        agent_port=7766,
        http_url="http://{address}:{agent_port}/load",
        command="ssh -o BatchMode=yes {address} lvs-agent",
        timeout=1.0,                # seconds for a whole round's answers
        alpha=0.25,
        deadband=0.05,
        max_step=0.1,
        floor=0.05,
        ceiling=1.0,
        scale=100,
        slow_start=60.0,
        agent_ports={})):           # server name -> port (never mutated)
    """[reweight]: how to ask for load and how answers become weights."""
    __slots__ = ()


class Agent(record(
        "Agent",
        load_avg=1,                 # which loadavg: 1, 5 or 15 minutes
        cpu_full=1.0,               # load (or busy) per CPU that counts as full (0: ignore CPU)
        cgroup="",                  # a cgroup v2 directory: its CPU time instead of loadavg
        cpu_sample=0.25,            # seconds between two cgroup readings when none is kept
        memory="auto",              # auto (PSI, else meminfo), psi, meminfo, off
        psi_full=10.0,              # memory "some" stall, % of time, that counts as full
        mem_ok=0.5,                 # fraction of memory in use that is still no pressure
        max_sessions=0,             # logins that count as full (0: ignore sessions)
        utmp="/var/run/utmp",
        state_file="/etc/lvskit/agent-state",   # admin's up/drain/maint/down
        listen="7766")):            # [ADDR:]PORT for --listen
    """[agent]: lvs-agent's capacity formula, on a real server (capacity.py)."""
    __slots__ = ()


def reweight(sec, server_secs):
    """The Reweight of the [reweight] section (None: absent) and the [server]s' agent_port keys."""
    d = Reweight()
    ports = {}
    for ssec in server_secs:
        if ssec.has("agent_port"):
            ports[ssec.name] = v.integer(ssec, "agent_port", 1, 65535)
    if sec is None:
        return Reweight(agent_ports=ports)
    floor = v.number(sec, "floor", 0, 1, d.floor)
    out = Reweight(
        agent_port=v.integer(sec, "agent_port", 1, 65535, d.agent_port),
        http_url=_template(sec, "http_url", d.http_url),
        command=_template(sec, "command", d.command),
        timeout=v.number(sec, "timeout", 0.01, 600, d.timeout),
        alpha=v.number(sec, "alpha", 0.01, 1, d.alpha),
        deadband=v.number(sec, "deadband", 0, 1, d.deadband),
        max_step=v.number(sec, "max_step", 0.01, 1, d.max_step),
        floor=floor,
        ceiling=v.number(sec, "ceiling", max(floor, 0.01), 1, d.ceiling),
        scale=v.integer(sec, "scale", 1, 1000, d.scale),
        slow_start=v.number(sec, "slow_start", 0, 86400, d.slow_start),
        agent_ports=ports)
    if not out.http_url.startswith(("http://", "https://")):
        raise sec.error(f"{out.http_url!r} is not an http:// or https:// URL", "http_url")
    return out


def _template(sec, key, default):
    value = sec.take(key, default) or default
    try:
        value.format(address="a", name="n", agent_port=1, port=1)
    except (KeyError, IndexError, ValueError) as e:
        raise sec.error(f"bad template {value!r} ({e}; known: {{address}} {{name}} "
                        "{agent_port} {port})", key) from None
    return value


def agent(sec):
    d = Agent()
    return Agent(
        load_avg=int(v.choice(sec, "load_avg", ("1", "5", "15"), str(d.load_avg))),
        cpu_full=v.number(sec, "cpu_full", 0, 64, d.cpu_full),
        cgroup=_cgroup(sec, "cgroup", d.cgroup),
        cpu_sample=v.duration(sec, "cpu_sample", 0.01, 10, d.cpu_sample),
        memory=v.choice(sec, "memory", ("auto", "psi", "meminfo", "off"), d.memory),
        psi_full=v.number(sec, "psi_full", 0, 100, d.psi_full),
        mem_ok=v.number(sec, "mem_ok", 0, 0.99, d.mem_ok),
        max_sessions=v.integer(sec, "max_sessions", 0, 100000, d.max_sessions),
        utmp=v.path(sec, "utmp", d.utmp),
        state_file=v.path(sec, "state_file", d.state_file),
        listen=_listen(sec, "listen", d.listen))


CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup(sec, key, default):
    """An absolute directory, or a path under the cgroup v2 mount (user.slice).
    Whether it exists is the agent's business at each answer: the config is
    validated on directors too, which may have no such slice."""
    raw = sec.take(key)
    if not raw:
        return default
    if ".." in raw.split("/"):
        raise sec.error(f"{raw!r} climbs out with '..'", key)
    return os.path.normpath(os.path.join(CGROUP_ROOT, raw))


def _listen(sec, key, default):
    raw = sec.take(key) or default
    try:
        parse_listen(raw)
    except ValueError as e:
        raise sec.error(str(e), key) from None
    return raw


def parse_listen(text):
    """'[ADDR:]PORT' -> (addr, port); ValueError naming the problem."""
    addr, _, port = text.rpartition(":")
    addr = addr.strip("[]")
    try:
        if addr:
            addr = normalize_address(addr)
        if not v.INTEGER.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} is not [ADDR:]PORT") from None
    return addr, int(port)
