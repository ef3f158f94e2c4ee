"""The two headline figures of a run, named once: service latency and response time.

* **service latency** (``latency_s`` in a record, ``latency`` in ``summary.json``): from the
  request's first computation to its result on the device (``t_end - t_start``).
* **response time** (``response`` in ``summary.json``): from the request's arrival to its result
  (``t_end - t_arrival``): service latency plus the time it waited for the device's previous
  request, the observation echo (and a throughput probe, when one was sent) and the decision.

:func:`figures` adds to ``summary.json`` the waiting between the two (``waiting``), the
definitions, and what throughput probes cost (``probe``: requests that sent one, their bytes,
their seconds, and their share of all uplink bytes); :func:`progress_text` is the live line's
part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from emulator.records import latency_stats

__all__ = ["DEFINITIONS", "figures", "progress_text", "response_s"]

DEFINITIONS = {
    "latency": "service latency: first computation to result on the device (t_end - t_start)",
    "response": "response time: arrival to result (t_end - t_arrival): service latency plus "
                "waiting for the device, the observation echo, any throughput probe and the "
                "decision",
    "waiting": "response time - service latency (t_start - t_arrival)",
}


def response_s(rec: Mapping[str, Any]) -> float:
    """A record's response time (arrival to result), seconds."""
    return float(rec["t_end"]) - float(rec["t_arrival"])


def figures(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``waiting``, ``probe`` and ``definitions`` entries for ``summary.json``."""
    probes = [r.get("probe") or {} for r in records]
    probe_bytes = int(sum(int(p.get("bytes", 0)) for p in probes))
    upload = int(sum(int(r["phases"]["upload_bytes"]) for r in records))
    return {
        "waiting": latency_stats([float(r["t_start"]) - float(r["t_arrival"]) for r in records]),
        "probe": {
            "requests": sum(1 for p in probes if int(p.get("bytes", 0)) > 0),
            "bytes": probe_bytes,
            "seconds": float(sum(float(p.get("s", 0.0)) for p in probes)),
            "share_of_uplink_bytes": (probe_bytes / (probe_bytes + upload)
                                      if probe_bytes + upload else 0.0),
            "note": "throughput probes sent before requests whose device had no recent passive "
                    "sample; their time is in the response time, not the service latency",
        },
        "definitions": DEFINITIONS,
    }


def progress_text(records: Sequence[Mapping[str, Any]]) -> str:
    """``service X s  response Y s`` (means so far) for the live progress line."""
    if not records:
        return f"mean service {math.nan:7.3f} s  response {math.nan:7.3f} s"
    n = len(records)
    svc = sum(float(r["latency_s"]) for r in records) / n
    resp = sum(response_s(r) for r in records) / n
    return f"mean service {svc:7.3f} s  response {resp:7.3f} s"
