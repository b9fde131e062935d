"""A service's state as the checks say it: one place, so check-real and lvs-status --check agree.

From check-real's health of each real server:
- a server: up OK; warning, maintenance, down or held WARNING (its service
  still serves from the others); UNKNOWN when it has no definite result yet
  or its last check could not tell (also while in warning or maintenance:
  UNKNOWN is the worse); a server known down stays WARNING.
- a service: CRITICAL when none of its real servers is up (all down or in
  maintenance: its sorry server serves it, or the last healthy set is kept
  in the table), else the worst of its servers.  A service with check = none
  has no health: OK, its servers count as up (the kernel's weights are all
  there is to know).
"""
from .errors import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, CHECK_WARNING
from .health import MAINT, UNKNOWN, UP, WARNING
from .pluginoutput import worst


def server(state, last=""):
    """The check state of one real server from its health state and its last result."""
    if state is None:
        return CHECK_OK                 # check = none
    if state == UNKNOWN or (last == UNKNOWN and state in (UP, WARNING, MAINT)):
        return CHECK_UNKNOWN
    return CHECK_OK if state == UP else CHECK_WARNING


def is_up(state):
    """Up as the checks count it: up or warning, or no health at all (check = none)."""
    return state is None or state in (UP, WARNING)


def all_down(states):
    """None of a service's real servers is up (states: their health states)."""
    states = list(states)
    return bool(states) and None not in states and not any(is_up(s) or s == UNKNOWN for s in states)


def service(states):
    """The check state of one service: states, [(health state, last result)] of its real servers."""
    states = list(states)
    if all_down(s for s, _ in states):
        return CHECK_CRITICAL
    return worst(*(server(s, last) for s, last in states))


def all_down_text(name, sorry, kept):
    """What a check says of a service with no server up: sorry: its sorry server or None;
    kept: names of the servers kept in the table."""
    if sorry:
        return f"{name} ALL DOWN: sorry server {sorry} serves it"
    return f"{name} ALL DOWN: keeping the last healthy set ({', '.join(kept) or 'all'}) in the table"

