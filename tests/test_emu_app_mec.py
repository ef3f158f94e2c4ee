"""The MEC server in-process: sessions queue FIFO for C slots, queue state, bad requests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from emulator.compute import ProfiledCompute
from emulator.errors import ProtocolError
from emulator.guard import HoldEstimator
from emulator.mec import MecServer, ProfiledMecBackend
from emulator.protocol import Message, MsgType, connect, recv_message, send_message
from emulator.synthetic import synthetic_profile


@pytest.fixture
def server() -> Iterator[MecServer]:
    prof = synthetic_profile(hw_class="mec", block_ms=5.0)
    srv = MecServer(prof, ProfiledMecBackend(ProfiledCompute(prof, np.random.default_rng(0),
                                                             jitter="none")),
                    slots=1, host="127.0.0.1",
                    # device times long enough that the declared holds below are within the
                    # MEC's own bound (emulator.guard.HoldEstimator caps them)
                    holds=HoldEstimator([0.02, 0.004], [1.0, 0.1], [1, 4]))
    srv.start()
    yield srv
    srv.stop()


def _dev(srv: MecServer, i: int) -> socket.socket:
    s = connect("127.0.0.1", srv.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": i, "model": "toy"}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.WELCOME and m.meta["slots"] == 1
    return s


def _compute(s: socket.socket, rid: int, hold: float | None = None) -> None:
    meta = {} if hold is None else {"expected_hold_s": hold}
    send_message(s, Message(MsgType.COMPUTE, rid, 0, 0, 1, 4, meta=meta, payload=b"x" * 5000))


def test_sessions_hold_the_slot_until_release(server: MecServer) -> None:
    a, b = _dev(server, 0), _dev(server, 1)
    _compute(a, 1, hold=0.5)
    ra = recv_message(a)
    assert ra is not None and ra.type == MsgType.RESULT
    assert ra.meta["t_done"] - ra.meta["t_start"] == pytest.approx(0.015, abs=0.004)  # blocks 1..3
    assert len(ra.payload) == 8  # the pass output
    _compute(b, 1, hold=0.2)  # a holds the only slot: b's session waits
    time.sleep(0.05)
    q = server.queue_state()
    assert (q.queue_len, q.busy_slots, q.slots) == (1, 1, 1)
    assert 0.55 < q.expected_wait_s < 0.7  # a new session waits for a (~0.45) then b (0.2)
    _compute(a, 1)  # a's second pass runs at once on its slot
    ra2 = recv_message(a)
    assert ra2 is not None and ra2.meta["t_start"] - ra2.meta["t_recv"] < 0.01
    t_release = time.monotonic()
    send_message(a, Message(MsgType.RELEASE, 1))
    rb = recv_message(b)
    assert rb is not None and rb.type == MsgType.RESULT
    assert rb.meta["t_start"] >= t_release
    assert rb.meta["t_start"] - rb.meta["t_recv"] > 0.04  # waited for a's release
    assert rb.meta["queue"]["queue_len"] == 0
    send_message(b, Message(MsgType.QUEUE))
    qr = recv_message(b)
    assert qr is not None and qr.meta["queue"]["busy_slots"] == 1
    a.close()
    b.close()


def test_disconnect_frees_the_slot(server: MecServer) -> None:
    a, b = _dev(server, 0), _dev(server, 1)
    _compute(a, 1)
    assert recv_message(a) is not None
    _compute(b, 1)
    a.close()  # a crashed device must not block the MEC
    rb = recv_message(b)
    assert rb is not None and rb.type == MsgType.RESULT
    b.close()


def test_bad_requests_get_an_error(server: MecServer) -> None:
    s = connect("127.0.0.1", server.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": 0, "model": "gpt2"}))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR and "this MEC serves 'toy'" in m.meta["message"]
    s.close()
    s = _dev(server, 0)
    send_message(s, Message(MsgType.COMPUTE, 1, 0, 0, 2, 9))
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR and "out of range" in m.meta["message"]
    with pytest.raises((ProtocolError, OSError)):
        for _ in range(3):
            send_message(s, Message(MsgType.ECHO))
            if recv_message(s) is None:
                raise ProtocolError("closed")
    s.close()
