# lvskit: keep a network's services up on Linux Virtual Server (IPVS).
#
#   make demo     bring up the lab (real IPVS kernel) and play the seed's story:
#                 timeline, summary, picture in demo-out/ (a few minutes)
#   make test     everything CI runs: unit tests, lab tests in the IPVS guest,
#                 host network-namespace tests, install tests (a DESTDIR and a
#                 debootstrapped Debian 12 root); installs what it needs first
#   make deps     Debian packages + pinned pyroute2 into lib/vendor (`make vendor`)
#   make install  scripts, library and pinned pyroute2 into $(PREFIX)/lib/lvskit,
#                 links in $(PREFIX)/sbin, config/key/cron/units (README,
#                 "Installing on Debian"), man pages; `make uninstall` keeps config and key
#   make man      the man pages into build/man (from --help and docs/: make install does it)
#   make install-realserver   lvs-agent and lvs-realserver only, no pip (README,
#                 "Real servers"); `make uninstall` removes it too
#   make bench    the benchmarks in bench/ (minutes; figures in bench/README.md)
#   make deb      Debian packages lvskit and lvskit-realserver (debian/, debhelper)
#                 into build/deb/, then lintian on them (README, "Debian package")

PYTHON      ?= /usr/bin/python3
PYROUTE2_VERSION ?= 0.9.7
PYROUTE2    ?= pyroute2==$(PYROUTE2_VERSION)
PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
LOCALSTATEDIR ?= /var
RUNSTATEDIR ?= /run
DESTDIR     ?=
SBINDIR     ?= $(PREFIX)/sbin
LIBDIR      ?= $(PREFIX)/lib/lvskit
DATADIR     ?= $(PREFIX)/share/lvskit
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR      ?= $(PREFIX)/share/man
CONFDIR     = $(SYSCONFDIR)/lvskit
# The pinned pyroute2 is built when its dist-info for the pinned version is
# missing: a stamp that is also the proof of which version is there.
VENDOR      = lib/vendor/pyroute2-$(PYROUTE2_VERSION).dist-info/RECORD
PYTEST      = $(PYTHON) -m pytest -q -p no:cacheprovider
# sudo: tests/netns runs the checks as an unprivileged user through conf/sudoers.lvskit.
# haproxy: tests/netns runs Debian's against lvs-agent; systemd: systemd-socket-activate
# (lvs-agent inetd-style in that test) and systemd-analyze (the install tests); groff-base
# and man-db: the tests render every man page (groff -ww) and look them up (man -w).
# bird2: [announce] mode = bgp's routing daemon; tests/netns and the lab start their own.
# keepalived: the benchmarks compare with it (bench/active_active.py runs it in the guest,
# which has only the host's files); its service does not start without a config.
# nftables: nft, for the handover grace (takeover); Debian leaves nftables.service disabled,
# and its ruleset must never be loaded here: nothing enables it.
APT_PKGS    = python3 python3-requests python3-sh python3-pytest python3-pip iproute2 ipvsadm kmod \
              haproxy systemd sudo groff-base man-db bird2 keepalived nftables \
              python3-prometheus-client \
              debootstrap stress-ng \
              $(DEB_PKGS)
# make deb: Debian 12's own packaging tools.
DEB_PKGS    = dpkg-dev debhelper dh-python lintian

.PHONY: all deps apt-deps vendor lab tools test test-unit test-lab test-netns test-install demo demo-deps bench clean \
        install uninstall install-realserver realserver-deps realserver-debs bookworm-root deb deb-deps \
        man install-man FORCE

all: deps

# No daemon of these packages may start on this host (Debian starts bird.service and
# haproxy.service when they are installed): the tests start their own, in namespaces, and a
# BIRD with Debian's config must never talk to the host's network.  So the install runs
# under a policy-rc.d that refuses every start (unless the host has its own, which stays),
# and BIRD, when this step installed it, is disabled for the next boot too.
POLICY_RC_D = /usr/sbin/policy-rc.d
apt-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  ours=; if [ ! -e $(POLICY_RC_D) ]; then \
	    ours=1; trap 'rm -f $(POLICY_RC_D)' EXIT INT TERM; \
	    printf '#!/bin/sh\n# lvskit make apt-deps: no service starts while it installs\nexit 101\n' > $(POLICY_RC_D); \
	    chmod 755 $(POLICY_RC_D); fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  rc=$$?; [ -z "$$ours" ] || rm -f $(POLICY_RC_D); \
	  case " $$missing " in *" bird2 "*) \
	    if command -v systemctl >/dev/null; then systemctl disable --now bird.service >/dev/null 2>&1 || true; fi;; \
	  esac; \
	  exit $$rc; \
	fi

# pyroute2 >= 0.8.1 (Debian 12 has 0.7.2, without IPVS), pinned, in the private library directory.
vendor: $(VENDOR)

$(VENDOR):
	rm -rf lib/vendor
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --no-compile \
	    --target lib/vendor '$(PYROUTE2)' 2>&1 | grep -v -e 'WARNING: Running pip as' -e 'is ignored: it is neither' || true
	$(PYTHON) -c "import sys; sys.path.insert(0, 'lib/vendor'); import pyroute2"
	test -f $@

deps: apt-deps vendor

lab: deps
	lab/guest-kernel

test: deps lab tools
	$(MAKE) test-unit
	$(MAKE) test-netns
	$(MAKE) test-lab
	$(MAKE) test-install

# promtool from Debian's prometheus package, unpacked, not installed (no daemon, no
# user, none of its 90 MB): the unit tests hold lvs-status's textfile to the linter
# of the program its users run.
PROMTOOL = build/tools/promtool
tools: $(PROMTOOL)

$(PROMTOOL):
	rm -rf build/tools/deb && mkdir -p build/tools/deb
	cd build/tools/deb && apt-get download -q prometheus >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get download -q prometheus >/dev/null; }
	dpkg -x build/tools/deb/prometheus_*.deb build/tools/deb/root
	install -m 0755 build/tools/deb/root/usr/bin/promtool $@
	rm -rf build/tools/deb

test-unit:
	$(PYTEST) tests/unit

# Timing-sensitive tests (heartbeat, failover, checks) run on the host, in namespaces.
test-netns:
	@if ls tests/netns/test_*.py >/dev/null 2>&1; then $(PYTEST) tests/netns; else echo "no netns tests yet"; fi

# Kernel-table tests run inside the QEMU guest with Debian's IPVS kernel.
test-lab:
	lab/guest-run -- $(PYTEST) tests/lab

# The picture needs matplotlib (Debian's); without it the demo still runs and says so.
DEMO_OUT ?= $(CURDIR)/demo-out
demo-deps:
	@dpkg -s python3-matplotlib >/dev/null 2>&1 || { echo "apt-get install python3-matplotlib"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    python3-matplotlib >/dev/null || echo "no matplotlib: the demo will run without its picture"; }

demo: deps lab demo-deps
	mkdir -p $(DEMO_OUT)
	LAB_OUT_HOST=$(DEMO_OUT) lab/guest-run -- $(PYTHON) lab/demo.py

bench: deps lab
	bench/run

# --- install -------------------------------------------------------------
# bup's layout: LIBDIR keeps the checkout's shape (bin/ next to lib/), so a
# script finds its library as ../lib from its real path, here and installed;
# sbin/ holds relative links into LIBDIR/bin.  Files under /etc are the
# admin's: installed only when absent, never overwritten, kept by uninstall.
# Shipped jobs are installed disabled (commented cron lines, units not
# enabled): the example config's addresses must not reach a kernel table
# before the admin has written the real ones.
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
            -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@RUNSTATEDIR@|$(RUNSTATEDIR)|g' \
            -e 's|@LOCALSTATEDIR@|$(LOCALSTATEDIR)|g' -e 's|@DATADIR@|$(DATADIR)|g'
SCRIPTS = $(notdir $(wildcard bin/*))
UNITS   = $(notdir $(wildcard conf/systemd/*.service conf/systemd/*.timer conf/systemd/*.socket))
D       = $(DESTDIR)

# --- man pages -----------------------------------------------------------
# Built, never committed: a script's page is its own --help (the hidden --man
# option renders its argparse parser) with its part of docs/manual.md as
# DETAILS, lvskit.ini(5) is docs/lvskit.ini.md, lvskit(7) README's "How it
# works", "Recipes" and "Conventions" (lib/lvskit/manpage.py; pure Python,
# no groff needed).  Always made afresh (FORCE): a few small runs.
# The scripts' default config is theirs, not this shell's LVSKIT_CONFIG.
MAN      = build/man
DOCPAGES = lvskit.ini.5 lvskit.7

man: $(addprefix $(MAN)/,$(addsuffix .8,$(SCRIPTS)) $(DOCPAGES))

$(MAN)/%.8: FORCE
	@mkdir -p $(MAN)
	env -u LVSKIT_CONFIG $(PYTHON) bin/$* --man > $@.tmp && mv $@.tmp $@

$(addprefix $(MAN)/,$(DOCPAGES)): FORCE
	@mkdir -p $(MAN)
	(cd lib && $(PYTHON) -m lvskit.manpage .. $(notdir $@)) > $@.tmp && mv $@.tmp $@

FORCE:

# install-man PAGES="...": those pages, made afresh, into MANDIR/manN
install-man: $(addprefix $(MAN)/,$(PAGES))
	for p in $(PAGES); do n=$${p##*.}; install -d -m 0755 $(D)$(MANDIR)/man$$n && \
	    install -m 0644 $(MAN)/$$p $(D)$(MANDIR)/man$$n/$$p || exit 1; done

install: $(VENDOR)
	install -d -m 0755 $(D)$(SBINDIR) $(D)$(LIBDIR)/bin $(D)$(LIBDIR)/lib/lvskit \
	    $(D)$(LIBDIR)/lib/vendor $(D)$(DATADIR) $(D)$(SYSTEMDUNITDIR) \
	    $(D)$(SYSCONFDIR)/cron.d $(D)$(LOCALSTATEDIR)/lib/lvskit $(D)$(RUNSTATEDIR)/lvskit
	install -d -m 0755 $(D)$(CONFDIR)
	install -d -m 0700 $(D)$(LOCALSTATEDIR)/cache/lvskit
	install -m 0755 $(addprefix bin/,$(SCRIPTS)) $(D)$(LIBDIR)/bin/
	@# the library is replaced whole: a module an older version had must not linger
	rm -rf $(D)$(LIBDIR)/lib/lvskit
	cd lib && find lvskit -name '*.py' -exec install -D -m 0644 {} $(D)$(LIBDIR)/lib/{} \;
	rm -rf $(D)$(LIBDIR)/lib/vendor/pyroute2 $(D)$(LIBDIR)/lib/vendor/pyroute2-*.dist-info
	cp -R lib/vendor/pyroute2 lib/vendor/pyroute2-$(PYROUTE2_VERSION).dist-info $(D)$(LIBDIR)/lib/vendor/
	find $(D)$(LIBDIR)/lib/vendor -name __pycache__ -prune -exec rm -rf {} +
	@# byte-compiled once here, as Debian's packages are: a cron run then never compiles
	$(PYTHON) -m compileall -q -d $(LIBDIR)/lib $(D)$(LIBDIR)/lib >/dev/null
	for s in $(SCRIPTS); do ln -sfr $(D)$(LIBDIR)/bin/$$s $(D)$(SBINDIR)/$$s; done
	$(SUBST) conf/cron.d/lvskit > $(D)$(DATADIR)/cron.d-lvskit
	$(SUBST) conf/inetd.conf > $(D)$(DATADIR)/inetd.conf
	$(SUBST) conf/sudoers.lvskit > $(D)$(DATADIR)/sudoers.lvskit
	$(SUBST) conf/nrpe.lvskit.cfg > $(D)$(DATADIR)/nrpe.lvskit.cfg
	install -m 0644 conf/lvskit.ini README.md $(D)$(DATADIR)/
	for u in $(UNITS); do $(SUBST) conf/systemd/$$u > $(D)$(SYSTEMDUNITDIR)/$$u; \
	    chmod 0644 $(D)$(SYSTEMDUNITDIR)/$$u; done
	$(MAKE) --no-print-directory install-man PAGES="$(addsuffix .8,$(SCRIPTS)) $(DOCPAGES)"
	@if [ -e $(D)$(CONFDIR)/lvskit.ini ]; then echo "kept $(D)$(CONFDIR)/lvskit.ini"; \
	else install -m 0644 conf/lvskit.ini $(D)$(CONFDIR)/lvskit.ini; fi
	@if [ -e $(D)$(SYSCONFDIR)/cron.d/lvskit ]; then echo "kept $(D)$(SYSCONFDIR)/cron.d/lvskit"; \
	else install -m 0644 $(D)$(DATADIR)/cron.d-lvskit $(D)$(SYSCONFDIR)/cron.d/lvskit; fi
	@if [ -e $(D)$(CONFDIR)/hb.key ]; then echo "kept $(D)$(CONFDIR)/hb.key"; \
	else (umask 077; od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > $(D)$(CONFDIR)/hb.key.tmp; \
	      echo >> $(D)$(CONFDIR)/hb.key.tmp; \
	      mv $(D)$(CONFDIR)/hb.key.tmp $(D)$(CONFDIR)/hb.key) && \
	    echo "made $(D)$(CONFDIR)/hb.key (copy it, mode 0600, to every director)"; fi

# Leaves what the admin owns: the config, the key, state, and a cron file that
# differs from the shipped one.  Units: admins override in /etc/systemd/system.
uninstall:
	for s in $(notdir $(wildcard $(D)$(LIBDIR)/bin/*)); do rm -f $(D)$(MANDIR)/man8/$$s.8; \
	    if [ -L $(D)$(SBINDIR)/$$s ]; then rm -f $(D)$(SBINDIR)/$$s; fi; done
	rm -f $(addprefix $(D)$(MANDIR)/man,5/lvskit.ini.5 7/lvskit.7)
	rm -f $(addprefix $(D)$(SYSTEMDUNITDIR)/,$(UNITS))
	@if [ -e $(D)$(SYSCONFDIR)/cron.d/lvskit ]; then \
	    if cmp -s $(D)$(SYSCONFDIR)/cron.d/lvskit $(D)$(DATADIR)/cron.d-lvskit; then \
	        rm -f $(D)$(SYSCONFDIR)/cron.d/lvskit; \
	    else echo "kept $(D)$(SYSCONFDIR)/cron.d/lvskit (edited)"; fi; fi
	rm -rf $(D)$(LIBDIR) $(D)$(DATADIR) $(D)$(LOCALSTATEDIR)/cache/lvskit
	@# directories of ours left empty go too; SBINDIR, cron.d and the like are the system's
	@for d in $(D)$(SYSTEMDUNITDIR) $(D)$(dir $(SYSTEMDUNITDIR)) $(D)$(RUNSTATEDIR)/lvskit \
	          $(D)$(LOCALSTATEDIR)/lib/lvskit $(D)$(CONFDIR); do \
	    if [ -d $$d ]; then rmdir --ignore-fail-on-non-empty $$d; fi; done
	@echo "kept $(D)$(CONFDIR)/ (config, key) and $(D)$(LOCALSTATEDIR)/lib/lvskit/ (state), when there"

# --- a real server --------------------------------------------------------------
# lvs-agent and lvs-realserver only, with the library modules they import
# (tests/install checks the list against the scripts' imports): nothing from
# pip, no vendored pyroute2.  lvs-agent needs the standard library alone;
# lvs-realserver changes addresses through Debian's python3-pyroute2, which
# realserver-deps installs with apt when installing onto this machine (no
# DESTDIR).  Units: lvs-agent.socket (Accept=yes: an lvs-agent per connection,
# as inetd does) with lvs-agent@.service, and lvs-realserver.service; none
# enabled.  `make uninstall` removes it as it removes the full install, which
# is a superset: on a director that is also a real server, use `make install`.
RS_SCRIPTS = lvs-agent lvs-realserver
RS_LIB     = $(addprefix lvskit/,$(addsuffix .py,__init__ agent agentproto capacity cli configcache \
               errors lock log manpage model realserver state vip)) \
             $(patsubst lib/%,%,$(wildcard lib/lvskit/config/*.py))
RS_UNITS   = lvs-agent.socket lvs-agent@.service lvs-realserver.service

realserver-deps:
	@dpkg -s python3-pyroute2 >/dev/null 2>&1 || { echo "apt-get install python3-pyroute2"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    python3-pyroute2 >/dev/null; }

install-realserver: $(if $(DESTDIR),,realserver-deps)
	@if [ -d $(D)$(LIBDIR)/lib/vendor ]; then \
	    echo "$(D)$(LIBDIR) holds the full install, which has the real server's scripts: update it with make install" >&2; \
	    exit 1; fi
	install -d -m 0755 $(D)$(SBINDIR) $(D)$(LIBDIR)/bin $(D)$(DATADIR) $(D)$(SYSTEMDUNITDIR) $(D)$(CONFDIR)
	install -m 0755 $(addprefix bin/,$(RS_SCRIPTS)) $(D)$(LIBDIR)/bin/
	rm -rf $(D)$(LIBDIR)/lib/lvskit
	cd lib && for f in $(RS_LIB); do install -D -m 0644 $$f $(D)$(LIBDIR)/lib/$$f; done
	$(PYTHON) -m compileall -q -d $(LIBDIR)/lib $(D)$(LIBDIR)/lib >/dev/null
	for s in $(RS_SCRIPTS); do ln -sfr $(D)$(LIBDIR)/bin/$$s $(D)$(SBINDIR)/$$s; done
	$(SUBST) conf/inetd.conf > $(D)$(DATADIR)/inetd.conf
	install -m 0644 conf/lvskit.ini README.md $(D)$(DATADIR)/
	for u in $(RS_UNITS); do $(SUBST) conf/systemd/$$u > $(D)$(SYSTEMDUNITDIR)/$$u; \
	    chmod 0644 $(D)$(SYSTEMDUNITDIR)/$$u; done
	$(MAKE) --no-print-directory install-man PAGES="$(addsuffix .8,$(RS_SCRIPTS)) $(DOCPAGES)"
	@if [ -e $(D)$(CONFDIR)/lvskit.ini ]; then echo "kept $(D)$(CONFDIR)/lvskit.ini"; \
	else install -m 0644 conf/lvskit.ini $(D)$(CONFDIR)/lvskit.ini; fi

# --- install tests ------------------------------------------------------------
# A Debian 12 minbase root with Debian's own python3 and packages, built once
# per machine (the stamp), from the mirror apt already uses.
BOOKWORM = build/bookworm
MIRROR  ?= $(shell sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)

bookworm-root: $(BOOKWORM)/.lvskit-stamp

$(BOOKWORM)/.lvskit-stamp:
	@command -v debootstrap >/dev/null || $(MAKE) apt-deps
	rm -rf $(BOOKWORM) $(BOOKWORM).tmp
	mkdir -p build
	debootstrap --variant=minbase --include=python3,python3-requests,python3-sh,iproute2 \
	    bookworm $(BOOKWORM).tmp $(or $(MIRROR),http://deb.debian.org/debian) > build/debootstrap.log 2>&1 \
	    || { tail -20 build/debootstrap.log; exit 1; }
	mv $(BOOKWORM).tmp $(BOOKWORM)
	touch $@

# Debian's python3-pyroute2 and what it needs, as .debs: the real server's
# install test puts them into a copy of that root (tests/install).
REALSERVER_DEBS = build/debs/.lvskit-stamp

realserver-debs: $(REALSERVER_DEBS)

$(REALSERVER_DEBS):
	rm -rf build/debs && mkdir -p build/debs
	cd build/debs && apt-get download -q python3-pyroute2 python3-psutil >/dev/null
	touch $@

# --- Debian packages ------------------------------------------------------------
# debian/rules runs `make install` and `make install-realserver` with Debian's
# paths.  Built from a copy of the checkout (build outputs and .git left out)
# in build/deb/, so the .debs land in build/deb/ and the checkout stays clean;
# the copy takes the pinned pyroute2 from lib/vendor, as the build must not
# need PyPI.  lintian's findings fail the build from "warning" up; the
# overrides in debian/*.lintian-overrides say why each one is right here.
VERSION  = $(shell sed -n 's/^__version__ = "\(.*\)".*/\1/p' lib/lvskit/__init__.py)
DEB_OUT  = build/deb
DEB_SRC  = $(DEB_OUT)/lvskit-$(VERSION)

deb: $(VENDOR)
	@for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || { $(MAKE) --no-print-directory apt-deps; break; }; done
	@v=$$(dpkg-parsechangelog -S Version); [ "$$v" = "$(VERSION)" ] || { \
	    echo "debian/changelog: version $$v, lib/lvskit/__init__.py: $(VERSION) (dch -v $(VERSION))" >&2; exit 1; }
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_SRC)
	tar -c --exclude-vcs --exclude=./build --exclude=./lab/build --exclude=./bench/results \
	    --exclude=./demo-out --exclude=__pycache__ --exclude=.pytest_cache . | tar -x -C $(DEB_SRC)
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b > ../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	lintian --fail-on error,warning --info $(DEB_OUT)/lvskit_$(VERSION)_*.changes

# What each package needs that a Debian root lacks, as .debs for dpkg -i in it
# (tests/install/test_deb.py): the host's apt resolves the package's declared
# dependencies against that root's dpkg status and downloads the rest into
# build/deb-deps/PACKAGE/.
DEB_ROOT ?= $(BOOKWORM)

# A failed download is retried once after apt-get update (stale lists).
DEB_DEPS_GET = apt-get -q -y -o Dir::State::status=$(abspath $(DEB_ROOT))/var/lib/dpkg/status \
	    -o Dir::Cache::archives=$(CURDIR)/build/deb-deps/$$p --no-install-recommends \
	    install --download-only ./$(DEB_OUT)/$${p}_$(VERSION)_all.deb > build/deb-deps/$$p.log 2>&1

deb-deps:
	@for p in lvskit lvskit-realserver; do rm -rf build/deb-deps/$$p; mkdir -p build/deb-deps/$$p/partial; \
	  $(DEB_DEPS_GET) || { apt-get update -qq && $(DEB_DEPS_GET); } || { cat build/deb-deps/$$p.log; exit 1; }; done

test-install: $(VENDOR)
	$(PYTEST) tests/install

clean:
	rm -rf lib/vendor lab/build bench/results build
