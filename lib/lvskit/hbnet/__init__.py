"""Heartbeats on the wire: hb-send's loop and hb-listen's, one socket per path.

  daemon    which [node] this machine is; real-time scheduling; rate-limited log lines
  sockets   the per-path sockets: senders, listeners (kernel source filter, multicast joins)
  sender    hb-send's loop: one signed datagram per path per interval
  listener  hb-listen's loop: hears the peers, tracks them and their paths, decides
  worker    the `takeover --serve` subprocess that acts for hb-listen
  floors    hb-listen's replay floors, kept in STATE_DIR across its restarts

The datagram itself is lvskit.heartbeat; the election, lvskit.roles; this
node's role file, lvskit.rolefile.
"""
from .daemon import realtime, which_node
from .listener import Listener
from .sender import Sender, send_loop
from .sockets import listen_sockets
from .worker import Worker

__all__ = ["which_node", "realtime", "Sender", "send_loop", "listen_sockets", "Worker", "Listener"]
