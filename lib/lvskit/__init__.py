"""lvskit: keep a network's services up on Linux Virtual Server (IPVS).

The library behind the small scripts in bin/.  A pinned pyroute2 (Debian 12's
0.7.2 has no IPVS) lives in lib/vendor/ next to this package, both in the
checkout (`make deps`) and when installed; it goes first on sys.path so it
wins over an older system copy.

The scripts start with ``python3 -S``: site's work at start-up is mostly
running the .pth files other packages installed (matplotlib's namespace
hook, setuptools' distutils shim, ...): code we do not need, run as root on
every cron run and every inetd-started agent.  The site-packages
directories themselves are put back here, so the packages we use (requests,
sh) are found as before.
"""
import os
import sys

__version__ = "0.17.0"     # the one version string: --version, man pages, packages

_vendor = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vendor")
if os.path.isdir(_vendor) and _vendor not in sys.path:
    sys.path.insert(0, _vendor)

if sys.flags.no_site:
    import site     # without -S's site.main(): only to ask where site-packages are
    for _dir in site.getsitepackages():
        if _dir not in sys.path and os.path.isdir(_dir):
            sys.path.append(_dir)
