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
            lab.serve(kama)
            assert wait(lambda: weight_of_kama() == ("Masq", 1), RISE * INTERVAL + INTERVAL + 5)
            assert lab.connect(80, 20) == {hades: 10, kama: 10}
        finally:
            loop.send_signal(signal.SIGTERM)
            out, err = loop.communicate(timeout=20)
        assert loop.returncode == 0, err
        assert out == ""
