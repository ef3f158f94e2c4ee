"""Where the CPU and memory go in an emulator run, per kind of process (root).

Starts ``emulator.run`` with the given arguments, samples every process of the run (the run
and all its descendants, found through /proc) once a second, and prints per kind of process
(device, MEC, delay relay, shaper, the run itself, other) the CPU seconds used, the share of
all, the mean per process and the resident memory (sum and per process, at the sample with the
most memory). Example, the 64-device run of issue 13:

    sudo PYTHONPATH=$PWD .venv/bin/python benchmarks/process_cpu.py -- \\
        --devices 64 --shared-cell --policy offload --mec-speedup 10 --mec-slots 4 --duration 30

Notes: CPU seconds come from /proc/PID/stat (utime + stime) at the last sample a process was
seen, so a process's last second may be missed; kernel work in softirq context (HTB, veth,
bridge) is charged to whichever process was running and is not separated here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _sample(pid: int) -> tuple[str, float, int] | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
    cpu = (int(f[11]) + int(f[12])) / _TICK
    kind = next((k for k, pat in _KINDS if pat in cmd), None)
    if kind is None:  # named by its program, e.g. other:bash, other:mnexec
        kind = "other:" + Path(cmd.split(" ", 1)[0]).name[:12]
    return kind, cpu, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then emulator.run arguments")
    a = ap.parse_args()
    args = [x for x in a.run_args if x != "--"]
    out = Path(tempfile.mkdtemp(prefix="process_cpu."))
    cmd = [sys.executable, "-m", "emulator.run", *args, "--out", str(out / "run"), "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    last: dict[int, tuple[str, float]] = {}
    peak_rss: dict[str, tuple[int, int]] = {}
    busy: list[float] = []
    prev_total = None
    while proc.poll() is None:
        rss_now: dict[str, tuple[int, int]] = {}
        for pid in _tree(proc.pid):
            s = _sample(pid)
            if s is None:
                continue
            kind, cpu, rss = s
            last[pid] = (kind, cpu)
            tot, n = rss_now.get(kind, (0, 0))
            rss_now[kind] = (tot + rss, n + 1)
        for k, v in rss_now.items():
            if v[0] > peak_rss.get(k, (0, 0))[0]:
                peak_rss[k] = v
        line = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        vals = [int(x) for x in line]
        total, idle = sum(vals), vals[3] + vals[4]
        if prev_total is not None:
            dt = total - prev_total[0]
            busy.append(1.0 - (idle - prev_total[1]) / dt if dt else 0.0)
        prev_total = (total, idle)
        time.sleep(1.0)
    err = proc.stderr.read() if proc.stderr else ""
    wall = time.monotonic() - t0
    by: dict[str, list[float]] = {}
    for kind, cpu in last.values():
        by.setdefault(kind, []).append(cpu)
    total_cpu = sum(sum(v) for v in by.values())
    print(f"emulator.run {' '.join(args)}")
    print(f"exit {proc.returncode}, wall {wall:.1f} s, CPU of the run's processes "
          f"{total_cpu:.1f} s ({total_cpu / wall:.2f} cores); machine busy: mean "
          f"{100 * sum(busy) / max(len(busy), 1):.0f}%, max {100 * max(busy or [0]):.0f}% "
          f"({os.cpu_count()} cores, other users' work included)")
    print(f"{'kind':<18} {'procs':>5} {'CPU s':>8} {'share':>6} {'CPU s/proc':>10} "
          f"{'RSS MiB':>8} {'MiB/proc':>8}")
    for kind in sorted(by, key=lambda k: -sum(by[k])):
        cpu = sum(by[kind])
        rss, n = peak_rss.get(kind, (0, 1))
        print(f"{kind:<18} {len(by[kind]):>5} {cpu:8.1f} {cpu / total_cpu:6.1%} "
              f"{cpu / len(by[kind]):10.2f} {rss / 2**20:8.0f} {rss / 2**20 / max(n, 1):8.1f}")
    print(err.strip().splitlines()[-1] if err.strip() else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
