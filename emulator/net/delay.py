"""Propagation delay: netem where the kernel has it, else the userspace TAP relay.

:func:`netem_available` asks the kernel by trying (``tc qdisc add ... netem`` on an interface the
run owns, then deletes it). With netem, the run puts ``netem delay D`` on the AP's port toward
the MEC (uplink) and on the MEC's interface (downlink). Without it, the AP<->MEC wire is replaced
by :mod:`emulator.net.tunrelay`: two TAP devices (one on the AP bridge, one in the MEC's
namespace) joined by a process that releases each frame ``D`` after it arrived. The run says
which it used (:attr:`EmulatedNetwork.delay_method` and one printed line).
"""

from __future__ import annotations

import subprocess
from typing import Literal

__all__ = ["DelayMethod", "delay_line", "netem_available"]

DelayMethod = Literal["netem", "tun-relay", "none"]


def netem_available(ifname: str) -> bool:
    """Whether ``tc qdisc add dev IFNAME root netem`` works (the qdisc is removed again).

    ``ifname`` must be an interface this run owns and has not configured yet.
    """
    res = subprocess.run(
        ["tc", "qdisc", "add", "dev", ifname, "root", "netem", "delay", "1ms"],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        return False
    subprocess.run(["tc", "qdisc", "del", "dev", ifname, "root"], capture_output=True, check=False)
    return True


def delay_line(method: DelayMethod, one_way_s: float) -> str:
    """The line a run prints to say how delay is made."""
    if method == "netem":
        return f"delay: netem ({one_way_s * 1e3:g} ms each way)"
    if method == "tun-relay":
        return f"delay: userspace TUN relay (kernel lacks netem) ({one_way_s * 1e3:g} ms each way)"
    return "delay: none"
