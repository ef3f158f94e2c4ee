"""Third-party-style ONNX files with dynamic shapes and skip connections, through the CLI.

    .venv/bin/python benchmarks/profiler_third_party.py

Builds a small ResNet-like and a small U-Net-like network in torch, exports each with dynamic
batch/height/width (as a user's file would come), then runs ``python -m profiler profile`` on
it with ``--input`` shapes and prints the blocks found, their latency and how many tensors
cross each cut.

Checked (exit status 1 when any is missed), each against a reference outside the profiler:

* the pieces the CLI wrote, chained with ONNX Runtime on a random image of the ``--input``
  shape, give the torch module's output on the same image (``compare_outputs`` <= 1e-4);
* at least 3 blocks were found;
* the U-Net's cuts carry its skip connections: some cut has >= 2 tensors;
* the sum of block medians is within ``--limit`` (default 25%: one measurement of a ~ms pass on
  a shared machine) of the whole-pass median.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.export import Dim  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from profiler.schema import load_profile  # noqa: E402
from profiler.timing import compare_outputs  # noqa: E402

SHAPE = (1, 3, 128, 128)


def _chain(pieces_dir: Path, image: torch.Tensor) -> dict[str, np.ndarray]:
    """Run the ONNX pieces in file order on ``image``; every tensor produced, by name."""
    import onnxruntime as ort

    files = sorted(pieces_dir.glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no ONNX pieces in {pieces_dir}")
    env: dict[str, np.ndarray] = {"image": image.numpy()}
    for f in files:
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        env.update(zip(names, sess.run(names, {i.name: env[i.name] for i in sess.get_inputs()}),
                       strict=True))
    return env


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
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=25.0,
                    help="allowed |sum of blocks / whole - 1| in percent (default 25)")
    a = ap.parse_args()
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
                   ",".join(map(str, SHAPE)).join(("image=", "")), "--blocks", "6", "--class", "device", "--quiet",
                   "--out", str(out), "--work-dir", str(Path(tmp) / "work")]
            r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: {r.stderr.strip()}")
                rc = 1
                continue
            (p,) = load_profile(out).passes
            s = sum(p.block_medians_ms())
            diff = 100 * (s / p.whole.median - 1)
            image = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(7))
            with torch.no_grad():
                ref = model(image).numpy()
            (pdir,) = (Path(tmp) / "work" / "onnx").glob(f"{name}-*/pieces")
            env = _chain(pdir, image)
            last = sorted(pdir.glob("*.onnx"))[-1]
            import onnx

            (out_name,) = [o.name for o in onnx.load(str(last), load_external_data=False)
                           .graph.output]
            err = compare_outputs({out_name: ref}, {out_name: env[out_name]})
            widest = max(len(b.out_tensors) for b in p.blocks[:-1])
            checks = {"chain vs torch <= 1e-4": err <= 1e-4, ">= 3 blocks": p.n_blocks >= 3,
                      f"|sum - whole| <= {a.limit:g}%": abs(diff) <= a.limit}
            if name == "unetish":
                checks["a cut carries >= 2 tensors"] = widest >= 2
            print(f"{name}: {p.n_blocks} blocks, whole {p.whole.median:.2f} ms, sum of blocks "
                  f"{s:.2f} ms ({diff:+.1f}%), chain error vs whole ONNX {p.chain_max_error:.1e}, "
                  f"chained pieces vs torch {err:.1e}, widest cut {widest} tensor(s)")
            for b in p.blocks:
                print(f"   {b.name:<34} {b.latency.median:8.3f} ms  cut {b.out_bytes:>9} B in "
                      f"{len(b.out_tensors)} tensor(s)")
            for what, ok in checks.items():
                print(f"   {what}: {'met' if ok else 'NOT met'}")
                rc |= not ok
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
