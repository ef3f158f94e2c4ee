"""Readers and writers: every real trace in ../shared/traces, round trips, and bad input."""

from __future__ import annotations

import csv
import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import (
    Trace,
    TraceError,
    TraceWarning,
    detect_format,
    load_trace,
    load_traces,
    write_trace,
)
from traces.readers import trace_from_mahimahi
from traces.writers import mahimahi_timestamps

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"


def _shared(folder: str, pattern: str) -> list[Path]:
    d = SHARED / folder
    return sorted(d.glob(pattern)) if d.is_dir() else []


MAHIMAHI = _shared("mahimahi", "*.[ud][po]*")
FIVE_G = _shared("5g", "*.csv")
PENSIEVE = [p for p in _shared("pensieve", "*") if p.is_file()]
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real traces not present at {SHARED} (the shared folder beside the repo)"
)


def _quiet_load(path: Path, *args: object, **kw: object) -> Trace:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        return load_trace(path, *args, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- real traces
@needs_shared
def test_shared_folders_are_all_found() -> None:
    assert len(MAHIMAHI) == 8 and len(FIVE_G) == 10 and len(PENSIEVE) >= 100


@needs_shared
@pytest.mark.parametrize("path", MAHIMAHI, ids=lambda p: p.name)
def test_mahimahi_mean_and_exact_round_trip(path: Path, tmp_path: Path) -> None:
    lines = path.read_text().split()
    period_ms = int(lines[-1])
    independent = len(lines) * 1448 * 8 / (period_ms / 1000)  # goodput of 1500-byte packets
    tr = _quiet_load(path)
    assert detect_format(path) == "mahimahi"
    assert tr.period_s == period_ms / 1000
    assert tr.mean_bps() == pytest.approx(independent, rel=1e-9)
    out = tmp_path / path.name
    write_trace(tr, out, "mahimahi")
    assert out.read_text().split() == lines


@needs_shared
@pytest.mark.parametrize("path", FIVE_G, ids=lambda p: p.name)
def test_5g_means_match_plain_average(path: Path) -> None:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for direction, column in (("down", "DL_bitrate"), ("up", "UL_bitrate")):
        plain = sum(float(r[column]) for r in rows) / len(rows) * 1000
        tr = _quiet_load(path, direction=direction)
        assert tr.duration_s == len(rows)
        assert tr.mean_bps() == pytest.approx(plain, rel=1e-9)
    assert detect_format(path) == "5g"


@needs_shared
def test_pensieve_means_match_time_weighted_average() -> None:
    assert PENSIEVE
    for path in PENSIEVE:
        pairs = [tuple(map(float, ln.split())) for ln in path.read_text().splitlines() if ln.strip()]
        times = [t for t, _ in pairs]
        durations = [b - a for a, b in itertools.pairwise(times)]
        durations.append(durations[-1] if durations else 1.0)  # last sample lasts as the one before
        plain = sum(r * d for (_, r), d in zip(pairs, durations, strict=True)) / sum(durations) * 1e6
        tr = _quiet_load(path)
        assert tr.mean_bps() == pytest.approx(plain, rel=1e-9), path.name
        assert tr.duration_s == pytest.approx(sum(durations))


@needs_shared
def test_load_traces_is_sorted_and_deterministic() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        first = load_traces(SHARED / "5g")
        again = load_traces(list(reversed(FIVE_G)))
    assert [t.name for t in first] == sorted(p.name for p in FIVE_G)  # README skipped
    assert [t.sha256() for t in first] == [t.sha256() for t in again]


@needs_shared
def test_long_zero_gap_warns_with_file_name() -> None:
    path = SHARED / "mahimahi" / "TMobile-UMTS-driving.down"
    with pytest.warns(TraceWarning, match=re.escape(f"{path}: 1 zero-capacity gap")):
        load_trace(path)


# ---------------------------------------------------------------- round trips
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=60).filter(lambda s: max(s) > 0))
def test_mahimahi_stamps_round_trip(stamps: list[int]) -> None:
    stamps = sorted(stamps)
    tr = trace_from_mahimahi(stamps)
    assert mahimahi_timestamps(tr).tolist() == stamps
    assert tr.mean_bps() == pytest.approx(len(stamps) * 1448 * 8 / (stamps[-1] / 1000))


def test_csv_round_trip(tmp_path: Path) -> None:
    tr = Trace(np.array([0.0, 0.1, 0.35]), np.array([1.5e6, 0.0, 2.345678e9]), 1.2, name="x")
    write_trace(tr, tmp_path / "x.csv", "csv")
    back = load_trace(tmp_path / "x.csv")
    assert back.period_s == tr.period_s
    np.testing.assert_array_equal(back.times_s, tr.times_s)
    np.testing.assert_allclose(back.rates_bps, tr.rates_bps, rtol=1e-14)


def test_mahimahi_from_a_non_mahimahi_trace(tmp_path: Path) -> None:
    tr = Trace(np.array([0.0, 0.5]), np.array([12e6, 1e6]), 1.0)  # 750 kB + 62.5 kB per second
    write_trace(tr, tmp_path / "a.down")
    stamps = [int(x) for x in (tmp_path / "a.down").read_text().split()]
    assert stamps[-1] == 1000 and stamps == sorted(stamps)
    # a line is a 1500-byte IP packet: 1448 B of TCP payload (goodput), as Mahimahi replays it
    assert len(stamps) == (750_000 + 62_500) // 1448
    assert stamps[516] <= 500 < stamps[517]  # 750 kB / 1448 B = 517.96 packets in the fast half


def test_mahimahi_writer_refuses_an_empty_trace(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="at least one delivery opportunity"):
        write_trace(Trace(np.zeros(1), np.zeros(1), 1.0, name="dead"), tmp_path / "d.up")


def test_lumos_and_generic_csv(tmp_path: Path) -> None:
    lumos = tmp_path / "lumos.csv"
    lumos.write_text("run_num,seq_num,Throughput,mobility_mode\n1,1,100.5,walking\n1,2,0,walking\n1,3,50,walking\n")
    tr = load_trace(lumos)
    assert detect_format(lumos) == "lumos"
    assert tr.mean_bps() == pytest.approx((100.5 + 0 + 50) / 3 * 1e6)
    generic = tmp_path / "g.csv"
    generic.write_text("0,10\n2,20\n")  # no header: time_s,mbps; last row lasts 2 s
    g = load_trace(generic)
    assert (g.period_s, g.mean_bps()) == (4.0, 15e6)
    scaled = load_trace(generic, scale=0.5)
    assert scaled.mean_bps() == 7.5e6 and "scaled(0.5)" in scaled.source


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "samples.txt"
    path.write_text("0 1.0\n1 3.0\n")
    assert load_trace(path).mean_bps() == 2e6  # detected as pensieve
    with pytest.raises(TraceError, match=re.escape(f"{path}:1: expected a non-negative integer")):
        load_trace(path, "mahimahi")
    with pytest.raises(TraceError, match="unknown trace format 'nope'"):
        load_trace(path, "nope")
    with pytest.raises(TraceError, match=re.escape("(did you mean 'mahimahi'?)")):
        load_trace(path, "mahimah")


# ---------------------------------------------------------------- bad input
BAD = [
    ("empty.down", b"", "", "empty file"),
    ("blank.csv", b"\n\n  \n", "", "empty file"),
    ("garbage.up", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ":3", "binary data"),
    ("latin.log", b"0 1.0\n1 \xff\xfe\n", ":2", "not UTF-8"),
    ("back.down", b"0\n5\n3\n9\n", ":3", "non-decreasing (3 after 5)"),
    ("word.up", b"1\n2\nabc\n", ":3", "integer millisecond timestamp"),
    ("zero.up", b"0\n0\n", ":2", "must be > 0 ms"),
    ("back.log", b"0 1\n2 1\n1 1\n", ":3", "strictly increasing"),
    ("neg.log", b"0 1\n1 -2\n", ":2", "Mbps must be >= 0"),
    ("nan.log", b"0 1\n1 nan\n", ":2", "must be finite"),
    ("cols.log", b"0 1 2\n", ":1", "2 columns"),
    ("nocol.csv", b"Timestamp,DL_bitrate\nx,1\n", ":1", "missing column 'UL_bitrate'"),
    ("nocol2.csv", b"time_s,rate\n0,1\n", ":1", "missing column 'mbps'"),
    ("neg5g.csv", b"Timestamp,DL_bitrate,UL_bitrate\na,10,1\nb,-5,1\n", ":3", "DL_bitrate (kbit/s) must be >= 0"),
    ("dash5g.csv", b"Timestamp,DL_bitrate,UL_bitrate\na,-,1\n", ":2", "must be a number"),
    ("hole.csv", b"time_s,mbps\n0,1\n1,\n", ":3", "no value in column 'mbps'"),
    ("header.csv", b"time_s,mbps\n", "", "no samples"),
    ("what.dat", b"a;b;c\n", ":1", "cannot detect the trace format"),
]


@pytest.mark.parametrize(("name", "content", "line", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_and_line(
    tmp_path: Path, name: str, content: bytes, line: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    kwargs = {"nocol.csv": {"direction": "up"}, "cols.log": {"fmt": "pensieve"}}.get(name, {})
    with pytest.raises(TraceError, match=re.escape(message)) as info:
        load_trace(path, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{path}{line}:")


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace file"):
        load_trace(tmp_path / "nope.down")


def test_all_zero_trace_loads_with_a_warning_then_never_finishes(tmp_path: Path) -> None:
    path = tmp_path / "dead.log"
    path.write_text("0 0\n1 0\n2 0\n")
    with pytest.warns(TraceWarning, match="zero capacity everywhere"):
        tr = load_trace(path)
    with pytest.raises(TraceError, match=re.escape("dead.log: the trace has zero capacity")):
        tr.finish_time(0.5, 1000)
