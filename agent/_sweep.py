"""Sweeps over scenarios x policies x seeds as Ray tasks: the part ``agent.sweep`` (simulator)
and ``emulator.sweep`` (emulator runs) share.

A *cell* is one run: a scenario file, a policy and a seed. :func:`run_sweep` runs the cells
not yet in ``OUT/results.csv`` as Ray tasks (``ray.init()`` on this machine, or the cluster at
``--address``), appends one row per finished cell as it finishes (so an interrupted sweep
keeps what it finished and the same command resumes it), then writes ``OUT/summary.csv``
(mean and 95% confidence interval over seeds, Student's t, per scenario and policy) and
``OUT/comparison.png``. Ray is imported only here, and only when there is a cell to run
(``pip install -e .[sweep]``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.defaults import load_scenario_file
from agent.errors import AgentError

__all__ = ["KEY_COLUMNS", "Cell", "add_sweep_args", "interruptible", "make_cells", "run_sweep",
           "summarise_rows", "t_quantile_975"]

KEY_COLUMNS = ("scenario", "policy", "seed", "scenario_sha256", "overrides")
_ROOT = Path(__file__).resolve().parent.parent
_SKIP = {".md", ".txt", ".json"}


@dataclass(frozen=True)
class Cell:
    """One run of a sweep."""

    scenario: str
    scenario_file: str
    scenario_sha256: str
    policy: str
    seed: int
    overrides: str = ""
    """Options the sweep gives every run on top of the scenario (e.g. ``--horizon 60``)."""

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.scenario, self.policy, str(self.seed), self.scenario_sha256,
                self.overrides)

    @property
    def slug(self) -> str:
        def clean(x: str) -> str:
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", x).strip("_-")

        over = f"__{clean(self.overrides)}" if self.overrides else ""
        return f"{clean(self.scenario)}__{clean(self.policy)}__seed{self.seed}{over}"


def interruptible() -> None:
    """Call first in a run (a Ray task): Ray cancels a running task with SIGINT, but its
    workers inherit SIGINT ignored (see :func:`_connect`); restore Python's handler."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing to restore
        signal.signal(signal.SIGINT, signal.default_int_handler)


def add_sweep_args(p: argparse.ArgumentParser, policies: str) -> None:
    """The grid and Ray options of both sweep commands."""
    p.add_argument("--scenarios", nargs="+", required=True, metavar="FILE",
                   help="scenario TOML files or folders of them (scenarios/)")
    p.add_argument("--policies", default=policies,
                   help="comma-separated policy specs, each run in every scenario")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S",
                   help="seeds, each run in every scenario with every policy")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: results.csv (a row per run; rerun to resume), "
                        "summary.csv, comparison.png, cells/ (each run's own outputs)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (HOST:PORT of `ray start --head`, or 'auto'); "
                        "default: start Ray on this machine")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs Ray may use on this machine (default: all; ignored with "
                        "--address)")


def make_cells(scenarios: Sequence[str], policies: str, seeds: Sequence[int],
               overrides: Sequence[str] = ()) -> list[Cell]:
    """The grid, in order scenario, policy, seed; scenario files checked here (one line each).
    ``overrides``: options given to every run (part of each run's key, so a sweep with other
    overrides does not skip runs made without them)."""
    files: list[Path] = []
    for s in scenarios:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.toml") if f.is_file())
            if not found:
                raise AgentError(f"{p}: folder has no scenario files (*.toml)")
            files.extend(found)
        else:
            files.append(p)
    pols = [x.strip() for x in policies.split(",") if x.strip()]
    if not pols:
        raise AgentError("--policies is empty")
    if not seeds:
        raise AgentError("--seeds is empty")
    cells: list[Cell] = []
    names: dict[str, Path] = {}
    for f in files:
        sf = load_scenario_file(f)
        if sf.name in names:
            raise AgentError(f"{f}: scenario name {sf.name!r} is also the name of "
                             f"{names[sf.name]}; give each scenario its own name")
        names[sf.name] = f
        cells += [Cell(sf.name, str(sf.path), sf.sha256, pol, int(seed), " ".join(overrides))
                  for pol in pols for seed in seeds]
    return cells


def _read_done(table: Path, columns: Sequence[str]) -> dict[tuple[str, ...], dict[str, str]]:
    if not table.is_file():
        return {}
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        if list(reader.fieldnames or []) != list(columns):
            raise AgentError(f"{table}: its columns are not this sweep's ({', '.join(columns)}); "
                             "use another --out")
        rows = list(reader)
    return {tuple(r[k] for k in KEY_COLUMNS): r for r in rows if r.get("status") == "ok"}


def _append(table: Path, columns: Sequence[str], row: dict[str, Any]) -> None:
    new = not table.is_file()
    with table.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile (two-sided 95% interval) for ``df`` degrees of freedom."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def summarise_rows(rows: Sequence[dict[str, str]], metrics: Sequence[str]
                   ) -> list[dict[str, Any]]:
    """Per (scenario, policy): seeds, and for each metric the mean over seeds and the 95%
    confidence interval half-width (``METRIC_ci95``; empty with one seed)."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["scenario"], r["policy"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (scen, pol), rs in groups.items():
        d: dict[str, Any] = {"scenario": scen, "policy": pol, "seeds": len(rs)}
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) not in (None, "", "nan")]
            n = len(vals)
            mean = sum(vals) / n if n else math.nan
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
            d[m] = mean
            d[f"{m}_ci95"] = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        out.append(d)
    return out


def _plot(summary: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str]], out: Path,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scens = list(dict.fromkeys(d["scenario"] for d in summary))
    pols = list(dict.fromkeys(d["policy"] for d in summary))
    by = {(d["scenario"], d["policy"]): d for d in summary}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    width = 0.8 / max(len(pols), 1)
    x = np.arange(len(scens))
    for ax, (m, label) in zip(axes[0], metrics, strict=True):
        for j, pol in enumerate(pols):
            ys = [by[(s, pol)][m] if (s, pol) in by else np.nan for s in scens]
            es = [by[(s, pol)][f"{m}_ci95"] if (s, pol) in by else np.nan for s in scens]
            es = [0.0 if not math.isfinite(e) else e for e in es]
            ax.errorbar(x + (j + 0.5) * width - 0.4, ys, yerr=es, fmt="o", capsize=4,
                        label=pol)
        ax.set_xticks(x, scens)
        ax.set_xlim(-0.5, len(scens) - 0.5)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _import_ray(prog: str) -> Any:
    try:
        import ray
    except ImportError as e:
        raise AgentError(f"{prog} runs on Ray, which is not installed: pip install -e .[sweep] "
                         "(or pip install ray)") from e
    return ray


def _check_address(address: str) -> None:
    """Fail fast, in one line, when nothing listens at a HOST:PORT Ray address."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise AgentError(f"--address {address!r}: use HOST:PORT (the address `ray start --head` "
                         "prints, e.g. 10.0.0.5:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as e:
        raise AgentError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one "
                         "there with `ray start --head --port PORT`, or leave out --address to "
                         "run on this machine") from e


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null for the block (native code writes there too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _connect(ray: Any, address: str | None, num_cpus: int | None,
             resources: dict[str, float] | None) -> None:
    import logging

    # workers import this checkout's packages (a local cluster inherits this environment)
    path = os.environ.get("PYTHONPATH", "")
    if str(_ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(_ROOT), path) if x)
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR,
                          "include_dashboard": False}
    if address is not None:
        _check_address(address)
        try:
            with _quiet_stderr():  # Ray's C++ client logs every retry to fd 2
                ray.init(address=address, **kw)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ...
            raise AgentError(f"could not join the Ray cluster at {address}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        return
    # Ray's daemons (GCS, raylet) join this process group: started with SIGINT ignored
    # (inherited through exec), a terminal's Ctrl-C reaches only this process, which then
    # cancels the runs through them and stops them in order
    prev = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.init(num_cpus=num_cpus, resources=resources,
                 object_store_memory=200 * 1024 * 1024, **kw)
    finally:
        signal.signal(signal.SIGINT, prev)


def run_sweep(cells: Sequence[Cell], runner: Callable[..., dict[str, Any]],
              runner_args: Sequence[Any], out: Path, columns: Sequence[str],
              plot_metrics: Sequence[tuple[str, str]], *, prog: str, address: str | None,
              num_cpus: int | None, task_options: dict[str, Any] | None = None,
              local_resources: dict[str, float] | None = None) -> int:
    """Run the cells missing from ``out/results.csv``; returns the exit status (130: Ctrl-C).

    :param runner: ``runner(cell, out, *runner_args) -> row`` (a module-level function: Ray
        ships it to its workers); the row holds ``columns``.
    """
    columns = [*KEY_COLUMNS, *[c for c in columns if c not in KEY_COLUMNS]]
    if address is not None:
        _check_address(address)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    table = out / "results.csv"
    done = _read_done(table, columns)
    todo = [c for c in cells if c.key() not in done]
    print(f"{prog}: {len(cells)} runs ({len({c.scenario for c in cells})} scenarios x "
          f"{len({c.policy for c in cells})} policies x {len({c.seed for c in cells})} seeds); "
          f"{len(cells) - len(todo)} already in {table}, {len(todo)} to run", flush=True)
    status = 0
    if todo:
        ray = _import_ray(prog)
        _connect(ray, address, num_cpus, local_resources)
        pending: dict[Any, Cell] = {}
        try:
            # a failed run is recorded as failed (and retried by the next sweep), not retried
            remote = ray.remote(runner).options(max_retries=0,
                                                **(task_options or {"num_cpus": 1}))
            pending = {remote.remote(c, str(out), *runner_args): c for c in todo}
            finished = 0
            while pending:
                # a short timeout: Ctrl-C reaches Python only between calls into Ray
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as e:  # the task raised: record it, keep going
                        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                        row = {"status": "failed", "error": msg[:300]}
                    row = {**asdict(cell), **row}
                    _append(table, columns, row)
                    finished += 1
                    what = (f"{row.get('status')}" if row.get("status") != "ok" else
                            f"mean {float(row.get('mean_s') or math.nan):.3f} s")
                    print(f"{prog}: [{finished}/{len(todo)}] {cell.scenario} {cell.policy} "
                          f"seed {cell.seed}: {what}{': ' + str(row.get('error')) if row.get('error') else ''}",
                          flush=True)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            deadline = time.monotonic() + 90
            while pending and time.monotonic() < deadline:
                # let cancelled runs stop cleanly (an emulator run removes its network)
                _, rest = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                pending = {r: pending[r] for r in rest}
            print(f"{prog}: interrupted: the finished runs are kept in {table}; the same "
                  "command resumes the sweep", file=sys.stderr)
            status = 130
        finally:
            ray.shutdown()
    with table.open(newline="") if table.is_file() else open(os.devnull) as f:
        rows = list(csv.DictReader(f))
    summ = summarise_rows(rows, [m for m, _ in plot_metrics])
    order = {k: i for i, k in enumerate(dict.fromkeys((c.scenario, c.policy) for c in cells))}
    summ.sort(key=lambda d: order.get((d["scenario"], d["policy"]), len(order)))
    if summ:
        scols = ["scenario", "policy", "seeds",
                 *[c for m, _ in plot_metrics for c in (m, f"{m}_ci95")]]
        with (out / "summary.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=scols)
            w.writeheader()
            w.writerows(summ)
        _print_summary(summ, plot_metrics)
        _plot(summ, plot_metrics, out / "comparison.png",
              f"{prog}: mean over seeds, 95% CI (Student's t)")
        print(f"{prog}: wrote {table}, {out / 'summary.csv'}, {out / 'comparison.png'}")
    failed = sum(1 for r in rows if r.get("status") != "ok")
    if failed and status == 0:
        print(f"{prog}: {failed} run(s) failed (status column of {table}); rerun to retry them",
              file=sys.stderr)
        status = 1
    return status


def _print_summary(summ: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str]]) -> None:
    head = f"{'scenario':<14} {'policy':<12} {'seeds':>5}" + "".join(
        f" {m:>20}" for m, _ in metrics)
    print(head)
    print("-" * len(head))
    for d in summ:
        cells = "".join(f" {d[m]:10.4f} ± {d[f'{m}_ci95']:<7.4f}" for m, _ in metrics)
        print(f"{d['scenario']:<14} {d['policy']:<12} {d['seeds']:>5}{cells}")
