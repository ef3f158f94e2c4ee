"""How one side runs the steps of a plan: computations (profiled or executed) and the payloads
of its sends. The device and the MEC use the same :class:`StepRunner`.

Profiled mode
    A computation waits out a duration drawn from the side's profile (:mod:`emulator.compute`);
    a send carries zero bytes of the size the plan gives (what crosses is the bytes' timing,
    not their content).
Execute mode
    A computation runs the profiler's ONNX pieces ``[lo, hi)`` of its pass
    (:class:`emulator.execute.PieceRunner`) on the pass instance's seeded inputs
    (``SeedSequence([request seed, pass index, repetition])``, so both sides draw the same) plus
    the cut tensors received from the other side. A cut or a pass output that crosses the link
    carries its real tensors (raw bytes, described in the message metadata); the device checks
    every pass output the MEC sent against local execution of the same instance. Other items
    (the prompt, a KV cache, the prompt embedding) cross as zero bytes of their profiled size
    and are regenerated from the seed where they are used: passes are executed independently
    (a decode's ``past_*`` inputs are seeded, not the real cache; the pieces are exported at
    fixed shapes), so what is checked is every split computation, not the generation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.plan import Step
from emulator.compute import ProfiledCompute
from emulator.execute import PieceRunner, decode_tensors, encode_tensors

__all__ = ["StepRunner", "instance_seed"]


def instance_seed(request_seed: int, pass_index: int, rep: int) -> int:
    """The seed of one pass instance's inputs (the same on both sides)."""
    return int(np.random.SeedSequence([request_seed, pass_index, rep]).generate_state(1)[0])


class StepRunner:
    """Runs one side's computations and makes its send payloads (see the module docstring)."""

    def __init__(self, compute: ProfiledCompute, runner: PieceRunner | None = None) -> None:
        self.compute = compute
        self.runner = runner
        self.mode = "profiled" if runner is None else "execute"
        self._pass_index = {p.name: i for i, p in enumerate(compute.profile.passes)}
        self._zeros = memoryview(bytearray(0))

    def pass_index(self, name: str) -> int:
        return self._pass_index[name]

    def zeros(self, n: int) -> memoryview:
        if n > len(self._zeros):
            self._zeros = memoryview(bytearray(max(n, 2 * len(self._zeros))))
        return self._zeros[:n]

    def run(self, step: Step, request_seed: int,
            received: dict[str, np.ndarray] | None = None) -> tuple[float, dict[str, Any] | None]:
        """Run a computation step; returns ``(target_s, tensors)``: the drawn duration
        (profiled; 0 when executed) and, in execute mode, the tensors it hands on (the cut
        after ``hi``, or the pass outputs when ``hi`` is the last block)."""
        pi = self._pass_index[step.pass_name]
        if self.runner is None:
            target, _ = self.compute.run(pi, step.lo, step.hi)
            return target, None
        seed = instance_seed(request_seed, pi, step.rep)
        got = received or {}
        env = self.runner.inputs(pi, seed, skip=list(got))
        env.update(got)
        self.runner.run(pi, step.lo, step.hi, env)
        n = self.compute.profile.passes[pi].n_blocks
        names = self.runner.output_names(pi) if step.hi == n else \
            self.runner.cut_names(pi, step.hi)
        return 0.0, {nm: env[nm] for nm in names}

    def payload(self, step: Step, tensors: dict[str, Any] | None
                ) -> tuple[dict[str, Any], bytes | memoryview]:
        """Metadata and payload of a send step: the real tensors of a cut or output in
        execute mode, else zero bytes of the plan's size."""
        if tensors is not None and step.what in ("cut", "output"):
            descs, payload = encode_tensors(tensors)
            return {"tensors": descs}, payload
        return {}, self.zeros(step.nbytes)

    def received(self, meta: dict[str, Any], payload: bytes | bytearray | memoryview
                 ) -> dict[str, np.ndarray] | None:
        """The tensors of a received DATA message (execute mode), else ``None``."""
        if self.runner is None or "tensors" not in meta:
            return None
        return decode_tensors(meta["tensors"], payload)

    def check(self, outputs: list[tuple[int, int, dict[str, np.ndarray]]],
              request_seed: int) -> dict[str, Any]:
        """Compare pass outputs received from the MEC (``(pass index, rep, tensors)``) with
        local execution of the same instances."""
        assert self.runner is not None
        worst = 0.0
        ok = True
        for pi, rep, got in outputs:
            ref = self.runner.local(pi, instance_seed(request_seed, pi, rep))
            for name, want in ref.items():
                have = got.get(name)
                if have is None or have.shape != want.shape:
                    ok = False
                    continue
                if want.dtype.kind == "f":
                    if want.size:
                        worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want))))
                    ok &= bool(np.allclose(have, want, rtol=1e-4, atol=1e-5))
                else:
                    ok &= bool(np.array_equal(have, want))
        return {"passes_checked": len(outputs), "max_abs_diff": worst, "ok": ok}
