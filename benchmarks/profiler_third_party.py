"""Third-party-style ONNX files with dynamic shapes and skip connections, through the CLI.

    .venv/bin/python benchmarks/profiler_third_party.py

Builds a small ResNet-like and a small U-Net-like network in torch, exports each with dynamic
batch/height/width (as a user's file would come), then runs ``python -m profiler profile`` on
it with ``--input`` shapes and prints the blocks found, their latency and how many tensors
cross each cut.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.export import Dim  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from profiler.schema import load_profile  # noqa: E402


class ResNetish(nn.Module):
    def __init__(self, width: int = 32, blocks: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1),
                                                 nn.BatchNorm2d(width), nn.ReLU(),
                                                 nn.Conv2d(width, width, 3, padding=1))
                                   for _ in range(blocks))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        for c in self.convs:
            h = F.relu(h + c(h))
        return self.head(h.mean(dim=(2, 3)))


class UNetish(nn.Module):
    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.e1, self.e2 = nn.Conv2d(3, w, 3, padding=1), nn.Conv2d(w, 2 * w, 3, 2, 1)
        self.e3 = nn.Conv2d(2 * w, 4 * w, 3, 2, 1)
        self.mid = nn.Conv2d(4 * w, 4 * w, 3, padding=1)
        self.u3 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2)
        self.d2 = nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        self.u2 = nn.ConvTranspose2d(2 * w, w, 2, 2)
        self.d1 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.out = nn.Conv2d(w, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.e1(x))
        b = F.relu(self.e2(a))
        c = F.relu(self.e3(b))
        m = F.relu(self.mid(c)) + c
        d = F.relu(self.d2(torch.cat([self.u3(m), b], 1)))
        e = F.relu(self.d1(torch.cat([self.u2(d), a], 1)))
        return self.out(e) + x


def main() -> int:
    rc = 0
    with tempfile.TemporaryDirectory(prefix="aigc-3p-") as tmp:
        for name, model in [("resnetish", ResNetish()), ("unetish", UNetish())]:
            path = Path(tmp) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model.eval(), (torch.randn(2, 3, 32, 32),), str(path),
                                  dynamo=True, input_names=["image"],
                                  dynamic_shapes={"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}})
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", "profiler", "profile", str(path), "--input",
                   "image=1,3,128,128", "--blocks", "6", "--class", "device", "--quiet",
                   "--out", str(out), "--work-dir", str(Path(tmp) / "work")]
            r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: {r.stderr.strip()}")
                rc = 1
                continue
            (p,) = load_profile(out).passes
            s = sum(p.block_medians_ms())
            print(f"{name}: {p.n_blocks} blocks, whole {p.whole.median:.2f} ms, sum of blocks "
                  f"{s:.2f} ms ({100 * (s / p.whole.median - 1):+.1f}%), chain error "
                  f"{p.chain_max_error:.1e}")
            for b in p.blocks:
                print(f"   {b.name:<34} {b.latency.median:8.3f} ms  cut {b.out_bytes:>9} B in "
                      f"{len(b.out_tensors)} tensor(s)")
            rc |= p.n_blocks < 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
