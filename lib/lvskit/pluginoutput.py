"""The monitoring-plugins output of every check (check-real, ipvs-sync --check, lvs-status --check).

The contract Nagios, Icinga and mon read: the exit code is the state, the
first line is ``NAME STATE - summary | perfdata``, and further lines are
long output.  The state is the worst of the sub-checks added, worst first:
CRITICAL, UNKNOWN (the check could not tell), WARNING, OK.
"""
from .errors import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, CHECK_WARNING

WORDS = {CHECK_OK: "OK", CHECK_WARNING: "WARNING", CHECK_CRITICAL: "CRITICAL", CHECK_UNKNOWN: "UNKNOWN"}
_RANK = {CHECK_OK: 0, CHECK_WARNING: 1, CHECK_UNKNOWN: 2, CHECK_CRITICAL: 3}


def worst(*codes):
    return max(codes, key=_RANK.__getitem__, default=CHECK_OK)


class Output:
    """One check's result, built sub-check by sub-check."""

    def __init__(self, name):
        self.name = name
        self.code = CHECK_OK
        self.texts = []         # what the sub-checks said, in the order added
        self.perfdata = []
        self.details = []       # long output: the lines after the first

    def add(self, code, text=""):
        """A sub-check's state, and what it says (nothing: it counts, unnamed)."""
        self.code = worst(self.code, code)
        if text:
            self.texts.append(text)

    def metric(self, label, value, uom="", lo=None, hi=None):
        """A perfdata item: label=VALUE[UOM];warn;crit;min;max (no thresholds here)."""
        fields = [f"{value}{uom}", "", "", "" if lo is None else str(lo), "" if hi is None else str(hi)]
        while fields[-1] == "":
            fields.pop()
        self.perfdata.append(f"{label}={';'.join(fields)}")

    def detail(self, line):
        self.details.append(line)

    def lines(self, summary):
        """The output: the plugin line (summary, then what the sub-checks said), then the details.

        "|" starts perfdata in the contract: one in the text becomes "/".
        """
        text = "; ".join(([summary] if summary else []) + self.texts).replace("|", "/")
        head = f"{self.name} {WORDS[self.code]} - {text}"
        if self.perfdata:
            head += " | " + " ".join(self.perfdata)
        return [head] + self.details
