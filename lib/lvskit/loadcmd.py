"""Load answers from an external command (e.g. ``ssh HOST lvs-agent``).

Each command's stdout is one agent-protocol line; a non-zero exit or a
timeout is no answer.  Commands go through lvskit.run (the one user of sh),
a few at a time in threads: each is a process, so this is for tens of
servers, not thousands (use the agent for those).
"""
import shlex
from concurrent.futures import ThreadPoolExecutor

from .agentproto import MAX_LINE


def _one(argv, timeout):
    from . import run
    res = run.run(argv, timeout=timeout)
    if res.timed_out:
        return "timeout"
    if res.code != 0:
        err = (res.stderr.strip().splitlines() or [""])[-1][:80]
        return f"exit {res.code}" + (f": {err}" if err else "")
    return res.stdout.encode("utf-8", "replace")[:MAX_LINE + 1]


def poll(commands, timeout=5.0, workers=8):
    """commands: {key: shell-words string} -> {key: bytes or an error string}."""
    if not commands:
        return {}
    with ThreadPoolExecutor(min(workers, len(commands))) as pool:
        futures = {key: pool.submit(_one, shlex.split(cmd), timeout) for key, cmd in commands.items()}
        return {key: f.result() for key, f in futures.items()}
