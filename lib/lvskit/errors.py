"""Exit codes, named once, and the one fatal-error exception.

The codes follow the OCF resource-agent convention (resource-agents' IPaddr2
and friends), so a cluster manager or a shell script can tell "bad config"
from "not installed" from "standby" without parsing text.  Checks
(``--check`` modes, check-real) speak the monitoring-plugins contract
instead: OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3.
"""

OK = 0              # done, or nothing to do
ERROR = 1           # some operations failed; the next run repairs what is left
USAGE = 2           # bad command line
PERMISSION = 4      # not root, or a key file others can read
NOT_INSTALLED = 5   # the kernel has no IPVS, a program is missing
NOT_CONFIGURED = 6  # the config file is missing or wrong; nothing was changed
NOT_RUNNING = 7     # takeover status: this node is standby
BUSY = 75           # another run of the same program holds the lock (EX_TEMPFAIL)
INTERRUPTED = 130   # stopped by Ctrl-C (SIGINT), as shells report it

# monitoring-plugins contract, for --check modes
CHECK_OK, CHECK_WARNING, CHECK_CRITICAL, CHECK_UNKNOWN = 0, 1, 2, 3


class Fatal(Exception):
    """An error that ends the program with one line and an exit code."""

    def __init__(self, message, code=ERROR):
        super().__init__(message)
        self.code = code


class ConfigError(Fatal):
    """Bad configuration: names file, line, section and key where known."""

    def __init__(self, message, path=None, line=None, section=None, key=None):
        where = " ".join(([f"[{section}]"] if section else []) + ([key] if key else []))
        head = (f"{path}:{line}" if line else str(path)) if path else ""
        text = ": ".join(part for part in (head, where, message) if part)
        super().__init__(text, NOT_CONFIGURED)
        self.path, self.line, self.section, self.key = path, line, section, key
