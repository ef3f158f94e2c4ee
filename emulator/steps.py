"""How one side runs the steps of a plan: computations (profiled or executed) and the payloads
of its sends. The device and the MEC use the same :class:`StepRunner`.

Profiled mode
    A computation waits out a duration drawn from the side's profile (:mod:`emulator.compute`);
    a send carries zero bytes of the size the plan gives (what crosses is the bytes' timing,
    not their content).
Execute mode
    A computation runs the profiler's ONNX pieces ``[lo, hi)`` of its pass
    (:class:`emulator.execute.PieceRunner`) on the tensors of the items it needs, held in the
    request's inbox on this side (:meth:`StepRunner.gather`): what this side computed, or what
    a DATA message brought. Its results are stored per item it makes (:meth:`StepRunner.store`):
    the cut or the pass output, and, for an LLM, each layer's KV cache (``present_*``) as that
    layer's state item, so the cache stays on the side that ran the layer and crosses the link
    only in a ``state`` send (a migration) of the plan. A cut, a pass output and a migrated
    cache cross as their real tensors (raw bytes, described in the message metadata).

    LLM (pieces with ``past_*`` inputs): the generation is real: the prompt is drawn from
    the first instance's seed (``SeedSequence([request seed, pass index, repetition])``, so
    both sides draw the same), each token feeds the next pass, each decode reads the cache at
    its current length and appends to it. The device checks the tokens the user received
    against the same generation run locally (:meth:`PieceRunner.generate`).

    Other models: passes are executed independently on their seeded inputs (the prompt
    embedding and the chain input are regenerated from the seed where they are used); the
    device checks every pass output the MEC sent against local execution of that instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agent.plan import MEC, SEND, Plan, Step
from emulator.compute import ProfiledCompute
from emulator.execute import PRESENT, PieceRunner, decode_tensors, encode_tensors, state_input
from emulator.transport import Inbox

__all__ = ["StepRunner", "instance_seed"]

_TENSOR_SENDS = frozenset({"cut", "output", "state"})


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
        self._outputs: set[str] = set()
        if runner is not None:
            for i in range(len(compute.profile.passes)):
                self._outputs.update(runner.output_names(i))

    def pass_index(self, name: str) -> int:
        return self._pass_index[name]

    def zeros(self, n: int) -> memoryview:
        if n > len(self._zeros):
            self._zeros = memoryview(bytearray(max(n, 2 * len(self._zeros))))
        return self._zeros[:n]

    def run(self, step: Step, request_seed: int,
            received: Mapping[str, np.ndarray] | None = None, start: float | None = None
            ) -> tuple[float, dict[str, Any] | None]:
        """Run a computation step; returns ``(target_s, tensors)``: the drawn duration
        (profiled; 0 when executed) and, in execute mode, the tensors it hands on (the cut
        after ``hi``, or the pass outputs when ``hi`` is the last block, and an LLM's cache
        outputs of the blocks it ran). ``received``: the tensors of the items it needs
        (:meth:`gather`). ``start``: profiled time counts from then (``time.monotonic()``;
        default now)."""
        pi = self._pass_index[step.pass_name]
        r = self.runner
        if r is None:
            target, _ = self.compute.run(pi, step.lo, step.hi, start)
            return target, None
        seed = instance_seed(request_seed, pi, step.rep)
        got = dict(received or {})
        if r.threaded:
            env: dict[str, np.ndarray] = {}
            chain = r.chain_input[pi]
            for name, v in got.items():
                if name in self._outputs and name not in r.graph_inputs[pi]:
                    if step.lo == 0 and chain is not None:
                        env[chain] = v  # the previous pass's token
                else:
                    env[state_input(name)] = v
            axes = r.past_axis[pi]
            if step.lo == 0 and chain not in env:  # the first pass: the seeded prompt
                env.update(r.inputs(pi, seed, skip=[*env, *axes]))
            have = [env[n].shape[a] for n, a in axes.items() if n in env]
            length = have[0] if have else r.past_len(pi, step.rep)
            for name in axes:
                if name not in env:  # read for its length only, on this side
                    env[name] = r.placeholder(pi, name, length)
        else:  # passes independent: only the cut comes from the other side
            cut = set(r.cut_names(pi, step.lo)) if step.lo > 0 else set()
            got = {n: v for n, v in got.items() if n in cut}
            env = r.inputs(pi, seed, skip=list(got))
            env.update(got)
        r.run(pi, step.lo, step.hi, env)
        n = self.compute.profile.passes[pi].n_blocks
        names = r.output_names(pi) if step.hi == n else r.cut_names(pi, step.hi)
        out = {nm: env[nm] for nm in names}
        if r.threaded:
            for block in r.state_outputs(pi, step.lo, step.hi):
                out.update((nm, env[nm]) for nm in block)
        return 0.0, out

    def store(self, inbox: Inbox, step: Step, t: float, tensors: dict[str, Any] | None) -> None:
        """Put the items a computation made into ``inbox`` (here since ``t``), each with its
        own tensors: the cut or pass output first, then one state item per block with a
        cache, in block order (:func:`agent.plan.build_plan`'s order)."""
        if tensors is None or self.runner is None:
            inbox.put(step.makes, t, tensors)
            return
        cache = {n for n in tensors if n.startswith(PRESENT)}
        inbox.put(step.makes[:1], t, {n: v for n, v in tensors.items() if n not in cache})
        if len(step.makes) <= 1:
            return
        pi = self._pass_index[step.pass_name]
        blocks = [b for b in self.runner.state_outputs(pi, step.lo, step.hi) if b]
        if len(blocks) != len(step.makes) - 1:  # not one cache per state item: keep all
            inbox.put(step.makes[1:], t, {n: tensors[n] for n in cache})
            return
        for it, names in zip(step.makes[1:], blocks, strict=True):
            inbox.put([it], t, {n: tensors[n] for n in names})

    def gather(self, inbox: Inbox, items: tuple[int, ...]) -> dict[str, Any] | None:
        """The tensors of ``items`` held in ``inbox`` (execute mode), else ``None``."""
        if self.runner is None:
            return None
        out: dict[str, Any] = {}
        for it in items:
            got = inbox.data(it)
            if isinstance(got, dict):
                out.update(got)
        return out

    def payload(self, step: Step, tensors: dict[str, Any] | None
                ) -> tuple[dict[str, Any], bytes | memoryview]:
        """Metadata and payload of a send step: the real tensors of a cut, an output or a
        migrated cache in execute mode, else zero bytes of the plan's size."""
        if tensors and step.what in _TENSOR_SENDS:
            descs, payload = encode_tensors(tensors)
            return {"tensors": descs}, payload
        return {}, self.zeros(step.nbytes)

    def received(self, meta: dict[str, Any], payload: bytes | bytearray | memoryview
                 ) -> dict[str, np.ndarray] | None:
        """The tensors of a received DATA message (execute mode), else ``None``."""
        if self.runner is None or "tensors" not in meta:
            return None
        return decode_tensors(meta["tensors"], payload)

    def check_request(self, plan: Plan, data: Callable[[int], Any], request_seed: int,
                      repeats: Mapping[str, int]) -> dict[str, Any]:
        """The check of one executed request (``data(item)``: its tensors on the device):
        an LLM's tokens against :meth:`PieceRunner.generate` (:meth:`user_tokens`, then
        :meth:`check_tokens`); otherwise every pass output the MEC sent against local
        execution of its instance."""
        assert self.runner is not None
        if not self.runner.threaded:
            outs = [(self._pass_index[st.pass_name], st.rep, data(st.items[0]))
                    for st in plan.steps if st.kind == SEND and st.side == MEC
                    and st.what == "output" and isinstance(data(st.items[0]), dict)]
            return self.check(outs, request_seed)
        return self.check_tokens(self.user_tokens(plan, data), request_seed, repeats)

    def user_tokens(self, plan: Plan, data: Callable[[int], Any]) -> list[np.ndarray | None]:
        """The tokens the user got (an LLM request's visible outputs, in order)."""
        assert self.runner is not None
        out: list[np.ndarray | None] = []
        for it in plan.outputs:  # items "out:PASS:REP"
            name = self.runner.output_names(self._pass_index[plan.item_names[it].split(":")[1]])[0]
            got = data(it)
            out.append(got.get(name) if isinstance(got, dict) else None)
        return out

    def check_tokens(self, tokens: list[np.ndarray | None], request_seed: int,
                     repeats: Mapping[str, int]) -> dict[str, Any]:
        """``tokens`` against the same generation with every piece run here."""
        assert self.runner is not None
        reps = [int(repeats.get(p.name, p.repeat)) for p in self.compute.profile.passes]
        seeds = [instance_seed(request_seed, pi, r) for pi, n in enumerate(reps)
                 for r in range(n)]
        want = self.runner.generate(seeds, reps)
        ok = len(tokens) == len(want) and all(
            h is not None and h.shape == w.shape and np.array_equal(h, w)
            for h, w in zip(tokens, want, strict=False))
        return {"passes_checked": len(tokens), "max_abs_diff": 0.0, "ok": ok,
                "tokens": [int(np.asarray(h).ravel()[0]) for h in tokens if h is not None],
                "reference": [int(w.ravel()[0]) for w in want]}

    def check(self, outputs: list[tuple[int, int, dict[str, np.ndarray]]],
              request_seed: int) -> dict[str, Any]:
        """Compare pass outputs received from the MEC (``(pass index, rep, tensors)``) with
        local execution of the same instances (passes executed independently)."""
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
