"""[ipvs]: the config's kernel settings, their plan against the kernel's values, and applying them."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from lvskit import config, kernelsettings, sync  # noqa: E402
from lvskit.config.kernel import Ipvs  # noqa: E402

from fakekernel import FakeKernel  # noqa: E402


class Kernel(FakeKernel):
    """The fake table with the connection timeouts of ipvsadm --set."""

    def __init__(self, tcp=900, tcpfin=120, udp=300):
        super().__init__()
        self.now = {"tcp": tcp, "tcpfin": tcpfin, "udp": udp}
        self.sets = []

    def timeouts(self):
        return dict(self.now)

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        self.sets.append((tcp, tcpfin, udp))
        for name, value in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
            if value:
                self.now[name] = value


@pytest.fixture
def sysctls(tmp_path, monkeypatch):
    for name, value in (("expire_nodest_conn", 0), ("expire_quiescent_template", 0), ("sloppy_tcp", 0),
                        ("schedule_icmp", 0)):
        (tmp_path / name).write_text(f"{value}\n")
    monkeypatch.setattr(kernelsettings, "SYSCTL_DIR", str(tmp_path))
    return tmp_path


def test_defaults_without_a_section():
    assert config.parse("[global]\n").ipvs == Ipvs(1, 1, 900, 10, 300)


def test_keys_and_keep():
    got = config.parse("[ipvs]\nexpire_nodest_conn = no\nexpire_quiescent_template = keep\n"
                       "tcp_timeout = keep\ntcpfin_timeout = 30\nudp_timeout = 60\n").ipvs
    assert got == Ipvs(0, None, None, 30, 60)


@pytest.mark.parametrize("text, message", [
    ("expire_nodest_conn = 1", "[ipvs] expire_nodest_conn: '1' is not one of yes, no, keep"),
    ("tcpfin_timeout = 2m", "[ipvs] tcpfin_timeout: '2m' is not a number of seconds, nor keep"),
    ("udp_timeout = 0", "[ipvs] udp_timeout: 0 out of range 1..2678400"),
    ("tcp_timeout = 99999999", "[ipvs] tcp_timeout: 99999999 out of range 1..2678400"),
    ("conn_reuse_mode = 1", "[ipvs] conn_reuse_mode: unknown key"),
])
def test_bad_values_name_file_section_and_key(text, message):
    with pytest.raises(config.ConfigError) as e:
        config.parse(f"[global]\n[ipvs]\n{text}\n", "/etc/lvskit/lvskit.ini")
    assert str(e.value) == f"/etc/lvskit/lvskit.ini:3: {message}"
    assert "\n" not in str(e.value)


def test_plan_changes_only_what_differs_and_never_a_kept_key():
    current = {"expire_nodest_conn": 0, "expire_quiescent_template": 1, "tcp_timeout": 900,
               "tcpfin_timeout": 120, "udp_timeout": 60}
    changes = kernelsettings.plan(Ipvs(1, 1, 900, None, 300), current)
    assert [c.command() for c in changes] == ["sysctl -w net.ipv4.vs.expire_nodest_conn=1",
                                             "ipvsadm --set 0 0 300"]
    assert [str(c) for c in changes] == ["[ipvs] expire_nodest_conn: 0 -> 1", "[ipvs] udp_timeout: 60 -> 300"]
    assert kernelsettings.plan(Ipvs(None, None, None, None, None), current) == []


def test_a_setting_the_kernel_lacks_is_left_alone():
    current = {"expire_nodest_conn": None, "tcp_timeout": 900}
    assert kernelsettings.plan(Ipvs(), current) == []


def test_sync_applies_once_then_is_idempotent(sysctls):
    kernel = Kernel(tcpfin=30)
    made = kernelsettings.sync(Ipvs(), kernel)
    assert [c.name for c in made] == ["expire_nodest_conn", "expire_quiescent_template", "tcpfin_timeout"]
    assert (sysctls / "expire_nodest_conn").read_text() == "1\n"
    assert kernel.sets == [(0, 10, 0)]
    assert kernelsettings.sync(Ipvs(), kernel) == []
    assert kernel.sets == [(0, 10, 0)]


def test_dry_run_changes_nothing(sysctls):
    kernel = Kernel(udp=10)
    planned = kernelsettings.sync(Ipvs(), kernel, dry_run=True)
    assert len(planned) == 4 and kernel.sets == []      # two switches, tcpfin and udp
    assert (sysctls / "expire_nodest_conn").read_text() == "0\n"


def test_reconcile_sets_them_on_whole_runs_only(sysctls, tmp_path):
    cfg = config.parse(f"[global]\nstate_dir = {tmp_path}/s\nrun_dir = {tmp_path}/r\n")
    kernel = Kernel(tcp=7200)
    out = sync.reconcile(cfg, kernel, select=lambda op: True)
    assert out.settings == [] and kernel.sets == []
    out = sync.reconcile(cfg, kernel, dry_run=True)
    assert [c.command() for c in out.settings][-2:] == ["ipvsadm --set 900 0 0", "ipvsadm --set 0 10 0"]
    assert kernel.sets == []
    out = sync.reconcile(cfg, kernel)
    assert len(out.settings) == 4 and kernel.sets == [(900, 10, 0)]
    assert sync.reconcile(cfg, kernel).settings == []


def test_a_setting_the_kernel_refuses_is_one_error_and_the_table_goes_on(sysctls, tmp_path):
    from lvskit.errors import Fatal
    cfg = config.parse(f"[global]\nstate_dir = {tmp_path}/s\nrun_dir = {tmp_path}/r\n"
                       "[service web]\naddress = 10.0.0.1\nport = 80\nreal.10.0.1.1 =\n")
    kernel = Kernel(udp=10)

    def refuse(**timeouts):
        raise Fatal("setting the IPVS timeouts: Operation not permitted")
    kernel.set_timeouts = refuse
    out = sync.reconcile(cfg, kernel)
    assert out.settings_error == "[ipvs] settings: setting the IPVS timeouts: Operation not permitted"
    assert len(kernel.table) == 1       # the table was still made


# --- a real server back from down: deleted until the kernel has expired its old entries ---------
CONN_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
GHOST = "TCP 0AC8010A 9C40 0AC80164 0050 0AC8010B 0050 SYN_RECV         59\n"     # -> 10.200.1.11:80


def _returning(tmp_path):
    cfg = config.parse(f"[global]\nrun_dir = {tmp_path}/run\n"
                       "[service www]\naddress = 10.200.1.100\nport = 80\nreal.10.200.1.11 = weight=2\n")
    vs = cfg.services[0]
    return cfg, vs, [(vs.wanted(), vs.reals[0].dest)]


def test_fresh_start_deletes_and_waits_for_the_entries(sysctls, tmp_path, monkeypatch):
    (sysctls / "expire_nodest_conn").write_text("1\n")
    cfg, vs, returning = _returning(tmp_path)
    table = tmp_path / "ip_vs_conn"
    table.write_text(CONN_HEADER + GHOST)
    kernel = FakeKernel([vs.wanted()])
    sleeps = []

    def sleep(s):           # the kernel's expiry work, done while we wait
        sleeps.append(s)
        table.write_text(CONN_HEADER)
    monkeypatch.setattr(sync.time, "sleep", sleep)
    ops = sync.fresh_start(cfg, kernel, returning, conn_table=str(table))
    assert [op.ipvsadm() for op in ops] == ["ipvsadm -d -t 10.200.1.100:80 -r 10.200.1.11:80"]
    assert kernel.table[vs.key].dests == {} and len(sleeps) == 1


def test_fresh_start_does_nothing_when_the_kernel_would_keep_the_entries(sysctls, tmp_path):
    cfg, vs, returning = _returning(tmp_path)      # expire_nodest_conn = 0: deleting would not expire them
    kernel = FakeKernel([vs.wanted()])
    assert sync.fresh_start(cfg, kernel, returning, conn_table=str(tmp_path / "none")) == []
    assert kernel.writes == []


def test_fresh_start_of_a_server_already_out_of_the_table(sysctls, tmp_path):
    (sysctls / "expire_nodest_conn").write_text("1\n")
    cfg, vs, returning = _returning(tmp_path)
    kernel = FakeKernel([vs.wanted().replace(dests={})])       # on_failure = remove took it out
    assert sync.fresh_start(cfg, kernel, returning, conn_table=str(tmp_path / "none")) == []


def test_lvs_status_shows_them(sysctls, tmp_path):
    from lvskit import status
    cfg = config.parse(f"[global]\nstate_dir = {tmp_path}/s\nrun_dir = {tmp_path}/r\n"
                       "[ipvs]\nudp_timeout = keep\n")
    st, code = status.gather(cfg, kernel=Kernel(tcpfin=30, udp=10))
    assert code == 0
    rows = {r["key"]: (r["wanted"], r["kernel"]) for r in st["settings"]}
    assert rows == {"expire_nodest_conn": (1, 0), "expire_quiescent_template": (1, 0),
                    "tcp_timeout": (900, 900), "tcpfin_timeout": (10, 30), "udp_timeout": (None, 10),
                    "sloppy_tcp": (None, 0), "schedule_icmp": (None, 0)}
    assert "kernel: expire_nodest_conn 0 (want 1), expire_quiescent_template 0 (want 1), sloppy_tcp 0, " \
           "schedule_icmp 0, tcp_timeout 900, " \
           "tcpfin_timeout 30 (want 10), udp_timeout 10" in status.text(st)


def test_bgp_mode_turns_sloppy_tcp_and_schedule_icmp_on(sysctls):
    cfg = config.parse("[announce]\nmode = bgp\n[service w]\naddress = 10.0.0.1\nport = 80\n"
                       "scheduler = mh\nreal.10.0.0.2 = weight=1\n")
    kernel = Kernel(tcpfin=10)
    changes = kernelsettings.sync(cfg.ipvs, kernel, dry_run=True)
    assert [c.command() for c in changes] == ["sysctl -w net.ipv4.vs.expire_nodest_conn=1",
                                             "sysctl -w net.ipv4.vs.expire_quiescent_template=1",
                                             "sysctl -w net.ipv4.vs.sloppy_tcp=1",
                                             "sysctl -w net.ipv4.vs.schedule_icmp=1"]
    assert (sysctls / "sloppy_tcp").read_text() == "0\n"        # a dry run
    kernelsettings.sync(cfg.ipvs, kernel)
    assert [(sysctls / name).read_text() for name in ("sloppy_tcp", "schedule_icmp")] == ["1\n", "1\n"]
    assert kernelsettings.sync(cfg.ipvs, kernel) == []
    # active-passive (no [announce]) leaves them as the kernel has them
    assert kernelsettings.plan(config.parse("[global]\n").ipvs, {"sloppy_tcp": 0, "schedule_icmp": 1}) == []
