"""The MEC under hostile clients: memory bounded by bytes that arrived, HELLO with the run's
token, timeouts that free slots, validated fields, nothing left per connection, listening only
on its own address."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from emulator.compute import ProfiledCompute
from emulator.errors import ProtocolError
from emulator.guard import HoldEstimator, MemoryBudget, plan_max_payload
from emulator.mec import MecServer, ProfiledMecBackend
from emulator.protocol import (
    HEADER_FORMAT,
    MAGIC,
    PROTOCOL_VERSION,
    Message,
    MsgType,
    PayloadBuffer,
    connect,
    recv_message,
    send_message,
)
from emulator.synthetic import synthetic_profile

TOKEN = "s3cret-run-token"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _server(**kw: object) -> MecServer:
    prof = synthetic_profile(hw_class="mec", block_ms=5.0)
    backend = ProfiledMecBackend(ProfiledCompute(prof, np.random.default_rng(0), jitter="none"))
    args: dict[str, object] = {"slots": 1, "host": "127.0.0.1", "token": TOKEN}
    args.update(kw)
    srv = MecServer(prof, backend, **args)  # type: ignore[arg-type]
    srv.start()
    return srv


@pytest.fixture
def server() -> Iterator[MecServer]:
    srv = _server(hello_timeout_s=0.5, idle_timeout_s=0.4, max_session_s=3.0)
    yield srv
    srv.stop()


def _hello(srv: MecServer, device: object = 0, token: object = TOKEN) -> socket.socket:
    s = connect("127.0.0.1", srv.port)
    send_message(s, Message(MsgType.HELLO, meta={"device": device, "model": "toy",
                                                 "token": token}))
    return s


def _dev(srv: MecServer, i: int) -> socket.socket:
    s = _hello(srv, i)
    m = recv_message(s)
    assert m is not None and m.type == MsgType.WELCOME
    return s


def _error(s: socket.socket) -> str:
    m = recv_message(s)
    assert m is not None and m.type == MsgType.ERROR, m
    assert recv_message(s) is None  # and the connection is closed
    return str(m.meta["message"])


def _header(mtype: int, payload_len: int, meta_len: int = 0) -> bytes:
    return struct.pack(HEADER_FORMAT, MAGIC, PROTOCOL_VERSION, mtype, 0, 1, 0, 0, 1, 4,
                       meta_len, payload_len)


def _wait(cond: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------- memory
def test_receive_buffer_grows_with_arrived_bytes_not_the_claim() -> None:
    a, b = socket.socketpair()
    budget = MemoryBudget(64 << 20)
    buf = PayloadBuffer(budget=budget)
    a.sendall(_header(MsgType.COMPUTE, 512 << 20) + b"x" * 10_000)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="after 10000 of"):
        recv_message(b, 1 << 30, into=buf)
    assert buf.capacity <= 2 << 20 and budget.used == buf.capacity  # not 512 MiB
    buf.free()
    assert budget.used == 0
    a.close()
    b.close()


def test_whole_server_budget_refuses_what_does_not_fit() -> None:
    a, b = socket.socketpair()
    budget = MemoryBudget(3 << 20)
    buf = PayloadBuffer(budget=budget)
    def send() -> None:
        with contextlib.suppress(OSError):  # the reader gives up half way
            a.sendall(_header(MsgType.COMPUTE, 8 << 20) + b"y" * (8 << 20))

    t = threading.Thread(target=send, daemon=True)
    t.start()
    with pytest.raises(ProtocolError, match="budget"):
        recv_message(b, 16 << 20, into=buf)
    assert budget.peak <= budget.limit
    b.close()
    t.join(5)
    a.close()


@pytest.mark.parametrize("keep_payload", [False, True])
def test_rss_stays_bounded_under_oversized_headers(keep_payload: bool) -> None:
    # the MEC's own bound would refuse 1 GiB at once; set it to 1 GiB to show that what
    # protects the server is growing with arrived bytes, and that a stranger's payload is
    # refused from its header (before HELLO) or counted and dropped (profiled mode)
    srv = _server(max_payload=1 << 30, hello_timeout_s=30.0)
    srv.keep_payload = keep_payload
    socks = []
    try:
        a = _dev(srv, 0)  # an authenticated device: its payload claims are read
        rss0 = _rss_bytes()
        for _ in range(10):
            s = connect("127.0.0.1", srv.port)
            s.sendall(_header(MsgType.COMPUTE, (1 << 30) - 1))  # a stranger: refused at once
            socks.append(s)
        a.sendall(_header(MsgType.ECHO, (1 << 30) - 1) + b"z" * 100_000)
        for s in socks:
            assert "before a HELLO" in _error(s)
        time.sleep(0.3)
        grown = _rss_bytes() - rss0
        assert grown < 40 << 20, f"RSS grew {grown >> 20} MiB"
        assert srv.budget.used <= 2 << 20
        a.close()
        assert _wait(lambda: srv.connections() == 0)
        assert srv.budget.used == 0
    finally:
        srv.stop()


def test_claims_above_what_a_plan_needs_are_refused(server: MecServer) -> None:
    prof = synthetic_profile(hw_class="mec")
    assert server.max_payload == plan_max_payload(prof) < 2 << 20  # 200 KB cuts here
    s = _dev(server, 0)
    s.sendall(_header(MsgType.COMPUTE, 4 << 20))
    assert "exceeds" in _error(s)
    s.close()


# ---------------------------------------------------------------------------- sessions
def test_hello_needs_the_runs_token(server: MecServer) -> None:
    assert "token" in _error(_hello(server, 0, token="guess"))
    assert "token" in _error(_hello(server, 0, token=None))
    s = connect("127.0.0.1", server.port)
    send_message(s, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4, meta={"expected_hold_s": 10.0}))
    assert "before a HELLO" in _error(s)
    assert server.queue_state().busy_slots == 0  # no slot was ever held by a stranger
    s = connect("127.0.0.1", server.port)
    send_message(s, Message(MsgType.ECHO))
    assert "before a HELLO" in _error(s)


@pytest.mark.parametrize(("device", "match"), [
    ("abc", "'device' must be an integer"), (1.5, "must be an integer"),
    (True, "must be an integer"), (-3, "must be in 0..1000000"), (None, "must be an integer"),
])
def test_malformed_hello_fields_get_an_error(server: MecServer, device: object,
                                             match: str) -> None:
    assert match in _error(_hello(server, device))
    _dev(server, 1).close()  # and the server still serves


@pytest.mark.parametrize(("hold", "match"), [
    (1e308, "finite number in [0, 1e+09]"), ("soon", "must be a number"),
    (-1.0, "finite number"), ([1], "must be a number"),
])
def test_malformed_expected_hold_gets_an_error(server: MecServer, hold: object,
                                               match: str) -> None:
    s = _dev(server, 0)
    send_message(s, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4, meta={"expected_hold_s": hold}))
    assert match in _error(s)
    assert _wait(lambda: server.queue_state().busy_slots == 0)


def test_declared_hold_is_capped_by_the_mecs_own_bound() -> None:
    # bound per repetition: device 0.1 s + MEC 0.02 s (prefill), 0.004+0.01 s (decode) x 4
    srv = _server(holds=HoldEstimator([0.02, 0.004], [0.1, 0.01], [1, 4]))
    try:
        assert srv.holds.rest_s(0, 0) == pytest.approx(0.12 + 4 * 0.014)
        a, b = _dev(srv, 0), _dev(srv, 1)
        send_message(a, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4,
                                meta={"expected_hold_s": 5e8}))
        assert recv_message(a) is not None
        send_message(b, Message(MsgType.COMPUTE, 1, 1, 2, 1, 4,
                                meta={"expected_hold_s": 3.0}))
        time.sleep(0.05)
        q = srv.queue_state()
        assert q.queue_len == 1
        # a's remaining bound (0.176 s, less the time it has held) + b's from decode rep 2
        assert q.expected_wait_s < 0.176 + 2 * 0.014 + 1e-9
        a.close()
        assert recv_message(b) is not None  # the queued job
        send_message(b, Message(MsgType.COMPUTE, 1, 1, 9, 1, 4))
        assert "repetition 9 out of range" in _error(b)
    finally:
        srv.stop()


def test_idle_and_silent_connections_time_out(server: MecServer) -> None:
    silent = connect("127.0.0.1", server.port)  # never says HELLO
    slow = connect("127.0.0.1", server.port)
    slow.sendall(_header(MsgType.HELLO, 0, 20)[:10])  # a slow client: part of a header
    t0 = time.monotonic()
    assert "no valid HELLO within 0.5 s" in _error(silent)
    assert "no valid HELLO" in _error(slow)
    assert time.monotonic() - t0 < 1.5
    a, b = _dev(server, 0), _dev(server, 1)
    send_message(a, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4))
    assert recv_message(a) is not None
    send_message(b, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4))  # waits for a's slot
    t1 = time.monotonic()
    rb = recv_message(b)  # a goes silent holding the slot: the watchdog frees it
    assert rb is not None and rb.type == MsgType.RESULT
    assert 0.3 < time.monotonic() - t1 < 1.5
    assert "idle" in _error(a)
    assert server.expired >= 3
    b.close()


def test_over_long_session_frees_its_slot() -> None:
    srv = _server(idle_timeout_s=60.0, max_session_s=0.6)
    try:
        a, b = _dev(srv, 0), _dev(srv, 1)
        send_message(a, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4))
        assert recv_message(a) is not None
        stop = threading.Event()

        def keep_busy() -> None:  # echoes keep it from being idle; it never releases
            while not stop.wait(0.1):
                try:
                    send_message(a, Message(MsgType.ECHO))
                except OSError:
                    return

        threading.Thread(target=keep_busy, daemon=True).start()
        send_message(b, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4))
        rb = recv_message(b)
        assert rb is not None and rb.type == MsgType.RESULT
        assert rb.meta["t_start"] - rb.meta["t_recv"] < 1.0
        stop.set()
        b.close()
        a.close()
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- churn
def test_no_connection_state_survives_churn(server: MecServer) -> None:
    threads0 = threading.active_count()
    for i in range(300):
        s = connect("127.0.0.1", server.port)
        if i % 3 == 0:
            send_message(s, Message(MsgType.HELLO, meta={"device": i, "model": "toy",
                                                         "token": TOKEN}))
            assert recv_message(s) is not None
            if i % 2 == 0:
                send_message(s, Message(MsgType.COMPUTE, 1, 0, 0, 1, 4, payload=b"q" * 1000))
        s.close()
    assert _wait(lambda: server.connections() == 0 and threading.active_count() <= threads0,
                 timeout=5.0), (server.connections(), threading.active_count(), threads0)
    assert _wait(lambda: server.queue_state().busy_slots == 0 and not server._waiting)
    assert not server._slot_of and not server._hold and server.budget.used == 0
    assert len(server._threads) == 3  # worker, acceptor, watchdog: no per-connection thread


def test_connection_limit_refuses_the_excess() -> None:
    srv = _server(max_connections=5, hello_timeout_s=30.0)
    try:
        held = [connect("127.0.0.1", srv.port) for _ in range(5)]
        assert _wait(lambda: srv.connections() == 5)
        extra = connect("127.0.0.1", srv.port)
        assert recv_message(extra) is None  # closed at once
        assert srv.refused == 1
        for s in held:
            s.close()
        assert _wait(lambda: srv.connections() == 0)
        _dev(srv, 0).close()
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- address
def _external_ipv4() -> str | None:
    """An IPv4 address of this host other than loopback (None when there is none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
            addr = str(u.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_listens_only_on_its_own_address(server: MecServer) -> None:
    ext = _external_ipv4()
    if ext is None:
        pytest.skip("this host has no non-loopback IPv4 address to try")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ext, server.port), timeout=2).close()
    _dev(server, 0).close()
