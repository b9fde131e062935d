"""Lab tests: a real IPVS kernel (the QEMU guest, or a host whose kernel has IPVS).

`make test-lab` runs them in the guest with LVSKIT_LAB=1: there a missing
IPVS is a failure.  Run by hand elsewhere, they are skipped with the reason.
"""
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "lab"))
PY = "/usr/bin/python3"


def have_ipvs():
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True)
    return os.path.exists("/proc/net/ip_vs")


def pytest_collection_modifyitems(config, items):
    if have_ipvs():
        return
    if os.environ.get("LVSKIT_LAB") == "1":
        raise pytest.UsageError("LVSKIT_LAB=1 but this kernel has no IPVS")
    skip = pytest.mark.skip(reason="no IPVS in this kernel: run `make test-lab` (QEMU guest)")
    for item in items:
        item.add_marker(skip)


class Netns:
    """A bare network namespace (lo up) to hold an IPVS table."""

    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.run(["ip", "link", "set", "lo", "up"], check=True)

    def run(self, argv, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.name] + list(argv), **kw)

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def script(ns_run, name, *args, env=None):
    """Run bin/NAME inside a namespace (ns_run: Netns.run or a Lab's bound run)."""
    e = {**os.environ, "LVSKIT_NO_SYSLOG": "1", **(env or {})}
    return ns_run([PY, os.path.join(ROOT, "bin", name)] + list(args), env=e)


def ipvsadm_ln(ns_run):
    """The table as `ipvsadm -Ln` shows it: {service: (scheduler, flags, {dest: (fwd, weight)})}."""
    out = ns_run(["ipvsadm", "-Ln"]).stdout
    table, svc = {}, None
    for line in out.splitlines():
        m = re.match(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(.*)$", line)
        if m:
            svc, words = f"{m.group(1)} {m.group(2)}", m.group(3).split()
            if words[0] == "IPv6":      # a firewall-mark service's family
                svc, words = svc + " IPv6", words[1:]
            table[svc] = (words[0], " ".join(words[1:]), {})
            continue
        m = re.match(r"^\s+->\s+(\S+)\s+(\w+)\s+(\d+)", line)
        if m and svc and m.group(1) != "RemoteAddress:Port":
            table[svc][2][m.group(1)] = (m.group(2), int(m.group(3)))
    return table


READBACK = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import lvskit
from pyroute2 import IPVS, IPVSService
out = []
with IPVS() as ipvs:
    for s in ipvs.service("dump"):
        a = s.get_attr("IPVS_CMD_ATTR_SERVICE")
        get = a.get_attr
        svc = {"af": get("IPVS_SVC_ATTR_AF"), "protocol": get("IPVS_SVC_ATTR_PROTOCOL"),
               "addr": get("IPVS_SVC_ATTR_ADDR"), "port": get("IPVS_SVC_ATTR_PORT"),
               "fwmark": get("IPVS_SVC_ATTR_FWMARK"), "sched": get("IPVS_SVC_ATTR_SCHED_NAME"),
               "timeout": get("IPVS_SVC_ATTR_TIMEOUT"), "dests": []}
        key = IPVSService.from_message(s)
        for d in ipvs.dest("dump", service=key):
            da = d.get_attr("IPVS_CMD_ATTR_DEST").get_attr
            # from_message() misreports the forwarding method: read the raw attribute
            svc["dests"].append({"addr": da("IPVS_DEST_ATTR_ADDR"), "port": da("IPVS_DEST_ATTR_PORT"),
                                 "fwd": da("IPVS_DEST_ATTR_FWD_METHOD") & 7,
                                 "weight": da("IPVS_DEST_ATTR_WEIGHT")})
        out.append(svc)
print(json.dumps(out, default=str))
"""


def pyroute2_table(ns_run):
    r = ns_run([PY, "-c", READBACK, os.path.join(ROOT, "lib")])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def netns(request):
    ns = Netns(f"lvt{os.getpid()}{abs(hash(request.node.name)) % 10000}")
    yield ns
    ns.close()
