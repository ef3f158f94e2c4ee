"""The wire-bytes rule (agent/wire.py) against the bytes the emulator writes and hand prices."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from agent.latency import LatencyModel, simulate_request
from agent.link import Link
from agent.plan import SEND, Step
from agent.policy import Decision, Workload
from agent.wire import HEADER_BYTES, data_meta, message_wire_bytes, priced_bytes
from emulator.protocol import Message, MsgType, send_message
from profiler.schema import load_profile
from traces import Trace

FIX = Path(__file__).parent / "fixtures" / "agent"


class _Recorder(socket.socket):
    """A socket that records what each ``sendall`` was given instead of sending it."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.writes: list[bytes] = []

    def sendall(self, data: object, flags: int = 0) -> None:  # type: ignore[override]
        self.writes.append(bytes(memoryview(data)))  # type: ignore[arg-type]


@pytest.mark.parametrize(("step", "items", "n"), [(2, (3,), 8), (0, (0,), 1024), (41, (7, 9), 0)])
def test_a_data_message_is_header_meta_payload_in_one_write(step: int, items: tuple[int, ...],
                                                             n: int) -> None:
    rec = _Recorder()
    try:
        send_message(rec, Message(MsgType.DATA, 5, 1, 2, meta={"step": step,
                                                               "items": list(items)},
                                  payload=bytes(n)))
    finally:
        rec.close()
    assert len(rec.writes) == 1  # one segment for a small message, as priced
    assert len(rec.writes[0]) == HEADER_BYTES + len(data_meta(step, items)) + n
    assert data_meta(2, (3,)) == b'{"step":2,"items":[3]}'


def test_prices_by_hand() -> None:
    # an 8-byte token after 38 + 22 bytes of framing: one 134-byte frame, 1448/1514 of it
    assert priced_bytes(8, 2, (3,)) == pytest.approx((8 + 38 + 22 + 66) * 1448 / 1514)
    # exactly ten full segments: the price is the TCP payload (the capacity is goodput)
    framing = 38 + len(b'{"step":0,"items":[0]}')
    assert message_wire_bytes(14480 - framing, framing) == 10 * 1514
    assert priced_bytes(14480 - framing, 0, (0,)) == pytest.approx(14480)
    # one byte more takes an eleventh segment
    assert message_wire_bytes(14481 - framing, framing) == 14481 + 11 * 66


def test_streamed_tokens_pay_their_framing() -> None:
    rate, delay = 8e6, 0.01
    link = Link(Trace(np.array([0.0]), np.array([rate]), period_s=100.0), None, delay)
    dev, mec = (load_profile(FIX / f"llm.{k}.json") for k in ("device", "mec"))
    on, off = LatencyModel(dev, mec), LatencyModel(dev, mec, wire_overhead=False)
    dec, wl = Decision({"prefill": 0, "decode": 0}), Workload("llm")
    a = simulate_request(on, link, dec, wl, 2.0)
    b = simulate_request(off, link, dec, wl, 2.0)
    sends = [s for s in on.plan(dec, wl).steps if s.kind == SEND]
    first, last = sends[0], sends[-1]
    assert first.nbytes == 1024 and last.nbytes == 8
    idx = {id(s): i for i, s in enumerate(on.plan(dec, wl).steps)}

    def extra(st: Step) -> float:  # seconds the framing adds to a send on this link
        framing = 38 + len(data_meta(idx[id(st)], st.items))
        return 8 * ((st.nbytes + framing + 66) * 1448 / 1514 - st.nbytes) / rate

    # the request's path: the prompt up, the MEC's work, the last token down (the tokens before
    # it leave while the MEC computes and never hold up the last one on this fast link)
    assert a.latency_s - b.latency_s == pytest.approx(extra(first) + extra(last), abs=1e-12)
    assert a.upload_bytes == b.upload_bytes == 1024  # records keep payload bytes
