"""Plots of a run: latency over time against link capacity, and the latency CDF (PNG).

Uses matplotlib's Agg backend (no display needed, works under sudo).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_cdf", "plot_run", "plot_timeline"]


def plot_timeline(path: Path, records: Sequence[Mapping[str, Any]],
                  capacity_at: Callable[[float], float], duration_s: float,
                  link_rows: Sequence[Mapping[str, Any]] = ()) -> None:
    """Request latency (points at their finish time, per device) over trace capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    end = max([duration_s, *(float(r["t_end"]) for r in records)])
    ts = np.linspace(0.0, end, 600)
    ax2 = ax.twinx()
    ax2.step(ts, [capacity_at(float(t)) / 1e6 for t in ts], where="post", color="0.6",
             lw=1.2, label="trace capacity")
    rows = [r for r in link_rows if r.get("goodput_mbps") is not None
            and str(r.get("device", 0)) in ("0", "cell")]
    if rows:
        ax2.plot([float(r["t_s"]) for r in rows], [float(r["goodput_mbps"]) for r in rows],
                 ".", color="0.35", ms=3, label="measured goodput (device 0)")
    ax2.set_ylabel("Mbit/s")
    ax2.set_ylim(bottom=0)
    devices = sorted({int(r["device"]) for r in records})
    for d in devices:
        rs = [r for r in records if int(r["device"]) == d]
        ax.plot([float(r["t_end"]) for r in rs], [float(r["latency_s"]) for r in rs], "o",
                ms=4, label=f"device {d}")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("time (s, trace time)")
    ax.set_ylabel("request latency (s)")
    ax.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    if len(h1) <= 10:
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title("Request latency and uplink capacity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cdf(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Empirical CDF of request latency, per policy, with the simulator's prediction if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(str(r.get("policy")), []).append(float(r["latency_s"]))
    pred = [float(r["predicted_latency_s"]) for r in records
            if isinstance(r.get("predicted_latency_s"), (int, float))]
    if pred:
        groups["simulator prediction"] = pred
    for name, vals in groups.items():
        v = np.sort(np.asarray(vals))
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=name,
                ls="--" if name == "simulator prediction" else "-")
    ax.set_xlabel("request latency (s)")
    ax.set_ylabel("CDF")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    ax.set_title("Latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(out_dir: Path, records: Sequence[Mapping[str, Any]],
             capacity_at: Callable[[float], float], duration_s: float,
             link_rows: Sequence[Mapping[str, Any]] = ()) -> list[Path]:
    """Write ``latency_timeline.png`` and ``latency_cdf.png``; returns their paths."""
    a, b = out_dir / "latency_timeline.png", out_dir / "latency_cdf.png"
    plot_timeline(a, records, capacity_at, duration_s, link_rows)
    plot_cdf(b, records)
    return [a, b]
