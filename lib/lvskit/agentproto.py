"""HAProxy's agent-check text protocol: one short ASCII line from a real server.

The same line serves HAProxy (``agent-check``) and reweight, so a site can
run both against one lvs-agent.  A line is words separated by spaces, tabs
or commas, optionally followed by ``#`` and a free-text description:

  up 73%            the server is ready and has 73% of its capacity spare
  drain 40%         stop sending new work; 40% would be the weight otherwise
  maint | down      take the server out (reweight: weight 0)

Words: a percentage ``N%`` (0..100 here: spare capacity can't exceed all of
it), ``up``/``ready``, ``drain``, ``maint``, ``down``/``failed``/``stopped``,
``maxconn:N`` (HAProxy's; accepted and kept).  Parsing is strict: anything
else, two percentages, two states, or a line that isn't ASCII raises
AgentError naming the peer, and the caller changes nothing for that server.
"""
import re

from .model import record

MAX_LINE = 256          # HAProxy reads at most a buffer; an agent that says more is broken
STATES = {"up": "up", "ready": "up", "drain": "drain", "maint": "maint",
          "down": "down", "failed": "down", "stopped": "down"}
_PERCENT = re.compile(r"^([0-9]{1,3}(?:\.[0-9]{1,3})?)%$")
_MAXCONN = re.compile(r"^maxconn:([0-9]{1,9})$")
_SPLIT = re.compile(r"[ \t,]+")


class AgentError(ValueError):
    """A reply that can't be trusted; the message names the peer."""


class Answer(record("Answer",
                    state="up",         # up, drain, maint, down
                    capacity=None,      # spare capacity 0.0..1.0, None when not said
                    maxconn=None,
                    note="")):
    __slots__ = ()

    def usable(self):
        """The capacity to weight by: 0 for a server that wants no new work,
        full for a bare ``up`` (HAProxy keeps the configured weight then)."""
        if self.state != "up":
            return 0.0
        return 1.0 if self.capacity is None else self.capacity


def parse(data, peer="agent"):
    """Answer from the bytes (or str) an agent sent; AgentError when garbage."""
    if isinstance(data, bytes):
        if len(data) > MAX_LINE:
            raise AgentError(f"{peer}: answer longer than {MAX_LINE} bytes")
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise AgentError(f"{peer}: answer is not ASCII text") from None
    line, _, rest = data.partition("\n")
    if rest.strip():
        raise AgentError(f"{peer}: more than one line in the answer")
    line = line.rstrip("\r")
    text, _, note = line.partition("#")
    words = [w for w in _SPLIT.split(text.strip()) if w]
    if not words:
        raise AgentError(f"{peer}: empty answer")
    state = capacity = maxconn = None
    for word in words:
        low = word.lower()
        m = _PERCENT.match(low)
        if m:
            if capacity is not None:
                raise AgentError(f"{peer}: two percentages in {line!r}")
            value = float(m.group(1))
            if value > 100:
                raise AgentError(f"{peer}: {word} out of range 0..100%")
            capacity = value / 100
        elif low in STATES:
            if state is not None:
                raise AgentError(f"{peer}: two states in {line!r}")
            state = STATES[low]
        elif _MAXCONN.match(low):
            maxconn = int(_MAXCONN.match(low).group(1))
        else:
            raise AgentError(f"{peer}: unknown word {word[:20]!r} in agent answer")
    if state is None and capacity is None:
        raise AgentError(f"{peer}: neither a state nor a percentage in {line!r}")
    return Answer(state or "up", capacity, maxconn, note.strip())


def format_answer(state="up", capacity=None, note=""):
    """The line an agent sends, e.g. 'up 73%\\n'; capacity is a fraction 0..1."""
    if state not in ("up", "drain", "maint", "down"):
        raise ValueError(f"bad agent state {state!r}")
    words = [state]
    if capacity is not None:
        words.append(f"{round(max(0.0, min(1.0, capacity)) * 100)}%")
    line = " ".join(words)
    if note:
        line += " #" + re.sub(r"[^\x20-\x7e]", "?", note)
    return line + "\n"
