"""The MEC server in-process, driven by a raw client: it runs its side of a plan, streams the
tokens without waiting, shares its slots FIFO, and refuses what is not a plan."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.latency import LatencyModel
from agent.plan import MEC, SEND
from agent.policy import Decision, Workload
from emulator.compute import ProfiledCompute
from emulator.errors import EmulatorError, ProtocolError
from emulator.mec import MecServer
from emulator.protocol import Message, MsgType, connect, recv_message, send_message
from emulator.steps import StepRunner
from emulator.synthetic import synthetic_profile

BLOCK_MS = 5.0  # MEC prefill blocks; decode blocks 1 ms; 4 blocks, 4 decode tokens


@pytest.fixture
def server() -> Iterator[MecServer]:
    dev = synthetic_profile(hw_class="device", block_ms=20.0, decode_block_ms=4.0)
    mec = synthetic_profile(hw_class="mec", block_ms=BLOCK_MS, decode_block_ms=1.0)
    model = LatencyModel(dev, mec)
    steps = StepRunner(ProfiledCompute(mec, np.random.default_rng(0), jitter="none"))
    srv = MecServer(model, steps, slots=1, host="127.0.0.1")
    srv.start()
    yield srv
    srv.stop()


def _dev(srv: MecServer, i: int) -> socket.socket:
    s = connect("127.0.0.1", srv.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": i, "model": "toy"}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.WELCOME and m.meta["slots"] == 1
    return s


def _offload(srv: MecServer, s: socket.socket, rid: int, tokens: int = 4) -> float:
    """PLAN a full offload and send its input; returns when the input was sent."""
    splits = {"prefill": 0, "decode": 0}
    send_message(s, Message(MsgType.PLAN, rid, meta={
        "splits": splits, "repeats": {"decode": tokens}, "seed": 1}))
    plan = srv.model.plan(Decision(splits), Workload("toy", {"decode": tokens}))
    first = plan.steps[0]
    assert first.kind == SEND and first.what == "input"
    t = time.monotonic()
    send_message(s, Message(MsgType.DATA, rid, meta={"step": 0, "items": list(first.items)},
                            payload=b"x" * first.nbytes))
    return t


def _collect(s: socket.socket) -> tuple[list[tuple[float, Message]], dict]:
    """DATA messages (with arrival times) until the REPORT."""
    got = []
    while True:
        m = recv_message(s)
        assert m is not None and m.type in (MsgType.DATA, MsgType.REPORT), m
        if m.type == MsgType.REPORT:
            return got, json.loads(bytes(m.payload))
        m.payload = bytes(m.payload)
        got.append((time.monotonic(), m))


def test_full_offload_runs_the_loop_and_streams_every_token(server: MecServer) -> None:
    a = _dev(server, 0)
    t_sent = _offload(server, a, 1)
    data, report = _collect(a)
    # 1 prefill token + 4 decode tokens, each its own one-way message of 8 bytes
    assert [len(m.payload) for _, m in data] == [8] * 5
    assert [m.meta["items"] for _, m in data] == sorted(m.meta["items"] for _, m in data)
    comps = [r for r in report["steps"] if "t_end" in r]
    assert len(comps) == 5
    # prefill 4 x 5 ms, then each decode 4 x 1 ms back to back (no device round trip)
    # (lower bounds exact; upper bounds loose: the build machine is shared and noisy)
    assert 0.0195 <= comps[0]["t_end"] - comps[0]["t_start"] < 0.05
    for c0, c1 in itertools.pairwise(comps):
        assert c1["t_start"] - c0["t_end"] < 0.005
        assert 0.0039 <= c1["t_end"] - c1["t_start"] < 0.03
    # the input's arrival stamp is after it was sent and before the first computation
    recv = report["recv"]["0"]
    assert t_sent <= recv <= comps[0]["t_start"]
    # tokens arrive while the loop goes on: the first long before the last computation ends
    assert data[0][0] < comps[-1]["t_end"]
    a.close()


def test_session_holds_the_slot_until_its_last_mec_computation(server: MecServer) -> None:
    a, b = _dev(server, 0), _dev(server, 1)
    _offload(server, a, 1, tokens=40)  # 20 + 40 x 4 = 180 ms on the MEC
    time.sleep(0.03)
    _offload(server, b, 7, tokens=1)
    time.sleep(0.02)
    q = server.queue_state()
    assert (q.queue_len, q.busy_slots, q.slots) == (1, 1, 1)
    # the new session would wait for a's rest (~0.13 s) then b's (0.024 s)
    assert 0.08 < q.expected_wait_s < 0.25
    data_a, rep_a = _collect(a)
    data_b, rep_b = _collect(b)
    a_last = max(r["t_end"] for r in rep_a["steps"] if "t_end" in r)
    b_first = min(r["t_start"] for r in rep_b["steps"] if "t_end" in r)
    assert b_first >= a_last  # FIFO: b started when a's last MEC computation ended
    assert b_first - a_last < 0.01  # without waiting for a's RELEASE
    assert len(data_a) == 41 and len(data_b) == 2
    send_message(b, Message(MsgType.QUEUE))
    qr = recv_message(b)
    assert qr is not None and qr.meta["queue"]["busy_slots"] == 0
    a.close()
    b.close()


def test_disconnect_frees_the_slot(server: MecServer) -> None:
    a, b = _dev(server, 0), _dev(server, 1)
    _offload(server, a, 1, tokens=200)  # 0.8 s on the MEC
    time.sleep(0.05)
    _offload(server, b, 1, tokens=1)
    a.close()  # a crashed device must not block the MEC
    t = time.monotonic()
    data, _ = _collect(b)
    assert len(data) == 2 and time.monotonic() - t < 0.5
    b.close()


def test_bad_requests_get_an_error(server: MecServer) -> None:
    s = connect("127.0.0.1", server.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": 0, "model": "gpt2"}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR and "this MEC serves 'toy'" in m.meta["message"]
    s.close()
    s = _dev(server, 0)
    send_message(s, Message(MsgType.PLAN, 1, meta={"splits": {"prefill": 9, "decode": 0}}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR
    assert "not a plan of 'toy'" in m.meta["message"] and "out of range" in m.meta["message"]
    s.close()
    s = _dev(server, 0)
    send_message(s, Message(MsgType.DATA, 5, meta={"step": 0, "items": [0]}, payload=b"x"))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR and "no PLAN" in m.meta["message"]
    with pytest.raises((ProtocolError, OSError)):
        for _ in range(3):
            send_message(s, Message(MsgType.ECHO))
            if recv_message(s) is None:
                raise ProtocolError("closed")
    s.close()


def test_mec_side_of_a_split_plan_waits_for_the_cut() -> None:
    """The plan's MEC steps are exactly the computations and sends the MEC runs."""
    dev = synthetic_profile(hw_class="device")
    mec = synthetic_profile(hw_class="mec")
    plan = LatencyModel(dev, mec).plan(Decision({"prefill": 2, "decode": 2}), Workload("toy"))
    mec_steps = plan.side_steps(MEC)
    assert [(s.kind, s.what) for s in mec_steps[:2]] == [(0, ""), (1, "output")]
    assert mec_steps[0].lo == 2 and mec_steps[0].hi == 4


def test_report_dir_keeps_the_stamps_off_the_link(tmp_path: Path) -> None:
    dev = synthetic_profile(hw_class="device", block_ms=20.0, decode_block_ms=4.0)
    mec = synthetic_profile(hw_class="mec", block_ms=BLOCK_MS, decode_block_ms=1.0)
    steps = StepRunner(ProfiledCompute(mec, np.random.default_rng(0), jitter="none"))
    srv = MecServer(LatencyModel(dev, mec), steps, slots=1, host="127.0.0.1",
                    report_dir=tmp_path)
    srv.start()
    try:
        a = _dev(srv, 3)
        _offload(srv, a, 7)
        while True:
            m = recv_message(a)
            assert m is not None
            if m.type == MsgType.REPORT:
                break
        a.close()
    finally:
        srv.stop()
    assert m.payload_size == 0 and m.meta["report_file"] == "3-7.json"
    report = json.loads((tmp_path / "3-7.json").read_text())
    assert len([r for r in report["steps"] if "t_end" in r]) == 5  # prefill + 4 decodes
    assert set(report["recv"]) == {"0"}


def test_mec_refuses_an_unknown_congestion_control_in_one_line() -> None:
    prof = synthetic_profile(hw_class="mec", block_ms=1.0)
    steps = StepRunner(ProfiledCompute(prof, np.random.default_rng(0), jitter="none"))
    with pytest.raises(EmulatorError, match=r"--tcp-congestion no-such-cc: refused"):
        MecServer(LatencyModel(prof, prof), steps, host="127.0.0.1", congestion="no-such-cc")
