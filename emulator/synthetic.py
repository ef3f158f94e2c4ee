"""Small synthetic profiles for tests, benchmarks and development without the profiler.

:func:`synthetic_profile` builds an LLM-shaped profile (``prefill`` once, ``decode`` ``tokens``
times) with chosen block times and cut sizes, so the device/MEC processes can be exercised
without ONNX and with known, exact numbers.
"""

from __future__ import annotations

from pathlib import Path

from profiler.schema import Block, Hardware, LatencyStats, ModelInfo, Pass, Profile, save_profile

__all__ = ["synthetic_profile", "write_synthetic_pair"]


def _stats(ms: float, cv: float) -> LatencyStats:
    return LatencyStats(median=ms, p95=ms * (1 + 2 * cv), mean=ms, std=ms * cv, runs=10)


def synthetic_profile(model: str = "toy", hw_class: str = "device", n_blocks: int = 4,
                      block_ms: float = 5.0, decode_block_ms: float = 1.0,
                      cut_bytes: int = 200_000, decode_cut_bytes: int = 3_072,
                      tokens: int = 4, cv: float = 0.02) -> Profile:
    """An LLM-shaped profile: ``prefill`` (cut ``cut_bytes``) and ``decode`` x ``tokens``."""
    def blocks(ms: float, cut: int) -> tuple[Block, ...]:
        return tuple(Block(name=f"b{i}", latency=_stats(ms, cv), out_bytes=cut,
                           weight_bytes=1_000_000) for i in range(n_blocks))

    passes = (
        Pass("prefill", 1, blocks(block_ms, cut_bytes), _stats(block_ms * n_blocks, cv),
             input_bytes=1024, output_bytes=8),
        Pass("decode", tokens, blocks(decode_block_ms, decode_cut_bytes),
             _stats(decode_block_ms * n_blocks, cv), input_bytes=8, output_bytes=8),
    )
    hw = Hardware(hw_class=hw_class, cpu="synthetic", gpu=None, threads=1, backend="synthetic",
                  description="synthetic profile for tests")
    return Profile(model=ModelInfo(model, "emulator.synthetic"), hardware=hw, passes=passes)


def write_synthetic_pair(directory: str | Path, mec_speedup: float = 4.0,
                         **kw: float | int | str) -> tuple[Path, Path]:
    """Write ``toy.device.json`` and ``toy.mec.json`` (MEC blocks ``mec_speedup`` x faster)."""
    d = Path(directory)
    dev = synthetic_profile(hw_class="device", **kw)  # type: ignore[arg-type]
    mkw = dict(kw)
    mkw["block_ms"] = float(kw.get("block_ms", 5.0)) / mec_speedup
    mkw["decode_block_ms"] = float(kw.get("decode_block_ms", 1.0)) / mec_speedup
    mec = synthetic_profile(hw_class="mec", **mkw)  # type: ignore[arg-type]
    pd, pm = d / "toy.device.json", d / "toy.mec.json"
    save_profile(dev, pd)
    save_profile(mec, pm)
    return pd, pm
