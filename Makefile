# lvskit: keep a network's services up on Linux Virtual Server (IPVS).
#
#   make demo     bring up the lab (real IPVS kernel) and play the seed's table
#   make test     everything CI runs: unit tests, lab tests in the IPVS guest,
#                 host network-namespace tests; installs what it needs first
#   make deps     Debian packages + pinned pyroute2 into lib/vendor
#   make bench    the benchmarks in bench/ (minutes; figures in bench/README.md)

PYTHON      ?= /usr/bin/python3
PYROUTE2    ?= pyroute2==0.9.7
PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
DESTDIR     ?=
PYTEST      = $(PYTHON) -m pytest -q -p no:cacheprovider
APT_PKGS    = python3 python3-requests python3-sh python3-pytest python3-pip iproute2 ipvsadm kmod

.PHONY: all deps apt-deps lab test test-unit test-lab test-netns demo bench clean

all: deps

apt-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# pyroute2 >= 0.8.1 (Debian 12 has 0.7.2, without IPVS), pinned, in the private library directory.
lib/vendor/.stamp:
	rm -rf lib/vendor
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --no-compile \
	    --target lib/vendor '$(PYROUTE2)' 2>&1 | grep -v -e 'WARNING: Running pip as' -e 'is ignored: it is neither' || true
	$(PYTHON) -c "import sys; sys.path.insert(0, 'lib/vendor'); import pyroute2"
	touch $@

deps: apt-deps lib/vendor/.stamp

lab: deps
	lab/guest-kernel

test: deps lab
	$(MAKE) test-unit
	$(MAKE) test-netns
	$(MAKE) test-lab

test-unit:
	$(PYTEST) tests/unit

# Timing-sensitive tests (heartbeat, failover, checks) run on the host, in namespaces.
test-netns:
	@if ls tests/netns/test_*.py >/dev/null 2>&1; then $(PYTEST) tests/netns; else echo "no netns tests yet"; fi

# Kernel-table tests run inside the QEMU guest with Debian's IPVS kernel.
test-lab:
	lab/guest-run -- $(PYTEST) tests/lab

demo: deps lab
	lab/guest-run -- $(PYTHON) lab/demo.py

bench: deps lab
	bench/run

clean:
	rm -rf lib/vendor lab/build bench/results
