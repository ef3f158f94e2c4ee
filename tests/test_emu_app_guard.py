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

from agent.latency import LatencyModel
from agent.policy import Decision, Workload
from emulator.compute import ProfiledCompute
from emulator.errors import ProtocolError
from emulator.guard import MemoryBudget, plan_max_payload
from emulator.mec import MecServer
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
from emulator.steps import StepRunner
from emulator.synthetic import synthetic_profile

TOKEN = "s3cret-run-token"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _server(**kw: object) -> MecServer:
    dev = synthetic_profile(hw_class="device", block_ms=20.0)
    prof = synthetic_profile(hw_class="mec", block_ms=5.0)
    steps = StepRunner(ProfiledCompute(prof, np.random.default_rng(0), jitter="none"))
    args: dict[str, object] = {"slots": 1, "host": "127.0.0.1", "token": TOKEN}
    args.update(kw)
    srv = MecServer(LatencyModel(dev, prof), steps, **args)  # type: ignore[arg-type]
    srv.start()
    return srv


def _offload(srv: MecServer, s: socket.socket, rid: int = 1, tokens: int = 4,
             send_input: bool = True) -> None:
    """PLAN a full offload of ``tokens`` decodes and (optionally) send its input."""
    splits = {"prefill": 0, "decode": 0}
    send_message(s, Message(MsgType.PLAN, rid, meta={"splits": splits,
                                                     "repeats": {"decode": tokens}}))
    if send_input:
        first = srv.model.plan(Decision(splits), Workload("toy", {"decode": tokens})).steps[0]
        send_message(s, Message(MsgType.DATA, rid, meta={"step": 0, "items": list(first.items)},
                                payload=b"x" * first.nbytes))


def _until_report(s: socket.socket) -> list[Message]:
    """Messages until the session's REPORT (included)."""
    got = []
    while True:
        m = recv_message(s)
        assert m is not None and m.type in (MsgType.DATA, MsgType.REPORT), m
        m.payload = bytes(m.payload)
        got.append(m)
        if m.type == MsgType.REPORT:
            return got


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
    a.sendall(_header(MsgType.DATA, 512 << 20) + b"x" * 10_000)
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
            a.sendall(_header(MsgType.DATA, 8 << 20) + b"y" * (8 << 20))

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
            s.sendall(_header(MsgType.DATA, (1 << 30) - 1))  # a stranger: refused at once
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
    s.sendall(_header(MsgType.DATA, 4 << 20))
    assert "exceeds" in _error(s)
    s.close()


# ---------------------------------------------------------------------------- sessions
def test_hello_needs_the_runs_token(server: MecServer) -> None:
    assert "token" in _error(_hello(server, 0, token="guess"))
    assert "token" in _error(_hello(server, 0, token=None))
    s = connect("127.0.0.1", server.port)
    send_message(s, Message(MsgType.PLAN, 1, meta={"splits": {"prefill": 0, "decode": 0}}))
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


@pytest.mark.parametrize(("meta", "match"), [
    ({"splits": {"prefill": 0, "decode": 0}, "seed": "abc"}, "'seed' must be an integer"),
    ({"splits": {"prefill": 0, "decode": 0}, "seed": 1e308}, "'seed' must be an integer"),
    ({"splits": [0, 0]}, "splits must map pass names"),
    ({"splits": {"prefill": 0, "decode": "all"}}, "integer or a non-empty list"),
    ({"splits": {"prefill": 0, "decode": 0}, "repeats": {"decode": "x"}}, "repeats must map"),
    ({"splits": {"prefill": 0, "decode": 0}, "action": [1]}, "'action' must be an integer"),
])
def test_malformed_plan_fields_get_an_error(server: MecServer, meta: dict,
                                            match: str) -> None:
    s = _dev(server, 0)
    send_message(s, Message(MsgType.PLAN, 1, meta=meta))
    assert match in _error(s)
    assert _wait(lambda: server.queue_state().busy_slots == 0)


def test_data_that_is_not_a_device_send_of_the_plan(server: MecServer) -> None:
    s = _dev(server, 0)
    _offload(server, s, send_input=False)
    send_message(s, Message(MsgType.DATA, 1, meta={"step": 1, "items": [0]}, payload=b"x"))
    assert "is not a device send" in _error(s)
    s = _dev(server, 0)
    _offload(server, s, send_input=False)
    send_message(s, Message(MsgType.DATA, 1, meta={"step": 10**6}, payload=b"x"))
    assert "'step' must be in 0.." in _error(s)


def test_the_expected_wait_is_the_mecs_own_estimate(server: MecServer) -> None:
    """No hold a client declares enters the wait every device is told: the MEC estimates each
    session from its plan (here 4 x 5 ms prefill + 40 x 4 x 1 ms decodes = 0.18 s)."""
    a, b = _dev(server, 0), _dev(server, 1)
    _offload(server, a, 1, tokens=40)
    time.sleep(0.02)
    _offload(server, b, 1, tokens=40)
    time.sleep(0.02)
    q = server.queue_state()
    assert q.queue_len == 1 and q.busy_slots == 1
    assert 0.18 < q.expected_wait_s < 0.18 + 0.18  # a's rest + b's whole session
    _until_report(a)
    _until_report(b)
    a.close()
    b.close()


def test_idle_and_silent_connections_time_out(server: MecServer) -> None:
    silent = connect("127.0.0.1", server.port)  # never says HELLO
    slow = connect("127.0.0.1", server.port)
    slow.sendall(_header(MsgType.HELLO, 0, 20)[:10])  # a slow client: part of a header
    t0 = time.monotonic()
    assert "no valid HELLO within 0.5 s" in _error(silent)
    assert "no valid HELLO" in _error(slow)
    assert time.monotonic() - t0 < 1.5
    # a split plan: the MEC runs blocks [2, 4) of each pass and waits for every cut; a goes
    # silent after its PLAN, holding nothing yet; then sends its first cut and goes silent
    a, b = _dev(server, 0), _dev(server, 1)
    splits = {"prefill": 2, "decode": 2}
    plan = server.model.plan(Decision(splits), Workload("toy"))
    send_message(a, Message(MsgType.PLAN, 1, meta={"splits": splits}))
    cut = next(st for st in plan.steps if st.kind == 1 and st.side == 0)
    send_message(a, Message(MsgType.DATA, 1, meta={"step": plan.steps.index(cut)},
                            payload=b"c" * cut.nbytes))
    assert recv_message(a) is not None  # the first token: a's session holds the slot
    _offload(server, b)  # waits for a's slot
    t1 = time.monotonic()
    got = _until_report(b)  # a never sends its next cut: its session ends, the slot is freed
    assert 0.3 < time.monotonic() - t1 < 1.5
    assert got[-1].type == MsgType.REPORT
    m = recv_message(a)
    assert m is not None and m.type == MsgType.ERROR and "did not arrive" in m.meta["message"]
    assert server.expired >= 2
    b.close()
    a.close()


def test_over_long_session_frees_its_slot() -> None:
    srv = _server(idle_timeout_s=60.0, max_session_s=0.6)
    try:
        a, b = _dev(srv, 0), _dev(srv, 1)
        _offload(srv, a, tokens=1000)  # 4 s of decodes on the MEC: longer than 0.6 s allowed
        assert recv_message(a) is not None
        time.sleep(0.05)
        t1 = time.monotonic()
        _offload(srv, b)
        got = _until_report(b)
        assert got[-1].type == MsgType.REPORT and time.monotonic() - t1 < 1.5
        assert srv.expired >= 1
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
                _offload(server, s, 1, tokens=2)
        s.close()
    assert _wait(lambda: server.connections() == 0 and threading.active_count() <= threads0,
                 timeout=5.0), (server.connections(), threading.active_count(), threads0)
    assert _wait(lambda: server.queue_state().busy_slots == 0 and not server._waiting)
    assert not server._hold and server.budget.used == 0
    assert len(server._threads) == 2  # acceptor, watchdog: no per-connection thread kept


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
