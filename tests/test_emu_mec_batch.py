"""The emulator's batching MEC in-process (``--mec-model batch``), driven by raw clients: 64
concurrent sessions all complete with every token and report, no iteration holds more than
``max_batch`` sessions, sessions do share iterations, and replies carry the batch status."""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from agent.latency import LatencyModel
from agent.mec_server import MecConfig
from emulator.compute import ProfiledCompute
from emulator.errors import EmulatorError
from emulator.mec import MecServer
from emulator.protocol import Message, MsgType, connect, recv_message, send_message
from emulator.steps import StepRunner
from emulator.synthetic import synthetic_profile
from tests.test_emu_app_mec import _collect, _offload

MAX_BATCH = 32
TOKENS = 4


def _model() -> LatencyModel:
    dev = synthetic_profile(hw_class="device", block_ms=20.0, decode_block_ms=4.0)
    mec = synthetic_profile(hw_class="mec", block_ms=2.0, decode_block_ms=0.5)
    return LatencyModel(dev, mec)


@pytest.fixture
def server() -> Iterator[MecServer]:
    model = _model()
    steps = StepRunner(ProfiledCompute(model.mec_profile, np.random.default_rng(0),
                                       jitter="none"))
    srv = MecServer(model, steps, host="127.0.0.1",
                    mec_config=MecConfig("batch", MAX_BATCH, None, "llama7b-gpu"))
    srv.start()
    yield srv
    srv.stop()


def _hello(srv: MecServer, i: int) -> tuple[socket.socket, dict]:
    s = connect("127.0.0.1", srv.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": i, "model": "toy"}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.WELCOME
    return s, m.meta


def test_64_concurrent_sessions(server: MecServer) -> None:
    socks = []
    for i in range(64):
        s, meta = _hello(server, i)
        q = meta["queue"]
        assert q["slots"] == MAX_BATCH and "iteration_s" in q and "active" in q
        socks.append(s)
    results: dict[int, tuple[list, dict]] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            _offload(server, socks[i], i + 1, tokens=TOKENS)
            results[i] = _collect(socks[i])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    for s in socks:
        s.close()
    assert not errors, errors[:3]
    assert sorted(results) == list(range(64))
    per_start: collections.Counter[float] = collections.Counter()
    for data, report in results.values():
        assert len(data) == TOKENS + 1  # prefill token + every decode token
        comps = [r for r in report["steps"] if "t_end" in r]
        assert len(comps) == TOKENS + 1
        assert all(c["t_ready"] <= c["t_start"] < c["t_end"] for c in comps)
        per_start.update(c["t_start"] for c in comps)
    assert max(per_start.values()) <= MAX_BATCH
    assert max(per_start.values()) >= 2  # iterations are shared
    assert server.jobs_done == 64 * (TOKENS + 1)


def test_execute_mode_is_refused() -> None:
    model = _model()
    steps = StepRunner(ProfiledCompute(model.mec_profile, np.random.default_rng(0),
                                       jitter="none"))
    steps.runner = object()  # type: ignore[assignment]  # what execute mode sets
    with pytest.raises(EmulatorError, match="profiled compute only"):
        MecServer(model, steps, host="127.0.0.1",
                  mec_config=MecConfig("batch", 8, None, "llama7b-gpu"))
