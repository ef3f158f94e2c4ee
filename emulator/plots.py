"""Plots of a run: service latency and response time (:mod:`emulator.figures`) over time
against link capacity, and their CDFs (PNG).

The timeline's capacity and measured goodput are both per-window means over the link rows'
windows (``link.csv``, the shaper's ``sample_s``), so they compare like with like; without link
rows the capacity is the trace's own steps. Goodput is what device 0's application sent: below
capacity when the application sends little, which is not a shaping limit.

Uses matplotlib's Agg backend (no display needed, works under sudo).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.figures import response_s

__all__ = ["plot_cdf", "plot_run", "plot_timeline"]


def plot_timeline(path: Path, records: Sequence[Mapping[str, Any]],
                  capacity_at: Callable[[float], float], duration_s: float,
                  link_rows: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Service latency and response time (points at their finish time, per device) over
    uplink capacity; returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    end = max([duration_s, *(float(r["t_end"]) for r in records)])
    ax2 = ax.twinx()
    up = [r for r in link_rows if r.get("goodput_mbps") is not None
          and str(r.get("direction", "up")) == "up"]
    rows = [r for r in up if str(r.get("device")) == "-1"]  # a shared cell's total
    who = "the cell" if rows else "device 0"
    rows = rows or [r for r in up if str(r.get("device", 0)) == "0"]
    if rows:
        t_s = [float(r["t_s"]) for r in rows]
        win = min((b - a for a, b in itertools.pairwise(t_s) if b > a), default=1.0)
        caps = [float(r["capacity_mbps"]) for r in rows]
        ax2.step([*t_s, t_s[-1] + win], [*caps, caps[-1]], where="post", color="0.6", lw=1.2,
                 label=f"capacity, {who} (mean per {win:g} s window)")
        ax2.plot([t + win / 2 for t in t_s], [float(r["goodput_mbps"]) for r in rows], ".",
                 color="0.35", ms=3,
                 label=f"goodput the application sent, {who} (per {win:g} s window)")
    else:
        ts = np.linspace(0.0, end, 600)
        ax2.step(ts, [capacity_at(float(t)) / 1e6 for t in ts], where="post", color="0.6",
                 lw=1.2, label="trace capacity, device 0 (the trace's steps)")
    ax2.set_ylabel("Mbit/s")
    ax2.set_ylim(bottom=0)
    devices = sorted({int(r["device"]) for r in records})
    for d in devices:
        rs = [r for r in records if int(r["device"]) == d]
        line = ax.plot([float(r["t_end"]) for r in rs], [float(r["latency_s"]) for r in rs],
                       "o", ms=4, label=f"device {d} service latency")[0]
        ax.plot([float(r["t_end"]) for r in rs], [response_s(r) for r in rs], "o", ms=6,
                mfc="none", color=line.get_color(), label=f"device {d} response time")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("time (s, trace time)")
    ax.set_ylabel("seconds (filled: service latency, hollow: response time)")
    ax.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    if len(h1) > 10:  # many devices: one entry per figure, not per device
        h1, l1 = h1[:2], ["service latency (first computation to result)",
                          "response time (arrival to result)"]
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7)
    ax.set_title("Service latency and response time of each request (at its finish) and "
                 "uplink capacity", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return l1 + l2


def plot_cdf(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Empirical CDFs of service latency and response time, per policy, with the simulator's
    prediction if any; for a model that streams tokens also TTFT and TPOT per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = any(isinstance(r.get("tpot_s"), (int, float)) for r in records)
    fig, axes = plt.subplots(1, 3 if tokens else 1, figsize=(15 if tokens else 6, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(f"{r.get('policy')} service latency", []).append(
            float(r["latency_s"]))
    for r in records:
        groups.setdefault(f"{r.get('policy')} response time", []).append(response_s(r))
    pred = [float(r["predicted_latency_s"]) for r in records
            if isinstance(r.get("predicted_latency_s"), (int, float))]
    if pred:
        groups["simulator prediction (service latency, idle MEC)"] = pred
    for name, vals in groups.items():
        v = np.sort(np.asarray(vals))
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{name} (n={v.size})",
                ls="--" if name.startswith("simulator") else
                ":" if name.endswith("response time") else "-")
    ax.set_xlabel("seconds")
    ax.set_title("CDF of service latency and response time")
    if tokens:  # an LLM: time to first token and time per output token, per policy
        for a, key, label in ((axes[0][1], "ttft_s", "time to first token (s)"),
                              (axes[0][2], "tpot_s", "time per output token (s)")):
            by: dict[str, list[float]] = {}
            for r in records:
                if isinstance(r.get(key), (int, float)):
                    by.setdefault(str(r.get("policy")), []).append(float(r[key]))
            for name, vals in by.items():
                v = np.sort(np.asarray(vals))
                a.step(v, np.arange(1, v.size + 1) / v.size, where="post",
                       label=f"{name} (n={v.size})")
            a.set_xlabel(label)
            a.set_title(f"CDF of {label.split(' (')[0]}")
    for a in axes[0]:
        a.set_ylabel("CDF")
        a.set_ylim(0, 1)
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
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
