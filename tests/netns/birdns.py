"""A BIRD 2 of the test's own, in a network namespace of its own: config, control socket and
log in a test directory, never the host's BIRD (/run/bird, /etc/bird) nor its routes.

    with Bird(tmp_path, include="/tmp/x/lvskit-vips.conf") as b:
        b.start()
        b.birdc("show", "protocols")

Used by tests/netns/test_bird.py (on the host) and tests/lab/test_announce.py (in the guest).
Stdlib only.
"""
import os
import shutil
import signal
import subprocess
import time

CONF = """\
router id {router_id};
log "{log}" all;
protocol device {{}}
include "{include}";
{extra}"""


class Bird:
    def lvskit_config(self, tmp, services):
        """An lvskit.ini in [announce] mode = bgp through this BIRD, its state in tmp, then services."""
        return (f"[global]\nstate_dir = {tmp}/state\nrun_dir = {tmp}/run\n[announce]\nmode = bgp\n"
                f"include = {self.include}\nbirdc = {self.birdc_command()}\n{services}")

    def __init__(self, workdir, include, netns=None, router_id="192.0.2.254", extra=""):
        """extra: bird.conf's text after the include (BGP sessions, BFD: tests/netns/test_status_bgp.py)."""
        self.dir, self.include = str(workdir), str(include)
        self.conf = os.path.join(self.dir, "bird.conf")
        self.ctl = os.path.join(self.dir, "bird.ctl")
        self.log = os.path.join(self.dir, "bird.log")
        self.proc = None
        self.own_ns = netns is None
        self.ns = netns or f"lvskit-bird-{os.getpid()}"
        with open(self.conf, "w") as f:
            f.write(CONF.format(log=self.log, include=self.include, router_id=router_id, extra=extra))
        if self.own_ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            subprocess.run(["ip", "netns", "add", self.ns], check=True)
            subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"], check=True)

    def birdc_command(self):
        """[announce] birdc for this BIRD: the client on its private socket."""
        return f"{shutil.which('birdc')} -s {self.ctl}"

    def parse(self):
        """bird -p: (exit code, its message) of parsing the config and the file it includes."""
        r = subprocess.run(["bird", "-p", "-c", self.conf], capture_output=True, text=True, timeout=30)
        return r.returncode, (r.stdout + r.stderr).strip()

    def start(self):
        """bird -f in the namespace; back when its control socket answers."""
        with open(os.path.join(self.dir, "bird.stderr"), "w") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "bird", "-f", "-c", self.conf,
                                          "-s", self.ctl, "-P", os.path.join(self.dir, "bird.pid")],
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird exited {self.proc.returncode}: "
                                   f"{open(os.path.join(self.dir, 'bird.stderr')).read()[-1000:]}")
            if os.path.exists(self.ctl) and self.birdc_run("show", "status").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("bird's control socket never answered")
            time.sleep(0.02)

    def birdc_run(self, *args):
        return subprocess.run(["birdc", "-s", self.ctl] + list(args), capture_output=True, text=True,
                              timeout=30)

    def birdc(self, *args):
        """birdc's answer, without its 'BIRD 2.0.12 ready.' line; an error raises."""
        r = self.birdc_run(*args)
        if r.returncode:
            raise RuntimeError(f"birdc {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
        return "\n".join(l for l in r.stdout.splitlines() if not l.startswith("BIRD "))

    def states(self):
        """{protocol: state} of `birdc show protocols` (up, down, start)."""
        out = {}
        for line in self.birdc("show", "protocols").splitlines()[1:]:
            words = line.split()
            if len(words) >= 4:
                out[words[0]] = words[3]
        return out

    def routes(self, protocol):
        """The prefixes in BIRD's tables from protocol (`show route protocol NAME`)."""
        return sorted(line.split()[0] for line in self.birdc("show", "route", "protocol", protocol).splitlines()
                      if line[:1].isalnum() and not line.startswith("Table"))

    def reconfigurations(self):
        """How often BIRD read its config again (its log's 'Reconfiguring' lines)."""
        try:
            with open(self.log) as f:
                return sum(1 for line in f if "Reconfiguring" in line)
        except FileNotFoundError:
            return 0

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.own_ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
