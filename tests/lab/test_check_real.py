"""check-real against the real kernel and real traffic: a dead service leaves, a healed one returns."""
import json
import os
import signal
import subprocess
import time

from conftest import PY, ROOT, ipvsadm_ln

INTERVAL, FALL, RISE = 1.0, 2, 2


def config(lab, tmp_path):
    reals = "\n".join(f"real.{lab.addr[n]} = weight=1" for n in lab.reals)
    path = tmp_path / "lvskit.ini"
    path.write_text(f"""[global]
state_dir = {tmp_path}/state
run_dir = {tmp_path}/run
[service web]
address = {lab.vip}
port = 80
scheduler = rr
forward = nat
check = tcp
check_interval = {INTERVAL}
check_timeout = 0.5
check_fall = {FALL}
check_rise = {RISE}
{reals}
""")
    return str(path)


def test_killed_service_leaves_the_table_and_returns(tmp_path):
    from topo import Lab, unique_prefix
    with Lab(prefix=unique_prefix("lc"), mode="nat") as lab:
        lab.serve()
        hades, kama = lab.reals
        svc, kama_dest = f"TCP {lab.vip}:80", f"{lab.addr[kama]}:80"
        loop = lab.popen("director", [PY, os.path.join(ROOT, "bin", "check-real"), "-c", config(lab, tmp_path),
                                      "--every", str(INTERVAL)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})

        cfg = str(tmp_path / "lvskit.ini")

        def checks():
            """What Nagios gets, with the loop running (its lock held): {script: (exit, line)}."""
            out = {}
            for name, args in (("check-real --check", ["check-real", "--check"]),
                               ("check-real", ["check-real"]),     # busy: reports the loop's state
                               ("lvs-status --check", ["lvs-status", "--check"]),
                               ("ipvs-sync --check", ["ipvs-sync", "--check"])):
                r = lab.run("director", [PY, os.path.join(ROOT, "bin", args[0]), *args[1:], "-c", cfg],
                            stderr=subprocess.STDOUT, stdout=subprocess.PIPE,
                            env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
                out[name] = (r.returncode, r.stdout.splitlines()[0] if r.stdout else "")
            return out

        def weight_of_kama():
            return ipvsadm_ln(lambda argv: lab.run("director", argv)).get(svc, (0, 0, {}))[2].get(kama_dest)

        def wait(cond, timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if cond():
                    return True
                time.sleep(0.05)
            return False
        try:
            assert wait(lambda: weight_of_kama() == ("Masq", 1), 60), loop.stderr.read() if loop.poll() else ""
            assert lab.connect(80, 20) == {hades: 10, kama: 10}
            # ipvs-sync sets the [ipvs] kernel settings (check-real does not), as cron would
            r = lab.run("director", [PY, os.path.join(ROOT, "bin", "ipvs-sync"), "-c", cfg],
                        env={**os.environ, "LVSKIT_NO_SYSLOG": "1"})
            assert r.returncode == 0, r.stderr
            lab.kill_server(kama)
            killed = time.monotonic()
            assert wait(lambda: weight_of_kama() == ("Masq", 0), 30)
            took = time.monotonic() - killed
            # fall x interval, plus one round and the guest's slow ipvsadm polling
            assert took <= FALL * INTERVAL + INTERVAL + 1.0, took
            print(f"kama out of the table {took:.2f} s after its service died")
            got = lab.connect(80, 30)
            assert got == {hades: 30}, got              # no client connection fails any more
            health = json.load(open(tmp_path / "state" / "health.json"))
            assert health["services"]["web"][kama_dest]["state"] == "down"
            # one server down, the other serving: every check says WARNING (the kernel follows the
            # health, so ipvs-sync is in line); none takes the loop's lock or fails on it
            got = checks()
            print("\n".join(f"{k}: exit {c}: {line}" for k, (c, line) in got.items()))
            assert [c for c, _ in got.values()] == [1, 1, 1, 0], got
            assert got["check-real --check"][1].startswith("CHECK_REAL WARNING - 1/2 down; web "), got
            assert "another check-real runs: its state reported" in got["check-real"][1], got
            assert got["lvs-status --check"][1].startswith("LVS_STATUS WARNING - 1/2 real servers up"), got
            lab.serve(kama)
            assert wait(lambda: weight_of_kama() == ("Masq", 1), RISE * INTERVAL + INTERVAL + 5)
            assert lab.connect(80, 20) == {hades: 10, kama: 10}
            got = checks()
            assert [c for c, _ in got.values()] == [0, 0, 0, 0], got
        finally:
            loop.send_signal(signal.SIGTERM)
            out, err = loop.communicate(timeout=20)
        assert loop.returncode == 0, err
        assert out == ""
