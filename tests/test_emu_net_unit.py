"""Unit tests of emulator.net that need neither root nor namespaces."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import numpy as np
import pytest

import emulator.net as en
from emulator.net import PAYLOAD_FRACTION, NetConfig, NetError
from emulator.net import cleanup as cl
from emulator.net.measure import fidelity
from emulator.net.shaper import _changes, lag_summary, wire_Bps
from emulator.net.tc import burst_bytes
from traces import Trace


def _trace(rates: list[float], dt: float = 1.0) -> Trace:
    return Trace(np.arange(len(rates)) * dt, np.array(rates, dtype=float), len(rates) * dt)


def test_public_api_is_deliberate() -> None:
    assert sorted(en.__all__) == sorted(
        [
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
    )


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"n_devices": 0}, "n_devices must be in 1..200"),
        ({"uplink": []}, "uplink needs at least one Trace"),
        ({"n_devices": 3, "uplink": [_trace([1e6])] * 2}, "one per device (3), got 2"),
        ({"shared_cell": True, "n_devices": 2, "uplink": [_trace([1e6])] * 2}, "shared cell"),
        ({"one_way_delay_s": -1.0}, "one_way_delay_s must be in [0, 5]"),
        ({"run_id": "Bad-Id"}, "run_id must match"),
        ({"queue_bytes": 100}, "queue_bytes must be >= 3028"),
    ],
)
def test_config_errors_name_the_field(kw: dict[str, object], msg: str) -> None:
    base: dict[str, object] = {"uplink": _trace([1e6])}
    base.update(kw)
    with pytest.raises(NetError, match=re.escape(msg)):
        NetConfig(**base).validate()  # type: ignore[arg-type]


def test_run_ids_fit_interface_names() -> None:
    rid = en.new_run_id()
    assert re.match(r"^[a-z][a-z0-9]{0,5}$", rid)
    assert len(f"{'a' * 6}ap-eth201") <= 15


def test_rates_compensate_header_overhead() -> None:
    assert wire_Bps(10e6, True) == int(10e6 / PAYLOAD_FRACTION / 8)
    assert wire_Bps(10e6, False) == int(10e6 / 8)
    assert wire_Bps(0.0, False) == int(en.MIN_RATE_BPS / 8)  # zero capacity -> floor
    assert burst_bytes(125_000, 0.004) == 500  # no floor of frames: 4 ms at 1 Mbit/s
    assert burst_bytes(25_000_000, 0.004) == 100_000


def test_changes_skip_equal_rates_and_loop() -> None:
    tr = _trace([1e6, 1e6, 2e6, 3e6])
    got = list(itertools.islice(_changes(tr, 0.0), 4))
    assert got == [(2.0, 2e6), (3.0, 3e6), (4.0, 1e6), (6.0, 2e6)]


def test_lag_summary() -> None:
    s = lag_summary([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["max"] == 100.0
    assert np.isnan(lag_summary([])["median"])


def test_fidelity_counts_windows_with_capacity() -> None:
    rows = [
        {"capacity_mbps": 10.0, "goodput_mbps": 9.6},
        {"capacity_mbps": 10.0, "goodput_mbps": 9.4},
        {"capacity_mbps": 0.0, "goodput_mbps": 0.0},
    ]
    assert fidelity(rows, 0.05) == (1, 2)


def test_state_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cl, "STATE_DIR", tmp_path)
    st = cl.RunState.new("zz1")
    st.links = ["zz1ap", "zz1iu"]
    st.save()
    with pytest.raises(NetError, match="already has a state file"):
        cl.RunState.new("zz1")
    back = cl.RunState.load("zz1")
    assert back.links == ["zz1ap", "zz1iu"] and back.owner_alive()
    assert cl.list_runs() == ["zz1"]
    ppid = os.getppid()
    back.owner_pid, back.owner_start = ppid, cl.proc_start_time(ppid) or 0
    back.save()
    with pytest.raises(NetError, match="still owned by live pid"):
        cl.cleanup_run("zz1")
    assert cl.cleanup_run("zz1", force=True)[-1].startswith("rm ")
    assert cl.list_runs() == []
    with pytest.raises(NetError, match="no state file"):
        cl.RunState.load("nope")


class _StubSetter:
    def encode(self, ifindex: int, classid: int, parent: int, rate: int, *a: int) -> bytes:
        return f"htb {classid:x} {rate}".encode()

    def encode_tbf(self, ifindex: int, qh: int, parent: int, rate: int, *a: int) -> bytes:
        return f"tbf {qh:x} {rate}".encode()


def test_outage_closes_the_gate_and_leaves_htb_alone() -> None:
    from emulator.net.shaper import (
        GATE_RATE_BPS,
        LINE_RATE_BPS,
        ShapedClass,
        ShaperSettings,
        _Child,
    )

    tr = _trace([10e6, 0.0, 20e6])
    c = ShapedClass("x", 1, 0x10010, 0x10000, "leaf", 0, "up", tr, ((1, 0x100000, 0x10010),))
    child = _Child([c], ShaperSettings(compensate_overhead=False), None)
    child.state = [{"rate": None, "open": True}]
    s = _StubSetter()
    assert child._msgs(s, 0, c, 10e6) == [b"htb 10010 1250000"]  # type: ignore[arg-type]
    assert child._msgs(s, 0, c, 0.0) == [f"tbf 100000 {GATE_RATE_BPS // 8}".encode()]  # type: ignore[arg-type]
    assert child._msgs(s, 0, c, 50e3) == []  # type: ignore[arg-type]  # still an outage
    assert not child.state[0]["opened"]
    assert child._msgs(s, 0, c, 20e6) == [  # type: ignore[arg-type]
        b"htb 10010 2500000",
        f"tbf 100000 {LINE_RATE_BPS // 8}".encode(),
    ]
    assert child.state[0]["opened"]  # replay() kicks the interface after sending these
    assert child._msgs(s, 0, c, 10e6) == [b"htb 10010 1250000"]  # type: ignore[arg-type]
    assert not child.state[0]["opened"]


def test_a_failed_kick_is_counted_not_raised() -> None:
    from emulator.net.shaper import KICK_FRAME, ShapedClass, ShaperSettings, _Child

    assert len(KICK_FRAME) == 60 and KICK_FRAME[12:14] == b"\x88\xb5"
    c = ShapedClass("nonexistent0", 1, 0x10010, 0x10000, "leaf", 0, "up", _trace([1e6]))
    child = _Child([c], ShaperSettings(), None)
    socks: dict[str, object] = {}
    child._kick(socks, c)  # type: ignore[arg-type]
    assert child.kick_errors == 1 and not socks


def test_changes_end_for_a_constant_trace() -> None:
    # a constant trace has no changes: the generator must end, not scan for ever
    assert list(_changes(_trace([5e6]), 0.0)) == []
    stop = Trace(np.array([0.0]), np.array([5e6]), 2.0, end="stop")
    assert list(_changes(stop, 0.0)) == [(2.0, 0.0)]


def test_longest_closed_stretch_wraps_around_a_looping_trace() -> None:
    from emulator.net.topology import _longest_closed

    outage = Trace(np.array([0.0, 3.0, 33.0]), np.array([10e6, 0.0, 10e6]), 60.0)
    assert _longest_closed(outage, 100e3) == pytest.approx(30.0)
    burst = Trace(np.array([0.0, 0.1]), np.array([11.6e6, 0.0]), 0.5)
    assert _longest_closed(burst, 100e3) == pytest.approx(0.4)
    # closed [0, 0.2) and [0.4, 0.5): one stretch of 0.3 s across the loop; 50 kbit/s is closed
    wrap = Trace(np.array([0.0, 0.2, 0.4]), np.array([0.0, 5e6, 50e3]), 0.5)
    assert _longest_closed(wrap, 100e3) == pytest.approx(0.3)
    assert _longest_closed(_trace([1e6, 2e6]), 100e3) == 0.0
    assert _longest_closed(_trace([0.0, 0.0]), 100e3) == np.inf


def test_two_frame_bucket_only_for_short_openings_that_carry_two_frames() -> None:
    from emulator.net.topology import (
        GATED_BURST_FLOOR_BYTES,
        _burst_floor_bytes,
        _open_stretches,
    )

    outage = Trace(np.array([0.0, 3.0, 33.0]), np.array([10e6, 0.0, 10e6]), 60.0)
    assert [d for d, _ in _open_stretches(outage, 100e3)] == pytest.approx([30.0])  # 27 + 3
    assert _burst_floor_bytes(outage, 100e3) == 1  # long openings: no floor
    burst = Trace(np.array([0.0, 0.1]), np.array([11.6e6, 0.0]), 0.5)
    opens = _open_stretches(burst, 100e3)
    assert {round(d, 9) for d, _ in opens} == {0.1}
    assert {round(b) for _, b in opens} == {1_160_000}  # bits: 0.1 s at 11.6 Mbit/s
    assert _burst_floor_bytes(burst, 100e3) == GATED_BURST_FLOOR_BYTES
    # a Mahimahi-like file: 1 ms delivery opportunities (1448 B each) 20 ms apart: no floor,
    # two frames would pass twice what an opening gives
    spikes = Trace(np.arange(0.0, 1.0, 0.001), np.array([11.58e6 if i % 20 == 0 else 0.0
                                                          for i in range(1000)]), 1.0)
    assert min(b for _, b in _open_stretches(spikes, 100e3)) / 8 == pytest.approx(1447.5)
    assert _burst_floor_bytes(spikes, 100e3) == 1
    # open 0.2 s and 0.3 s between closed stretches: both counted
    two = Trace(np.array([0.0, 0.2, 0.4, 0.7]), np.array([5e6, 0.0, 5e6, 0.0]), 1.0)
    assert sorted({round(d, 9) for d, _ in _open_stretches(two, 100e3)}) == [0.2, 0.3]
    assert _open_stretches(_trace([1e6, 2e6]), 100e3) == []  # never closed
    assert _burst_floor_bytes(_trace([1e6, 2e6]), 100e3) == 1


def test_a_lagging_class_reports_the_capacity_it_replays() -> None:
    from emulator.net.shaper import ShapedClass, ShaperSettings, _Child

    tr = Trace(np.array([0.0, 3.0, 33.0]), np.array([10e6, 0.0, 10e6]), 60.0)
    key = (1, 0x10010)
    rows = []
    for lag in (0.0, 0.5):
        c = ShapedClass("x", 1, 0x10010, 0x10000, "leaf", 0, "down", tr, lag_s=lag)
        child = _Child([c], ShaperSettings(), None)
        child._rows({key: 0}, {key: 0}, 3.0, 4.0)  # window [3, 4): outage from 3 (+ lag)
        child._rows({key: 0}, {key: 0}, 0.0, 1.0)  # before the lag ends: the rate at time 0
        rows.append([r["capacity_mbps"] for r in child.rows])
    assert rows[0] == [0.0, 10.0]
    assert rows[1] == [5.0, 10.0]
