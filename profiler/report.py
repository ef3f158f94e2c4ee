"""Reading a profile back: the block table (``show``) and the split-latency curve (``curve``).

The curve is Neurosurgeon's: for a pass with ``N`` blocks and split ``k`` (blocks ``[0, k)``
on the device, ``[k, N)`` on the MEC), latency = device time of ``[0, k)`` + upload of the cut
+ one round trip + MEC time of ``[k, N)`` + download of the pass output; ``k == N`` is all
local (no transfer, no round trip). Links are symmetric at the given bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schema import Pass, Profile, ProfileError, check_compatible

__all__ = ["SplitPoint", "batch_rows", "format_batch_curve", "format_curve", "format_table",
           "plot_batch_curve", "plot_curve", "split_curve"]


def _mb(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def _opt_mb(n: int | None) -> str:
    return "?" if n is None else _mb(n)


def _state_line(ps: Pass) -> str:
    try:
        per = ps.state_bytes(0, ps.n_blocks, 1) - ps.state_bytes(0, ps.n_blocks, 0)
        fixed = ps.state_bytes(0, ps.n_blocks, 0)
    except ProfileError as e:
        return f"  persistent state unknown: {e}"
    return f"  persistent state (all blocks): {_mb(per)} per token + {_mb(fixed)} fixed"


def format_table(p: Profile) -> str:
    """The profile as text: header, then one table per pass."""
    h = p.hardware
    lines = [f"model {p.model.name}  ({p.model.source})",
             f"parameters {dict(p.model.parameters)}",
             f"hardware {h.hw_class}: {h.description}",
             f"backend {h.backend}, threads {h.threads}, created {p.created}",
             f"command {p.command}" if p.command else ""]
    for ps in p.passes:
        s = sum(ps.block_medians_ms())
        lines += ["", f"pass {ps.name} x{ps.repeat}: {ps.n_blocks} blocks, input "
                  f"{_mb(ps.input_bytes)}, output {_mb(ps.output_bytes)}"
                  + (f"  ({ps.note})" if ps.note else ""),
                  f"  whole {ps.whole.median:.2f} ms median (p95 {ps.whole.p95:.2f}, "
                  f"{ps.whole.runs} runs"
                  + (f", cold {ps.cold_ms:.1f}" if ps.cold_ms is not None else "")
                  + f"); sum of block medians {s:.2f} ms ({100 * (s / ps.whole.median - 1):+.1f}%)"
                  if ps.whole.median > 0 else "",
                  _state_line(ps),
                  f"  {'#':>3} {'block':<34} {'median':>10} {'p95':>10} {'std':>8} {'runs':>4} "
                  f"{'cut after':>11} {'tensors':>7} {'weights':>11} {'state/token':>11} "
                  f"{'state fixed':>11}"]
        for i, b in enumerate(ps.blocks):
            lines.append(f"  {i:>3} {b.name[:34]:<34} {b.latency.median:>10.3f} "
                         f"{b.latency.p95:>10.3f} {b.latency.std:>8.3f} {b.latency.runs:>4} "
                         f"{_mb(b.out_bytes):>11} {len(b.out_tensors):>7} "
                         f"{_mb(b.weight_bytes):>11} {_opt_mb(b.state_bytes_per_token):>11} "
                         f"{_opt_mb(b.state_bytes_fixed):>11}")
        if len(ps.batch_sizes) > 1:
            lines += _batch_lines(ps)
    return "\n".join(x for x in lines if x is not None)


def batch_rows(ps: Pass) -> list[tuple[int, float, float, float]]:
    """Per measured batch size: (batch, whole median, whole p95, sum of block medians), ms."""
    return [(b, ps.whole_at(b).median, ps.whole_at(b).p95,
             sum(x.latency_at(b).median for x in ps.blocks)) for b in ps.batch_sizes]


def _batch_lines(ps: Pass) -> list[str]:
    sizes = ps.batch_sizes
    out = [f"  batch curve of {ps.name} (every size measured; a batch runs B requests at once):",
           f"  {'batch':>5} {'whole median':>12} {'p95':>10} {'runs':>4} {'ms/request':>10} "
           f"{'x batch 1':>9} {'sum of blocks':>13} {'vs whole':>8}"]
    base = ps.whole.median
    for b, med, p95, total in batch_rows(ps):
        out.append(f"  {b:>5} {med:>12.2f} {p95:>10.2f} {ps.whole_at(b).runs:>4} "
                   f"{med / b:>10.2f} {med / base if base > 0 else 0:>9.2f} {total:>13.2f} "
                   f"{100 * (total / med - 1) if med > 0 else 0:>+7.1f}%")
    out.append(f"  block medians (ms) at batch {', '.join(map(str, sizes))}:")
    for x in ps.blocks:
        out.append(f"      {x.name[:30]:<30} " + " ".join(f"{x.latency_at(b).median:>9.2f}"
                                                         for b in sizes))
    return out


def format_batch_curve(p: Profile) -> str:
    """The batch curve of every pass (whole pass per measured batch size)."""
    lines = [f"{p.model.name} on {p.hardware.hw_class} ({p.hardware.backend}, "
             f"{p.hardware.threads} threads): latency per batch size"]
    for ps in p.passes:
        if len(ps.batch_sizes) == 1:
            lines += ["", f"pass {ps.name}: batch 1 only (profile with --batch-sizes 1,2,4,8)"]
        else:
            lines += ["", f"pass {ps.name} x{ps.repeat}", *_batch_lines(ps)[1:]]
    return "\n".join(lines)


def plot_batch_curve(p: Profile, out: str | Path) -> None:
    """Whole-pass median (p95 as a band) and ms per request against batch size, per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(p.passes), 2, figsize=(10, 3.0 * len(p.passes)), squeeze=False)
    for (ax, ax2), ps in zip(axes, p.passes, strict=True):
        rows = batch_rows(ps)
        bs = [r[0] for r in rows]
        ax.plot(bs, [r[1] for r in rows], "o-", label="whole median")
        ax.fill_between(bs, [r[1] for r in rows], [r[2] for r in rows], alpha=0.2, label="to p95")
        ax.plot(bs, [r[3] for r in rows], "x--", label="sum of block medians")
        ax.plot(bs, [ps.whole.median * b for b in bs], ":", color="gray", label="linear (B x batch 1)")
        ax.set_title(f"{ps.name}: latency of one batched pass", fontsize=10)
        ax2.plot(bs, [r[1] / r[0] for r in rows], "o-")
        ax2.set_title(f"{ps.name}: ms per request", fontsize=10)
        for a in (ax, ax2):
            a.set_xscale("log", base=2)
            a.set_xticks(bs, [str(b) for b in bs])
            a.set_xlabel("batch size")
            a.set_ylabel("ms")
        ax.legend(fontsize=7)
    fig.suptitle(f"{p.model.name} on {p.hardware.hw_class} ({p.hardware.backend})", fontsize=10)
    _save(fig, out)


@dataclass(frozen=True)
class SplitPoint:
    """Latency of one split ``k`` of a pass, in milliseconds."""

    k: int
    device_ms: float
    up_bytes: int
    down_bytes: int
    network_ms: float
    mec_ms: float

    @property
    def total_ms(self) -> float:
        return self.device_ms + self.network_ms + self.mec_ms


def split_curve(dev: Pass, mec: Pass, bandwidth_mbps: float, rtt_ms: float = 0.0,
                mec_speedup: float = 1.0) -> list[SplitPoint]:
    """Latency of every split ``k = 0..N`` of one pass (device and MEC profiles of it; MEC
    block times divided by ``mec_speedup``, as the agent and the emulator do)."""
    if not mec_speedup > 0:
        raise ProfileError(f"--mec-speedup must be > 0, got {mec_speedup}")
    if bandwidth_mbps <= 0:
        raise ProfileError(f"--bandwidth-mbps must be > 0, got {bandwidth_mbps}")
    if rtt_ms < 0:
        raise ProfileError(f"--rtt-ms must be >= 0, got {rtt_ms}")
    if dev.n_blocks != mec.n_blocks:
        raise ProfileError(f"pass {dev.name!r}: device has {dev.n_blocks} blocks, MEC "
                           f"{mec.n_blocks}")
    d, m = dev.block_medians_ms(), [t / mec_speedup for t in mec.block_medians_ms()]
    n = dev.n_blocks
    out = []
    for k in range(n + 1):
        up, down = dev.upload_bytes(k), dev.download_bytes(k)
        net = 0.0 if k == n else rtt_ms + (up + down) * 8 / (bandwidth_mbps * 1e3)
        out.append(SplitPoint(k, sum(d[:k]), up, down, net, sum(m[k:])))
    return out


def _curves(dev: Profile, mec: Profile | None, bw: float, rtt: float, speedup: float
            ) -> list[tuple[Pass, list[SplitPoint]]]:
    if mec is not None:
        check_compatible(dev, mec)
    return [(p, split_curve(p, (mec or dev).pass_named(p.name), bw, rtt, speedup))
            for p in dev.passes]


def format_curve(dev: Profile, mec: Profile | None, bandwidth_mbps: float, rtt_ms: float,
                 mec_speedup: float = 1.0) -> str:
    """The split-latency table of every pass, the best split marked, and request totals."""
    src = (f"MEC times from {mec.hardware.hw_class} profile" if mec is not None else
           "no --mec profile: MEC blocks take the device's times")
    if mec_speedup != 1.0:
        src += f", divided by --mec-speedup {mec_speedup:g}"
    lines = [f"{dev.model.name}: device {dev.hardware.hw_class}; {src}; "
             f"{bandwidth_mbps:g} Mbit/s each way, RTT {rtt_ms:g} ms"]
    local = offload = best_sum = 0.0
    for p, curve in _curves(dev, mec, bandwidth_mbps, rtt_ms, mec_speedup):
        best = min(curve, key=lambda s: s.total_ms)
        lines += ["", f"pass {p.name} x{p.repeat} (k = blocks on the device; {p.n_blocks} = local)",
                  f"  {'k':>3} {'after block':<30} {'device':>10} {'up':>11} {'network':>10} "
                  f"{'mec':>10} {'total ms':>10}"]
        for s in curve:
            after = "(input)" if s.k == 0 else p.blocks[s.k - 1].name
            mark = "  <- best" if s is best else ""
            lines.append(f"  {s.k:>3} {after[:30]:<30} {s.device_ms:>10.2f} {_mb(s.up_bytes):>11} "
                         f"{s.network_ms:>10.2f} {s.mec_ms:>10.2f} {s.total_ms:>10.2f}{mark}")
        local += p.repeat * curve[-1].total_ms
        offload += p.repeat * curve[0].total_ms
        best_sum += p.repeat * best.total_ms
    lines += ["", f"request (passes x repeat): all local {local:.1f} ms, full offload "
              f"{offload:.1f} ms, best split per pass {best_sum:.1f} ms"]
    return "\n".join(lines)


def plot_curve(dev: Profile, mec: Profile | None, bandwidth_mbps: float, rtt_ms: float,
               out: str | Path, mec_speedup: float = 1.0) -> None:
    """Stacked bars (device, network, MEC) per split, one panel per pass, saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _curves(dev, mec, bandwidth_mbps, rtt_ms, mec_speedup)
    fig, axes = plt.subplots(len(curves), 1, figsize=(10, 3.2 * len(curves)), squeeze=False)
    for ax, (p, curve) in zip(axes[:, 0], curves, strict=True):
        ks = [s.k for s in curve]
        dv = [s.device_ms for s in curve]
        nw = [s.network_ms for s in curve]
        mc = [s.mec_ms for s in curve]
        ax.bar(ks, dv, label="device")
        ax.bar(ks, nw, bottom=dv, label="network")
        ax.bar(ks, mc, bottom=[a + b for a, b in zip(dv, nw, strict=True)], label="MEC")
        best = min(curve, key=lambda s: s.total_ms)
        ax.axvline(best.k, color="k", ls=":", lw=1)
        ax.set_title(f"{dev.model.name} {p.name} x{p.repeat}: best k={best.k} "
                     f"({best.total_ms:.1f} ms)", fontsize=10)
        ax.set_xlabel("split k (blocks on the device)")
        ax.set_ylabel("latency (ms)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{bandwidth_mbps:g} Mbit/s, RTT {rtt_ms:g} ms, MEC speedup {mec_speedup:g}",
                 fontsize=10)
    _save(fig, out)


def _save(fig: Any, out: str | Path) -> None:
    """Write ``fig`` to ``out`` (PNG) and close it; an unwritable path is a ProfileError."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(str(out), dpi=110)
    except OSError as e:
        raise ProfileError(f"{out}: cannot write the plot: {e.strerror or e}") from None
    finally:
        plt.close(fig)
