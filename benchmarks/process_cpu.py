"""Where the CPU and memory go in an emulator run, per kind of process (root).

Starts ``emulator.run`` with the given arguments, samples every process of the run (the run
and all its descendants, found through /proc) once a second, and prints per kind of process
(device, MEC, delay relay, shaper, the run itself, other) the CPU seconds used, the share of
all, the mean per process (all of it, and after trace time 0: start-up excluded) and the memory
(RSS sum, RSS and PSS per process, at the sample with the most memory; PSS shares the pages of
shared libraries among the processes that map them). Also how busy the machine was (every
core, whoever used it), over the whole run and after t0. Example, the 64-device run of issue 13:

    sudo PYTHONPATH=$PWD .venv/bin/python benchmarks/process_cpu.py -- \\
        --devices 64 --shared-cell --policy offload --mec-speedup 10 --mec-model slots --mec-slots 4 --duration 30

Notes: CPU seconds come from /proc/PID/stat (utime + stime) at the last sample a process was
seen, so a process's last second may be missed; kernel work in softirq context (HTB, veth,
bridge) is charged to whichever process was running and is not separated here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_KINDS = (("device", "emulator.device"), ("mec", "emulator.mec"), ("relay", "tunrelay"),
          ("shaper", "shaper"), ("run", "emulator.run"))
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _sample(pid: int) -> tuple[str, float, int, int] | None:
    """(kind, CPU seconds, RSS bytes, PSS bytes) of one process, or None when it is gone."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
    pss = rss
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
    cpu = (int(f[11]) + int(f[12])) / _TICK
    kind = next((k for k, pat in _KINDS if pat in cmd), None)
    if kind is None:  # named by its program, e.g. other:bash, other:mnexec
        kind = "other:" + (Path(cmd.split(" ", 1)[0]).name[:12] or "exited")
    return kind, cpu, rss, pss


def profile_run(run_args: list[str], out: Path) -> dict[str, Any]:
    """Run ``emulator.run run_args --out out --quiet`` and sample it (see the module
    docstring); returns the figures per kind of process (``kinds``) and for the machine."""
    cmd = [sys.executable, "-m", "emulator.run", *run_args, "--out", str(out), "--quiet"]
    t_launch = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    hist: dict[int, list[tuple[float, float]]] = {}
    kind_of: dict[int, str] = {}
    peak: dict[str, tuple[int, int, int]] = {}  # kind -> (RSS sum, PSS sum, processes)
    busy: list[tuple[float, float]] = []
    prev_total = None
    while proc.poll() is None:
        now: dict[str, tuple[int, int, int]] = {}
        t = time.monotonic()
        for pid in _tree(proc.pid):
            s = _sample(pid)
            if s is None:
                continue
            kind, cpu, rss, pss = s
            if not kind.startswith("other:exited") or pid not in kind_of:
                kind_of[pid] = kind  # a process that exited keeps the kind it was seen with
            hist.setdefault(pid, []).append((t, cpu))
            r, q, n = now.get(kind_of[pid], (0, 0, 0))
            now[kind_of[pid]] = (r + rss, q + pss, n + 1)
        for k, v in now.items():
            if v[0] > peak.get(k, (0, 0, 0))[0]:
                peak[k] = v
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total, idle = sum(vals), vals[3] + vals[4]
        if prev_total is not None:
            dt = total - prev_total[0]
            busy.append((t, 1.0 - (idle - prev_total[1]) / dt if dt else 0.0))
        prev_total = (total, idle)
        time.sleep(1.0)
    err = proc.stderr.read() if proc.stderr else ""
    wall = time.monotonic() - t_launch
    t0 = math.inf
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        t0 = float(json.loads((out / "summary.json").read_text())["t0_monotonic"])
    kinds: dict[str, dict[str, float]] = {}
    for pid, h in hist.items():
        kd = kinds.setdefault(kind_of[pid], {"procs": 0, "cpu_s": 0.0, "run_cpu_s": 0.0})
        before = [c for tt, c in h if tt <= t0]
        kd["procs"] += 1
        kd["cpu_s"] += h[-1][1]
        kd["run_cpu_s"] += h[-1][1] - (before[-1] if before else 0.0)
    for name, kd in kinds.items():
        rss, pss, n = peak.get(name, (0, 0, 1))
        kd["rss_mib"], kd["pss_mib"] = rss / 2**20, pss / 2**20
        kd["rss_mib_per_proc"], kd["pss_mib_per_proc"] = rss / 2**20 / n, pss / 2**20 / n
    run_busy = [b for tt, b in busy if tt > t0]
    return {"exit": proc.returncode, "wall_s": wall, "kinds": kinds,
            "busy_mean": sum(b for _, b in busy) / max(len(busy), 1),
            "busy_max": max((b for _, b in busy), default=0.0),
            "run_busy_mean": sum(run_busy) / max(len(run_busy), 1),
            "run_busy_max": max(run_busy, default=0.0),
            "last_line": err.strip().splitlines()[-1] if err.strip() else ""}


def print_profile(res: dict[str, Any]) -> None:
    kinds = res["kinds"]
    total = sum(k["cpu_s"] for k in kinds.values()) or 1.0
    print(f"exit {res['exit']}, wall {res['wall_s']:.1f} s, CPU of the run's processes "
          f"{total:.1f} s ({total / res['wall_s']:.2f} cores); machine busy: whole run mean "
          f"{res['busy_mean']:.0%} max {res['busy_max']:.0%}, after t0 mean "
          f"{res['run_busy_mean']:.0%} max {res['run_busy_max']:.0%} "
          f"({os.cpu_count()} cores, other users' work included)")
    print(f"{'kind':<18} {'procs':>5} {'CPU s':>7} {'share':>6} {'s/proc':>7} "
          f"{'after t0':>8} {'RSS MiB':>8} {'RSS/proc':>8} {'PSS/proc':>8}")
    for name in sorted(kinds, key=lambda x: -kinds[x]["cpu_s"]):
        k = kinds[name]
        print(f"{name:<18} {k['procs']:>5.0f} {k['cpu_s']:7.1f} {k['cpu_s'] / total:6.1%} "
              f"{k['cpu_s'] / k['procs']:7.3f} {k['run_cpu_s'] / k['procs']:8.3f} "
              f"{k['rss_mib']:8.0f} {k['rss_mib_per_proc']:8.1f} {k['pss_mib_per_proc']:8.1f}")
    print(res["last_line"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then emulator.run arguments")
    a = ap.parse_args()
    args = [x for x in a.run_args if x != "--"]
    out = Path(tempfile.mkdtemp(prefix="process_cpu.")) / "run"
    print(f"emulator.run {' '.join(args)}")
    print_profile(profile_run(args, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
