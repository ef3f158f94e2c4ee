"""The device<->MEC wire protocol: framing, validation, bounds, TCP_NODELAY."""

from __future__ import annotations

import re
import socket
import struct
import threading

import pytest

from emulator.errors import ProtocolError
from emulator.protocol import (
    HEADER_FORMAT,
    HEADER_SIZE,
    MAGIC,
    MAX_META,
    PROTOCOL_VERSION,
    Message,
    MsgType,
    PayloadBuffer,
    configure_socket,
    decode_header,
    encode_header,
    recv_message,
    send_message,
)


def _pair() -> tuple[socket.socket, socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    srv.close()
    for s in (a, b):
        configure_socket(s)
    return a, b


def test_header_round_trip() -> None:
    m = Message(MsgType.DATA, request_id=2**40, pass_index=3, repetition=70_000,
                block_lo=5, block_hi=12)
    head = encode_header(m, 17, 123_456)
    assert len(head) == HEADER_SIZE == 38
    got, meta_len, payload_len = decode_header(head)
    assert (got.type, got.request_id, got.pass_index, got.repetition, got.block_lo,
            got.block_hi) == (MsgType.DATA, 2**40, 3, 70_000, 5, 12)
    assert (meta_len, payload_len) == (17, 123_456)


@pytest.mark.parametrize(("fields", "match"), [
    ((b"XXXX", PROTOCOL_VERSION, 13, 0, 1, 0, 0, 0, 1, 0, 0), "bad magic"),
    ((MAGIC, PROTOCOL_VERSION + 1, 13, 0, 1, 0, 0, 0, 1, 0, 0), "protocol version 3 is not supported"),
    ((MAGIC, PROTOCOL_VERSION, 99, 0, 1, 0, 0, 0, 1, 0, 0), "unknown message type 99"),
    ((MAGIC, PROTOCOL_VERSION, 13, 0, 1, 0, 0, 3, 1, 0, 0), re.escape("block range [3, 1)")),
    ((MAGIC, PROTOCOL_VERSION, 13, 0, 1, 0, 0, 0, 1, MAX_META + 1, 0), "metadata of"),
    ((MAGIC, PROTOCOL_VERSION, 13, 0, 1, 0, 0, 0, 1, 0, 2000), "payload of 2000 bytes exceeds"),
])
def test_bad_headers_are_rejected(fields: tuple[object, ...], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_header(struct.pack(HEADER_FORMAT, *fields), max_payload=1000)


def test_send_recv_payload_and_meta() -> None:
    a, b = _pair()
    try:
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        payload = bytes(range(256)) * 4000  # ~1 MB, larger than one recv
        t = threading.Thread(target=send_message, args=(a, Message(
            MsgType.REPORT, 7, 1, 2, 3, 4, meta={"t_recv": 1.5, "queue": {"x": 1}},
            payload=memoryview(payload))))
        t.start()
        buf = PayloadBuffer()
        msg = recv_message(b, into=buf)
        t.join()
        assert msg is not None
        assert msg.type == MsgType.REPORT and msg.request_id == 7 and msg.block_hi == 4
        assert msg.meta == {"t_recv": 1.5, "queue": {"x": 1}}
        assert bytes(msg.payload) == payload
        send_message(a, Message(MsgType.BYE))
        bye = recv_message(b)
        assert bye is not None and bye.type == MsgType.BYE and bye.payload == b""
        a.close()
        assert recv_message(b) is None  # clean close between messages
    finally:
        a.close()
        b.close()


def test_close_mid_message_is_a_protocol_error() -> None:
    a, b = _pair()
    head = encode_header(Message(MsgType.DATA, block_hi=1), 0, 1000)
    a.sendall(head + b"x" * 10)
    a.close()
    with pytest.raises(ProtocolError, match="closed by the peer after 10 of 1000 bytes"):
        recv_message(b)
    b.close()


def test_metadata_must_be_a_json_object() -> None:
    a, b = _pair()
    a.sendall(encode_header(Message(MsgType.ECHO), 2, 0) + b"[]")
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        recv_message(b)
    a.close()
    b.close()


def test_configure_socket_sets_the_congestion_control() -> None:
    """The socket's own algorithm, whatever the namespace's default (reno: always allowed)."""
    with socket.socket() as s:
        configure_socket(s, congestion="reno")
        got = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
        assert got.rstrip(b"\0") == b"reno"
    with socket.socket() as s, pytest.raises(OSError):
        configure_socket(s, congestion="no-such-algorithm")


def test_the_sender_keeps_order_when_small_messages_are_written_at_once() -> None:
    """Small messages sent while nothing is queued are written by the caller without
    blocking, the rest (what a full socket did not take) by the sender's thread: from three
    threads into a socket with a tiny send buffer and a slow reader, every message arrives
    whole, each thread's in the order it sent them, and every on_start is called once."""
    import socket
    import threading
    import time

    from emulator.protocol import Message, MsgType, recv_message
    from emulator.transport import Sender

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = Sender(a, payload_scale=1.0)
    starts: list[float] = []
    n_each, size = 60, 3000

    def produce(k: int) -> None:
        for i in range(n_each):
            sender.send(Message(MsgType.DATA, k, 0, i, meta={"k": k, "i": i},
                                payload=bytes([i % 251]) * size),
                        on_start=starts.append)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    try:
        for _ in range(3 * n_each):
            time.sleep(0.0005)
            msg = recv_message(b)
            k, i = msg.meta["k"], msg.meta["i"]
            assert bytes(msg.payload) == bytes([i % 251]) * size
            got[k].append(i)
    finally:
        for t in threads:
            t.join(5)
        sender.close()
        a.close()
        b.close()
    assert all(v == list(range(n_each)) for v in got.values()), got
    assert len(starts) == 3 * n_each
    assert sender.error is None


def test_a_small_message_on_an_idle_sender_is_written_by_the_caller() -> None:
    import socket
    import threading

    from emulator.protocol import Message, MsgType, recv_message
    from emulator.transport import Sender

    a, b = socket.socketpair()
    seen: list[str] = []
    sender = Sender(a, payload_scale=1.0)
    try:
        sender.send(Message(MsgType.ECHO, 7),
                    on_start=lambda _t: seen.append(threading.current_thread().name))
        assert recv_message(b).request_id == 7
        assert seen == [threading.current_thread().name]
        queued = Sender(a, payload_scale=1.0, direct=False, name="queued-sender")
        queued.send(Message(MsgType.ECHO, 8),
                    on_start=lambda _t: seen.append(threading.current_thread().name))
        assert recv_message(b).request_id == 8
        assert seen[-1] == "queued-sender"
        queued.close()
    finally:
        sender.close()
        a.close()
        b.close()
