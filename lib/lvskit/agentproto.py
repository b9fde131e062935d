"""HAProxy's agent-check text protocol, read as HAProxy 2.6 reads it.

The same line serves HAProxy (``agent-check``) and reweight, so a site can
run both against one lvs-agent.  HAProxy's rules (src/tcpcheck.c,
tcpcheck_agent_expect_reply; doc/configuration.txt, "agent-check"):

- the answer is its first line, ended by the first CR or LF; what follows
  is never read;
- the line is words separated by spaces, tabs or commas, in any order; a
  word that begins with ``#`` starts a free-text description that runs to
  the end of the line (``up#x`` is one unknown word, not ``up`` and a note);
- words are case-insensitive, and of four kinds:

    up | down | fail | stopped      health: works, or does not (HAProxy: UP/DOWN)
    ready | drain | maint           admin state (HAProxy: READY, DRAIN, MAINT;
                                    only ``ready`` leaves DRAIN or MAINT)
    N%                              weight, N% of the configured one: any whole
                                    number, also above 100 (HAProxy caps the
                                    weight at 256, and N at 25600)
    maxconn:N                       HAProxy's connection limit (kept, unused here)

- several words of one kind: the last one wins; a kind not said leaves
  HAProxy's setting as it was.

What HAProxy does not apply, we refuse: a word of none of these kinds
(HAProxy logs it as an agent error), a weight that is not whole digits and
``%`` (``12.5%``, ``50%x``: HAProxy ignores it with a warning), ``maxconn:``
without digits, a NUL before the end of the line (HAProxy stops reading
there and ignores the answer), a line longer than HAProxy's buffer.  So is
a line that says nothing reweight can use (empty, only a description, only
maxconn).  AgentError names the peer, and the caller changes nothing for
that server.  The one leniency: an answer cut by the end of the connection
or of a command's output, without CR or LF, is read as a line (HAProxy
ignores such an answer; lvs-agent always ends its line).

For reweight the words make one state, the first that applies:

    down, fail, stopped  -> down    weight 0
    maint                -> maint   weight 0
    drain                -> drain   weight 0
    otherwise            -> up      weight by the percentage; a bare up or
                                    ready (no percentage): full weight
"""
import re

from .model import record

MAX_LINE = 16384        # HAProxy 2.6 reads an agent's answer into one buffer (tune.bufsize)
HEALTH = {"up": "up", "down": "down", "fail": "down", "stopped": "down"}
ADMIN = ("ready", "drain", "maint")
STATES = ("up", "drain", "maint", "down")
MAX_PERCENT = 25600     # HAProxy's own cap, against overflow
_SEPARATORS = re.compile(r"[ \t,]+")
_PERCENT = re.compile(r"[0-9]+%")
_MAXCONN = re.compile(r"maxconn:([0-9]+)")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


class AgentError(ValueError):
    """A reply that can't be trusted; the message names the peer."""


class Answer(record("Answer",
                    state="up",         # up, drain, maint, down: what reweight does
                    capacity=None,      # the percentage as a fraction (1.5 for 150%), None when not said
                    maxconn=None,
                    note="",
                    health=None,        # up, down, fail, stopped as said; None when not said
                    admin=None)):       # ready, drain, maint as said; None when not said
    __slots__ = ()

    def usable(self):
        """The capacity to weight by, 0..1: 0 for a server that wants no new
        work, full for a bare ``up``/``ready`` (HAProxy keeps the configured
        weight then).  Above 100% counts as 100%: reweight's ceiling is at
        most the full weight."""
        if self.state != "up":
            return 0.0
        return 1.0 if self.capacity is None else min(1.0, self.capacity)


def reweight_state(health, admin):
    """One of STATES from the health and admin words (either may be None)."""
    if health is not None and HEALTH[health] == "down":
        return "down"
    if admin in ("maint", "drain"):
        return admin
    return "up"


def parse(data, peer="agent"):
    """Answer from the bytes (or str) an agent sent; AgentError when garbage."""
    if isinstance(data, bytes):
        data = data.decode("latin-1")       # a byte a character: words are ASCII or unknown
    line = re.split(r"[\r\n]", data, maxsplit=1)[0]
    if len(line) > MAX_LINE:
        raise AgentError(f"{peer}: answer longer than {MAX_LINE} bytes")
    if "\0" in line:
        raise AgentError(f"{peer}: NUL byte in the answer")
    text, note = line, ""
    m = re.search(r"(?:^|[ \t,])#", line)
    if m:
        text, note = line[:m.start()], line[m.end():]
    health = admin = percent = maxconn = None
    for word in _SEPARATORS.split(text):
        low = word.lower()
        if not low:
            continue
        if low in HEALTH:
            health = low
        elif low in ADMIN:
            admin = low
        elif low[0].isdigit() and "%" in low:
            if not _PERCENT.fullmatch(low):
                raise AgentError(f"{peer}: bad weight {_show(word)} (whole percentages only, e.g. 73%)")
            percent = min(int(low[:-1]), MAX_PERCENT)
        elif low.startswith("maxconn:"):
            m = _MAXCONN.fullmatch(low)
            if not m:
                raise AgentError(f"{peer}: bad maxconn {_show(word)} (maxconn:N)")
            maxconn = int(m.group(1))
        else:
            raise AgentError(f"{peer}: unknown word {_show(word)} in agent answer")
    if health is None and admin is None and percent is None:
        what = "empty answer" if not text.strip(" \t,") and not note else \
            f"no state and no weight in {_show(line)}"
        raise AgentError(f"{peer}: {what}")
    return Answer(reweight_state(health, admin), None if percent is None else percent / 100,
                  maxconn, _UNPRINTABLE.sub("?", note.strip(" \t")), health, admin)


def _show(text):
    """Text from a peer, quoted and cut short, safe for one log line."""
    return repr(_UNPRINTABLE.sub("?", text[:40]))


def format_answer(state="up", capacity=None, note=""):
    """The line an agent sends for one of STATES, e.g. 'up ready 73%\\n'.

    Every line says health, admin state and (with a capacity, a fraction
    0..1) the weight, so what HAProxy does follows from this answer alone,
    whatever the previous ones said: ``ready`` is what takes a server out of
    DRAIN or MAINT, ``up`` what brings it back from DOWN.

        up     -> up ready 73%        drain -> up drain 73%
        maint  -> up maint 73%        down  -> down ready 73%
    """
    if state not in STATES:
        raise ValueError(f"bad agent state {state!r}")
    words = ["down" if state == "down" else "up", state if state in ("drain", "maint") else "ready"]
    if capacity is not None:
        words.append(f"{round(max(0.0, min(1.0, capacity)) * 100)}%")
    line = " ".join(words)
    if note:
        line += " #" + _UNPRINTABLE.sub("?", note)
    return line + "\n"
