"""What one message of a plan costs on the link: its payload and the bytes that carry it.

The one owner of this rule: the simulator prices every send step with :func:`priced_bytes`
(:attr:`agent.plan.Step.wire_bytes`), the emulator frames its messages as described here
(:mod:`emulator.protocol`: a :data:`HEADER_BYTES` header, the JSON metadata of
:func:`data_meta`, then the payload, small messages in one write) and shapes the link at
``capacity / PAYLOAD_FRACTION`` wire bytes (:mod:`emulator.net.config`).

A trace's capacity is application goodput: what a saturating TCP flow of full-size segments
delivers (:data:`MSS_BYTES` payload bytes in a frame of ``MSS_BYTES +``
:data:`SEGMENT_OVERHEAD_BYTES`). A message of ``n`` payload bytes is ``n +`` framing bytes of
TCP payload, carried in ``ceil((n + framing) / MSS)`` segments, each with its Ethernet, IPv4
and TCP headers. Its price, in goodput bytes at the trace's rate, is its wire bytes times
:data:`PAYLOAD_FRACTION`: ``n`` plus ~0.96 x framing for a large message (the headers of full
segments are already in the capacity), ~130 bytes for an 8-byte token (about 16 times its
payload). Not priced: the ACKs the receiver sends back on the other direction, TCP's own
retransmissions, and the control messages around a request (``PLAN``, ``REPORT``,
``RELEASE``), which are not steps of the plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

__all__ = ["HEADER_BYTES", "MSS_BYTES", "PAYLOAD_FRACTION", "SEGMENT_OVERHEAD_BYTES",
           "data_meta", "message_wire_bytes", "priced_bytes"]

#: TCP payload bytes of a full-size segment (1500-byte MTU, IPv4, TCP timestamps)
MSS_BYTES: int = 1448
#: bytes of a segment's frame besides its payload: Ethernet 14, IPv4 20, TCP 20, timestamps 12
SEGMENT_OVERHEAD_BYTES: int = 66
#: payload bytes per wire byte of a full-size segment (1448 / 1514)
PAYLOAD_FRACTION: float = MSS_BYTES / (MSS_BYTES + SEGMENT_OVERHEAD_BYTES)
#: the fixed header of every emulator message (``emulator.protocol.HEADER_SIZE``)
HEADER_BYTES: int = 38


def data_meta(step: int, items: Sequence[int]) -> bytes:
    """The JSON metadata of the ``DATA`` message of send step ``step`` carrying ``items`` (as
    the emulator writes it in profiled mode; execute mode adds tensor descriptions)."""
    return json.dumps({"step": step, "items": list(items)}, separators=(",", ":")).encode()


def message_wire_bytes(payload: int, framing: int) -> int:
    """Bytes on the wire (frames) of a message of ``payload`` bytes after ``framing`` bytes of
    header and metadata, written at once on a TCP connection."""
    tcp = payload + framing
    return tcp + SEGMENT_OVERHEAD_BYTES * max(1, math.ceil(tcp / MSS_BYTES))


def priced_bytes(payload: int, step: int, items: Sequence[int]) -> float:
    """What the ``DATA`` message of send step ``step`` costs at a trace's rate (goodput bytes):
    :func:`message_wire_bytes` x :data:`PAYLOAD_FRACTION`."""
    framing = HEADER_BYTES + len(data_meta(step, items))
    return message_wire_bytes(payload, framing) * PAYLOAD_FRACTION
