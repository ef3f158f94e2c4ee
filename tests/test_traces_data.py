"""Synthetic models against their documented statistics, and the bundled traces they made."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from traces import DATA_DIR, TraceError, load_trace, load_traces, synth
from traces.cli import main

README = DATA_DIR / "README.md"


def _commands() -> list[list[str]]:
    """The ``python -m traces synth ...`` lines of traces/data/README.md, as argv lists."""
    lines = re.findall(r"^python -m traces (synth .+)$", README.read_text(), flags=re.MULTILINE)
    return [shlex.split(line) for line in lines]


def test_readme_commands_regenerate_every_bundled_file(tmp_path: Path) -> None:
    commands = _commands()
    bundled = sorted(p.relative_to(DATA_DIR.parent.parent) for p in DATA_DIR.rglob("*.csv"))
    assert sorted(Path(c[-1]) for c in commands) == bundled  # every file has its command
    for argv in commands:
        out = tmp_path / Path(argv[-1]).name
        assert main([*argv[:-1], str(out)]) == 0
        assert out.read_bytes() == (DATA_DIR.parent.parent / argv[-1]).read_bytes(), argv


def test_bundled_files_are_small_and_fit_their_purpose() -> None:
    for path in DATA_DIR.rglob("*.csv"):
        assert path.stat().st_size < 200_000, path
    cell = load_trace(DATA_DIR / "cellular_120s.csv")
    assert cell.duration_s == 120.0 and 12e6 < cell.mean_bps() < 18e6
    assert cell.percentile_bps(5) > 1e6 and cell.percentile_bps(100) <= 60e6
    train = load_traces(DATA_DIR / "train")
    assert 6 <= len(train) <= 10 and all(t.duration_s == 300.0 for t in train)
    assert all("seed=" in t.source for t in train)
    assert len({t.sha256() for t in train}) == len(train)
    mm = load_trace(DATA_DIR / "mmwave_60s.csv")
    assert mm.percentile_bps(99) > 2e9 and mm.outage_fraction(100e6) > 0.02  # peaks and blockage


def test_same_seed_same_trace_and_generator_is_passed_in() -> None:
    a = synth.markov_cellular(200, np.random.default_rng(5))
    b = synth.markov_cellular(200, np.random.default_rng(5))
    c = synth.markov_cellular(200, np.random.default_rng(6))
    assert a == b and a != c
    assert synth.make("cellular", 200, seed=5) == a
    state = np.random.get_state()[1].copy()  # the legacy global RNG is left alone
    synth.make("mmwave", 10, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)


def test_markov_cellular_long_run_mean_is_the_mean_level() -> None:
    # the level walk is symmetric with reflecting ends, so its stationary law is uniform and the
    # fading has mean 1: the long-run mean is the mean of the levels (minus a little clipping)
    tr = synth.markov_cellular(40_000, np.random.default_rng(11))
    assert tr.mean_bps() / 1e6 == pytest.approx(np.mean([3, 7, 13, 20, 32]), rel=0.08)
    levels = synth.markov_cellular(5_000, np.random.default_rng(1), sigma=0.0, stay=0.9)
    changes = np.count_nonzero(np.diff(levels.rates_bps))
    assert changes / 5_000 == pytest.approx(0.1 * 0.8, abs=0.02)  # moves, minus blocked at ends


def test_blockage_time_fraction_matches_the_model() -> None:
    # blocked fraction = E[block] / (E[block] + E[LOS]) with E[block] = median * exp(sigma^2 / 2)
    tr = synth.blockage(4_000, np.random.default_rng(2), band="mmwave")
    e_block = 0.5 * np.exp(0.6**2 / 2)
    want = e_block / (e_block + 5.0)
    blocked = tr.outage_fraction(0.2 * 2000e6 - 1)  # LOS is clipped to >= 0.2 x 2 Gbit/s
    assert blocked == pytest.approx(want, abs=0.025)
    sub = synth.make("subthz", 30, seed=1)
    assert sub.percentile_bps(95) > 10e9


def test_constant_and_step() -> None:
    assert synth.constant(10, 5.0).finish_time(0.0, 625_000) == pytest.approx(1.0)
    st = synth.step(6, [2, 0, 4], 1.5)
    assert st.rates_bps.tolist() == [2e6, 0.0, 4e6, 2e6] and st.period_s == 6


@pytest.mark.parametrize(
    ("kind", "params", "match"),
    [
        ("nope", {}, "unknown synthetic kind 'nope'"),
        ("mmWave", {}, "(did you mean 'mmwave'?)"),
        ("cellular", {"stay": 2.0}, "stay must be a probability"),
        ("cellular", {"bogus": 1}, "bad parameters"),
        ("step", {"levels_mbps": [], "step_s": 1}, "levels_mbps must be non-empty"),
        ("constant", {"rate_mbps": -1}, "rate_mbps must be finite and >= 0"),
    ],
)
def test_bad_synth_parameters(kind: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(TraceError, match=re.escape(match)):
        synth.make(kind, 10, seed=0, **params)


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = DATA_DIR.parents[1] / "README.md"
    section = readme.read_text().split("## Bandwidth traces", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md (Bandwidth traces)", "exec"), {})
    out = capsys.readouterr().out
    assert "Mbit/s" in out and "mmwave" in out


@pytest.mark.parametrize("module", ["traces", "traces.trace", "traces.synth"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
