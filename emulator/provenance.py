"""Provenance of a run: command line, versions, seed, input hashes, hardware (summary.json)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from profiler.machine import cpu_model

__all__ = ["file_sha256", "provenance"]

_PACKAGES = ("aigc-offload-emu", "numpy", "onnxruntime", "torch", "stable-baselines3",
             "sb3-contrib", "gymnasium", "mininet", "pyroute2", "matplotlib")
_ROOT = Path(__file__).resolve().parent.parent


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def _git() -> dict[str, Any]:
    try:
        rev = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain", "--", "emulator"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None}
    if rev.returncode != 0:
        return {"commit": None}
    return {"commit": rev.stdout.strip(), "emulator_dirty": bool(dirty.stdout.strip())}


def provenance(argv: Sequence[str], seed: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to say what produced a result (``inputs``: paths and hashes)."""
    return {
        "command": " ".join([Path(sys.executable).name, "-m", "emulator.run", *argv]),
        "argv": list(argv),
        "seed": seed,
        "started_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": inputs,
        "versions": _versions(),
        "git": _git(),
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                     "kernel": platform.release(), "host": platform.node()},
        "clock": "time.monotonic (shared by all hosts of a run: one kernel)",
    }
