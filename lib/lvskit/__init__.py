"""lvskit: keep a network's services up on Linux Virtual Server (IPVS).

The library behind the small scripts in bin/.  A pinned pyroute2 (Debian 12's
0.7.2 has no IPVS) lives in lib/vendor/ next to this package, both in the
checkout (`make deps`) and when installed; it goes first on sys.path so it
wins over an older system copy.
"""
import os
import sys

_vendor = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vendor")
if os.path.isdir(_vendor) and _vendor not in sys.path:
    sys.path.insert(0, _vendor)
