"""The emulated network: Mininet hosts, an AP bridge, a MEC host, links shaped live from traces.

Example (root)::

    from traces import load_trace
    from emulator.net import NetConfig, EmulatedNetwork

    cfg = NetConfig(n_devices=2, uplink=load_trace("up.csv"), one_way_delay_s=0.010)
    with EmulatedNetwork(cfg) as net:
        srv = net.popen(net.mec, ["iperf3", "-s", "-1"])
        net.start_shaping()
        ...                                  # device processes talk to net.mec.IP()
        rows = net.link_rows()               # -> link.csv

Modules: :mod:`~emulator.net.config` (NetConfig, names, rates), :mod:`~emulator.net.topology`
(build/teardown), :mod:`~emulator.net.shaper` (live replay, measurement), :mod:`~emulator.net.tc`
(HTB plumbing), :mod:`~emulator.net.delay` and :mod:`~emulator.net.tunrelay` (propagation
delay), :mod:`~emulator.net.cleanup` (state files, exact cleanup), :mod:`~emulator.net.cpu`
(CPU saturation watch), :mod:`~emulator.net.host` and :mod:`~emulator.net.start` (bounded
host and helper starts, with the likely cause of a failure). Errors: :class:`NetError`.
"""

from __future__ import annotations

from emulator.net.config import MIN_RATE_BPS, PAYLOAD_FRACTION, NetConfig, new_run_id
from emulator.net.delay import DelayMethod
from emulator.net.errors import NetError
from emulator.net.topology import MEC_IP, EmulatedNetwork, device_ip

__all__ = [
    "MEC_IP",
    "MIN_RATE_BPS",
    "PAYLOAD_FRACTION",
    "DelayMethod",
    "EmulatedNetwork",
    "NetConfig",
    "NetError",
    "device_ip",
    "new_run_id",
]
