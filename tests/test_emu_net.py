"""End-to-end tests of the emulated network (root: namespaces, veth, bridge, HTB, IFB, TUN).

Tolerances (stated, checked): a constant 20 Mbit/s link gives application goodput within 7%
over 4 s (target 5%; the margin is for a CPU shared with other jobs); ping one-way delay within 1 ms of a 10 ms target (median); a scheduled rate change
is applied in place (same class handle, same leaf qdisc) with median lag < 5 ms.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pyroute2 import IPRoute

from emulator.net import PAYLOAD_FRACTION, EmulatedNetwork, NetConfig, new_run_id
from emulator.net.cleanup import STATE_DIR
from emulator.net.measure import bulk_goodput, ping_one_way
from emulator.net.shaper import wire_Bps
from emulator.net.tc import burst_bytes
from traces import Trace

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root (network namespaces, tc); CI runs these as root"
    ),
]

ROOT = Path(__file__).resolve().parents[1]


def _const(bps: float, period: float = 10.0) -> Trace:
    return Trace(np.array([0.0]), np.array([bps]), period, name="const")


def _leftovers(rid: str) -> list[str]:
    out = [f"link {n.name}" for n in Path("/sys/class/net").iterdir() if n.name.startswith(rid)]
    if (STATE_DIR / f"{rid}.json").exists():
        out.append("state file")
    pat = re.compile(rf"^mininet:{rid}(d\d+|m)$")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                args = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(pat.match(a) for a in args) or any(
                rid in a and "tunrelay" in " ".join(args) for a in args
            ):
                out.append(f"process {d.name}")
    return out


def _links() -> set[str]:
    return {n.name for n in Path("/sys/class/net").iterdir()}


def test_topology_up_and_down_leaves_nothing() -> None:
    before = _links()
    rid = new_run_id()
    cfg = NetConfig(n_devices=2, uplink=_const(20e6), downlink=_const(20e6), run_id=rid)
    with EmulatedNetwork(cfg, verbose=False) as net:
        assert net.delay_method == "none"
        assert (STATE_DIR / f"{rid}.json").exists()
        assert {f"{rid}ap", f"{rid}iu", f"{rid}id"} <= _links()
        for d in net.devices:
            assert " 0% packet loss" in d.cmd(f"ping -c 1 -W 2 {net.mec.IP()}")
        assert net.devices[0].cmd("sysctl -n net.ipv4.tcp_slow_start_after_idle").strip() == "0"
        # the hosts' TCP as the simulator's fluid link assumes: cubic (not the machine's BBR; a
        # namespace could not pick it before the run allowed it), an initial window of 90 % of
        # the shaped queue in full frames, tail loss probes kept on a trace without outages
        iw = max(10, int(0.9 * net.queue_bytes) // 1514)
        for h in (*net.devices, net.mec):
            assert h.cmd("sysctl -n net.ipv4.tcp_congestion_control").strip() == "cubic"
            assert f"initcwnd {iw} initrwnd {iw}" in h.cmd("ip route show 10.0.0.0/24")
            assert h.cmd("sysctl -n net.ipv4.tcp_early_retrans").strip() != "0"
        sleeper = net.popen(net.mec, ["sleep", "60"])
    assert sleeper.poll() is not None
    assert _leftovers(rid) == []
    assert _links() - before == set()


def test_bursty_trace_tunes_tcp_and_keeps_a_small_bucket() -> None:
    """A trace open 0.1 s of every 0.5 s: no tail loss probes and a minimum RTO above the 0.4 s
    closed stretch plus a round trip and 0.2 s in every host; the device classes' HTB bucket is
    two frames (not 4 ms at the rate) in the setup and after the replay's rate changes."""
    tr = Trace(np.array([0.0, 0.1]), np.array([11.6e6, 0.0]), 0.5, name="burst")
    cfg = NetConfig(uplink=tr, downlink=tr, one_way_delay_s=0.01)
    with EmulatedNetwork(cfg, verbose=False) as net:
        for h in (*net.devices, net.mec):
            assert h.cmd("sysctl -n net.ipv4.tcp_early_retrans").strip() == "0"
            rto_us = int(h.cmd("sysctl -n net.ipv4.tcp_rto_min_us").strip())
            assert rto_us == pytest.approx((0.4 + 0.02 + 0.2) * 1e6, abs=1000)
        net.start_shaping()
        time.sleep(0.7)  # past a close and a reopening of both directions
        for ifb in (net.ifb_up, net.ifb_down):
            out = subprocess.run(["tc", "class", "show", "dev", ifb], capture_output=True,
                                 text=True).stdout
            m = re.search(r"class htb 1:10 .* burst (\d+)b cburst (\d+)b", out)
            assert m is not None, out
            # 2 x 1514 B (tc prints the bucket as rounded back from ticks); 4 ms would be 6 KB
            assert all(abs(int(x) - 2 * 1514) <= 8 for x in m.groups()), out
        assert not net.shaper_stats()["errors"]


def test_outage_trace_keeps_a_one_ms_bucket() -> None:
    """A steady trace with one 30 s outage: gated (1 ms bucket, no tail loss probes) but its
    gate opens for long stretches, so no two-frame floor: 1 ms at 10 Mbit/s on the wire."""
    tr = Trace(np.array([0.0, 3.0, 33.0]), np.array([10e6, 0.0, 10e6]), 60.0, name="outage")
    cfg = NetConfig(uplink=tr, downlink=tr, one_way_delay_s=0.01)
    with EmulatedNetwork(cfg, verbose=False) as net:
        want = burst_bytes(wire_Bps(10e6, cfg.compensate_overhead), 0.001)
        assert want < 2 * 1514
        for ifb in (net.ifb_up, net.ifb_down):
            out = subprocess.run(["tc", "class", "show", "dev", ifb], capture_output=True,
                                 text=True).stdout
            m = re.search(r"class htb 1:10 .* burst (\d+)b cburst (\d+)b", out)
            assert m is not None, out
            assert all(abs(int(x) - want) <= 8 for x in m.groups()), (want, out)


def _htb_rate(ifname: str, classid: int) -> tuple[int, int]:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for msg in ipr.get_classes(idx):
            if msg["handle"] == classid:
                parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                return int(msg["handle"]), int(parms["rate"])
    raise AssertionError(f"class {classid:x} not found on {ifname}")


def _leaf(ifname: str) -> str:
    out = subprocess.run(["tc", "qdisc", "show", "dev", ifname], capture_output=True, text=True)
    return next(line for line in out.stdout.splitlines() if line.startswith("qdisc tbf 10:"))


def test_rate_change_applied_in_place() -> None:
    tr = Trace(np.array([0.0, 0.4]), np.array([10e6, 40e6]), 100.0, name="step")
    cfg = NetConfig(uplink=tr, resample_s=None)
    with EmulatedNetwork(cfg, verbose=False) as net:
        h0, r0 = _htb_rate(net.ifb_up, 0x10010)
        leaf0 = _leaf(net.ifb_up)
        assert r0 == pytest.approx(10e6 / PAYLOAD_FRACTION / 8, rel=1e-3)
        net.start_shaping()
        time.sleep(0.8)
        h1, r1 = _htb_rate(net.ifb_up, 0x10010)
        assert h1 == h0 and _leaf(net.ifb_up) == leaf0  # changed in place, leaf kept
        assert r1 == pytest.approx(40e6 / PAYLOAD_FRACTION / 8, rel=1e-3)
        assert net.capacity_at(0, 0.5) == 40e6
        stats = net.shaper_stats()
    assert stats["changes"] >= 1 and not stats["errors"]
    assert stats["lag_ms"]["median"] < 5.0


def test_bulk_goodput_matches_constant_rate() -> None:
    with EmulatedNetwork(NetConfig(uplink=_const(20e6)), verbose=False) as net:
        rows = bulk_goodput(net, 4.0)
        link = net.link_rows()
    goodput = statistics.mean(r["goodput_mbps"] for r in rows)
    # 5% is the target (met on an idle machine); 7% keeps this test stable on a shared 2-core
    # machine where other users' load costs a few percent in some windows
    assert goodput == pytest.approx(20.0, rel=0.07), rows
    up = [r for r in link if r["direction"] == "up"]
    assert up and all(r["capacity_mbps"] == pytest.approx(20.0) for r in up)


def test_delay_measured_by_ping() -> None:
    cfg = NetConfig(uplink=_const(50e6), one_way_delay_s=0.010)
    with EmulatedNetwork(cfg, verbose=False) as net:
        assert net.delay_method in ("netem", "tun-relay")
        one_way = ping_one_way(net, count=30, interval_s=0.02)
    assert abs(statistics.median(one_way) - 10.0) < 1.0, one_way


_CHILD = """
import sys, time, numpy as np
from traces import Trace
from emulator.net import EmulatedNetwork, NetConfig
tr = Trace(np.array([0.0]), np.array([10e6]), 10.0)
with EmulatedNetwork(NetConfig(n_devices=2, uplink=tr, one_way_delay_s=0.005,
                               run_id=sys.argv[1]), verbose=False) as net:
    net.popen(net.mec, ["sleep", "60"])
    print("up", flush=True)
    time.sleep(60)
"""


def _start_child(rid: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, rid], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    return p


def test_sigterm_tears_down() -> None:
    rid = new_run_id()
    p = _start_child(rid)
    assert _leftovers(rid)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    assert _leftovers(rid) == []


def test_cleanup_after_kill9() -> None:
    rid = new_run_id()
    p = _start_child(rid)
    p.kill()
    p.wait()
    time.sleep(0.3)
    assert _leftovers(rid), "kill -9 should leave the run behind"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.doctor", "--cleanup", rid],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    time.sleep(0.3)
    assert _leftovers(rid) == []


def test_shared_cell_splits_capacity_and_lends_it() -> None:
    bulk = str(ROOT / "emulator" / "net" / "bulk.py")
    cfg = NetConfig(
        n_devices=2,
        uplink=_const(20e6),
        downlink=_const(20e6),
        shared_cell=True,
        one_way_delay_s=0.002,
    )
    with EmulatedNetwork(cfg, verbose=False) as net:
        t0 = time.monotonic() + 2.0
        recvs = []
        for i, port in enumerate((5101, 5102)):
            r = net.popen(
                net.mec,
                [
                    sys.executable,
                    "-I",
                    bulk,
                    "recv",
                    "--port",
                    str(port),
                    "--t0",
                    repr(t0),
                    "--seconds",
                    "3",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert r.stdout is not None and r.stdout.readline().strip() == "listening"
            recvs.append(r)
            secs = "7" if i == 0 else "3"  # device 1 stops near t0 + 1: device 0 borrows
            net.popen(
                net.devices[i],
                [
                    sys.executable,
                    "-I",
                    bulk,
                    "send",
                    "--host",
                    net.mec.IP(),
                    "--port",
                    str(port),
                    "--seconds",
                    secs,
                ],
                stdout=subprocess.DEVNULL,
            )
        net.start_shaping(t0)
        counts = [json.loads(r.communicate(timeout=30)[0].splitlines()[-1])["bytes"] for r in recvs]
    mbps = [[b * 8 / 1e6 for b in c] for c in counts]
    # window 0: both active -> ~10 each; window 2: device 1 idle -> device 0 gets ~20
    assert mbps[0][0] + mbps[1][0] == pytest.approx(20.0, rel=0.08), mbps
    assert mbps[0][0] == pytest.approx(10.0, rel=0.25), mbps
    assert mbps[0][2] == pytest.approx(20.0, rel=0.08), mbps


def test_the_raw_class_counter_reads_what_pyroute2_reads(tmp_path: Path) -> None:
    """:class:`emulator.net.tc.ClassCounter` (the shaper's sampler: one dump, only the byte
    counters parsed) against pyroute2's full decode of the same classes, after real traffic
    through an HTB on a veth between two namespaces."""
    import uuid

    a, b = f"cc{uuid.uuid4().hex[:6]}", f"cd{uuid.uuid4().hex[:6]}"
    v0, v1 = f"v{a}", f"v{b}"

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    sh("ip", "netns", "add", a)
    try:
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", v0, "type", "veth", "peer", "name", v1, "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", v0)
        sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", v1)
        sh("ip", "-n", a, "link", "set", v0, "up")
        sh("ip", "-n", b, "link", "set", v1, "up")
        for cmd in ("qdisc add dev {} root handle 1: htb default 10",
                    "class add dev {} parent 1: classid 1:1 htb rate 20mbit",
                    "class add dev {} parent 1:1 classid 1:10 htb rate 10mbit",
                    "class add dev {} parent 1:1 classid 1:20 htb rate 10mbit"):
            sh("ip", "netns", "exec", a, "tc", *cmd.format(v0).split())
        code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for _ in range(200): s.sendto(b'x' * 1000, ('10.77.0.2', 9))\n"
                "import socket as S, time; time.sleep(0.3)\n"
                "from pyroute2 import IPRoute\n"
                "from emulator.net.tc import ClassCounter, class_bytes\n"
                f"i = S.if_nametoindex('{v0}')\n"
                "with IPRoute() as ipr: full = class_bytes(ipr, i)\n"
                "with ClassCounter() as c: raw = c.read(i)\n"
                "import json; print(json.dumps([full, raw]))\n")
        out = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert out.returncode == 0, out.stderr
        full, raw = json.loads(out.stdout)
        assert raw == full
        assert raw[str(0x10010)] >= 200 * 1000  # the default class carried the 200 datagrams
        assert set(raw) == {str(h) for h in (0x10001, 0x10010, 0x10020)}
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)
