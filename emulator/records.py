"""The run's outputs: ``requests.jsonl`` (flushed per request), ``link.csv``, ``summary.json``.

:class:`RecordSink` is fed request records as they finish (from several device reader
threads), adds the simulator's prediction for the same request when a predictor is given, and
writes each one as a JSON line, flushed at once, so an interrupted run keeps every finished
request. :func:`summarize` turns the records into the counts and latency statistics of
``summary.json``.

A record (times in seconds of the trace, i.e. since the run's ``t0``; sizes in bytes)::

    device, request            device index, request number on that device
    workload, repeats          model name, repetitions of every pass in this request
    policy, split, splits      policy name, its action index, the split of every pass
    compute                    "profiled" or "execute"
    t_arrival, t_decide        arrival (Poisson or closed loop), start of observe+decide
    t_start, t_end, latency_s  the request's run: service latency = t_end - t_start
    response_s                 t_end - t_arrival (waiting for the device included)
    ttft_s, tpot_s             first user-visible output (token) after t_start; mean gap
                               between later ones (None with fewer than two)
    token_times                every user-visible output's arrival, relative to t_start
    queue_s, decide_s          waiting at the device, observing + deciding
    observation                what the policy saw (throughput_bps, rtt_s, MEC queue state)
    phases                     totals: device_s, upload_s, upload_bytes, mec_wait_s, mec_s,
                               download_s, download_bytes (device and MEC work overlap
                               streaming, so they need not sum to latency_s)
    steps                      one row per plan step, fields of agent.latency.StepTiming
    predicted_latency_s        agent.latency.simulate_request for the same request (idle MEC)
    predicted                  its latency_s, ttft_s, tpot_s and phases
    check                      execute mode: outputs vs local execution (ok, max_abs_diff)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = [
    "MIN_FREE_BYTES",
    "RecordSink",
    "check_out_dir",
    "latency_stats",
    "read_records",
    "summarize",
    "tolerate_log_errors",
    "write_atomic",
    "write_link_csv",
]

Predictor = Callable[[dict[str, Any]], dict[str, Any] | None]


class RecordSink:
    """Thread-safe writer of ``requests.jsonl`` with live counters for the progress line.

    Each record is one ``write`` of its whole line; if the file system refuses part of it (full,
    read-only, gone), the file is cut back to the last whole line, :attr:`error` says what
    happened (naming the file) and later records are dropped (counted in :attr:`dropped`): a
    torn last line is never left behind."""

    def __init__(self, path: Path, predictor: Predictor | None = None) -> None:
        self.path = path
        self.predictor = predictor
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._size = 0
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.prediction_errors = 0
        self.error: str | None = None
        self.dropped = 0

    def add(self, rec: dict[str, Any]) -> None:
        if self.predictor is not None:
            try:
                pred = self.predictor(rec)
            except Exception as e:  # a broken predictor must not lose the measured record
                pred = None
                rec["predicted_error"] = f"{type(e).__name__}: {e}"
                self.prediction_errors += 1
            if pred is not None:
                rec["predicted"] = pred
                rec["predicted_latency_s"] = pred.get("latency_s")
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self.error is not None or self._fd < 0:
                self.dropped += 1
                return
            try:
                done = 0
                while done < len(data):
                    done += os.write(self._fd, data[done:])
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                self.error = f"cannot write {self.path}: {e.strerror or e}"
                self.dropped += 1
                return
            self._size += len(data)
            self.records.append(rec)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it); on failure the
    temporary file is removed and the ``OSError`` raised."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


MIN_FREE_BYTES = 1 << 20
"""Free space ``--out`` must have before a run starts (results of a short run: ~0.1-1 MB)."""


def check_out_dir(out: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Create ``out`` (and missing parents) and check that a file can be written in it and that
    its file system has ``min_free`` bytes free; on failure remove every directory this call
    created and raise :class:`~emulator.errors.OutputError` naming the path."""
    from emulator.errors import OutputError

    created: list[Path] = []
    p = out
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        for d in reversed(created):
            d.mkdir()
        probe = out / f".write-test-{os.getpid()}"
        with probe.open("wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        free = shutil.disk_usage(out).free
        if free < min_free:
            raise OutputError(f"--out {out}: only {free // 1024} KiB free on its file system, "
                              f"need at least {min_free // 1024} KiB; free some space or "
                              "choose another directory")
    except OSError as e:
        with contextlib.suppress(OSError):
            (out / f".write-test-{os.getpid()}").unlink()
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise OutputError(f"--out {out}: cannot write there: {e.strerror or e}") from None
    except OutputError:
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


class _TolerantStream(io.TextIOBase):
    """A log stream whose write errors (a full disk) are dropped instead of raised."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, s: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            self._inner.write(s)
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._inner.flush()


def tolerate_log_errors() -> None:
    """Make this process's stderr drop write errors: a log file on a full disk must not kill a
    device or the MEC (the run reports the full disk once, from ``requests.jsonl``)."""
    sys.stderr = _TolerantStream(sys.stderr)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read ``requests.jsonl`` (skips a torn last line of a killed run)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def latency_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, p50, p95, max of latencies (``None`` when empty)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean_s": None, "p50_s": None, "p95_s": None, "max_s": None}
    return {"n": int(a.size), "mean_s": float(a.mean()), "p50_s": float(np.percentile(a, 50)),
            "p95_s": float(np.percentile(a, 95)), "max_s": float(a.max())}


def _opt(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float))]


def _token_stats(recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """TTFT and TPOT (p50, p95) of some records, for a per-policy row."""
    out: dict[str, Any] = {}
    for key in ("ttft", "tpot"):
        st = latency_stats(_opt(r.get(f"{key}_s") for r in recs))
        out[f"{key}_p50_s"], out[f"{key}_p95_s"] = st["p50_s"], st["p95_s"]
    return out


def summarize(records: Iterable[Mapping[str, Any]],
              parity: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """Counts and latency statistics (service latency, response time, TTFT, TPOT) overall,
    per policy and per device; simulator vs emulator error per request with an idle MEC and,
    with ``parity`` (:meth:`emulator.run._Simulator.parity`), under the run's contention."""
    recs = list(records)
    lat = [float(r["latency_s"]) for r in recs]
    by_policy: dict[str, list[float]] = {}
    by_device: dict[str, list[float]] = {}
    for r in recs:
        by_policy.setdefault(str(r.get("policy")), []).append(float(r["latency_s"]))
        by_device.setdefault(str(r.get("device")), []).append(float(r["latency_s"]))
    offloaded = sum(1 for r in recs if r["phases"]["upload_bytes"] > 0)
    out: dict[str, Any] = {
        "requests": len(recs), "offloaded": offloaded, "local": len(recs) - offloaded,
        "latency": latency_stats(lat),
        "response": latency_stats([float(r["t_end"]) - float(r["t_arrival"]) for r in recs]),
        "ttft": latency_stats(_opt(r.get("ttft_s") for r in recs)),
        "tpot": latency_stats(_opt(r.get("tpot_s") for r in recs)),
        "per_policy": {k: {**latency_stats(v), **_token_stats(
            [r for r in recs if str(r.get("policy")) == k])} for k, v in sorted(by_policy.items())},
        "per_device": {k: latency_stats(v) for k, v in sorted(by_device.items())},
        "phase_totals_s": {k: float(sum(r["phases"][k] for r in recs)) for k in (
            "device_s", "upload_s", "mec_wait_s", "mec_s", "download_s")},
        "bytes": {"upload": int(sum(r["phases"]["upload_bytes"] for r in recs)),
                  "download": int(sum(r["phases"]["download_bytes"] for r in recs))},
    }
    checked = [r["check"] for r in recs if isinstance(r.get("check"), dict)]
    if checked:
        out["execute_check"] = {
            "requests": len(checked), "failed": sum(1 for c in checked if not c.get("ok")),
            "passes_checked": int(sum(c.get("passes_checked", 0) for c in checked)),
            "max_abs_diff": max(float(c.get("max_abs_diff", 0.0)) for c in checked)}
    pred = [r for r in recs if isinstance(r.get("predicted_latency_s"), (int, float))
            and r["predicted_latency_s"] > 0]
    if pred:
        m = np.array([float(r["latency_s"]) for r in pred])
        p = np.array([float(r["predicted_latency_s"]) for r in pred])
        w = np.array([float(r["phases"]["mec_wait_s"]) for r in pred])
        rel, rel_w = (m - p) / p, (m - (p + w)) / (p + w)
        out["simulator"] = {
            "n": len(pred), "mean_measured_s": float(m.mean()),
            "mean_predicted_s": float(p.mean()),
            "median_rel_error": float(np.median(rel)),
            "p95_abs_rel_error": float(np.percentile(np.abs(rel), 95)),
            "median_rel_error_given_mec_wait": float(np.median(rel_w)),
            "p95_abs_rel_error_given_mec_wait": float(np.percentile(np.abs(rel_w), 95)),
            "note": "relative error (measured - predicted) / predicted of "
                    "agent.latency.simulate_request with the trace as replayed, the request's "
                    "decision and start time and an idle MEC; '_given_mec_wait' adds the "
                    "measured MEC wait to the prediction",
        }
    if parity is not None and recs:
        out["simulator_replay"] = parity([dict(r) for r in recs])
    return out


def write_link_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the network's per-interval link rows (capacity and measured goodput)."""
    cols: list[str] = ["t_s", "device", "capacity_mbps", "goodput_mbps"]
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(dict(r))
    write_atomic(path, buf.getvalue())
