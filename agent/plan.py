"""A request's execution plan: the one place that turns (profiles, decision, workload) into the
ordered steps of a generation. The simulator prices these steps (:mod:`agent.latency`), the
emulator's device and MEC execute them (:mod:`emulator.device`, :mod:`emulator.mec`); neither
re-derives the rules below.

The rule (``shared/DESIGN.md``, "How a generation runs")
    Data lives where it was computed. The request's input (the prompt) starts on the device; a
    pass's output is where its last block ran; a block's persistent state (an LLM layer's KV
    cache) lives where that block last ran. Bytes cross the link only when the next computation
    that needs them is on the other side:

    * the cut tensors inside a pass (device part ``[0, k)`` to MEC part ``[k, N)``);
    * a pass output whose consumer is on the other side (either direction);
    * a block's state when the block runs on the other side than last time (a *migration*, at
      the state's current length: ``state_bytes(block) = fixed + per_token x tokens so far``);
    * the context a pass reads besides its chain input (SD's UNet reads the prompt embedding,
      the text encoder's output, at every step), once to each side that needs it;
    * user-visible outputs: every LLM pass output is a token, *streamed* to the device as it is
      produced (one one-way message; the MEC goes on at once); a diffusion model's final output
      (the image) goes to the device. The request ends when its last output is on the device.

    Consecutive work on one side runs back to back there. A send is issued by its sender right
    after the computation that produced the item (eagerly), and each direction of the link is
    a FIFO: sends in one direction go out one after another in plan order.

Dataflow of the zoo's model families (by pass name; any other model is a plain chain in which
pass ``i+1`` reads pass ``i``'s output and only the last output is user-visible):

* ``prefill`` reads the request input, ``decode`` the previous token; both are streamed; each
  appends tokens to the KV cache (``prefill``: the prompt length, ``decode``: 1).
* ``text_encoder`` reads the request input; ``unet`` step 0 starts from noise made where it
  runs (no bytes), step ``i`` reads step ``i-1``'s latent, every step reads the text encoder's
  output as context; ``vae_decoder`` reads the last latent and its image is the final output.

A :class:`Plan` is a tuple of :class:`Step` s in an order every side can follow: a side's own
steps (its computations and the sends it issues) are in the order it runs them, and each step
comes after the steps that make what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.policy import Decision, Workload
from agent.wire import priced_bytes

if TYPE_CHECKING:
    from agent.latency import LatencyModel

__all__ = ["COMPUTE", "DEVICE", "MEC", "SEMANTICS", "SEND", "SIDES", "Plan", "Step",
           "build_plan", "decision_from_json", "tokens_appended"]

SEMANTICS = "plans-1"
"""The execution semantics policies are trained on (recorded in every policy sidecar); a policy
trained before plans existed (every offloaded pass a device round trip) has none."""

COMPUTE, SEND = 0, 1
DEVICE, MEC = 0, 1
SIDES = ("device", "mec")

_CONTEXT = {"unet": "text_encoder"}
"""pass -> the pass whose output every instance also reads (once per side)."""
_FRESH = frozenset({"unet"})
"""passes whose first instance has no chain input (diffusion starts from seeded noise)."""
_STREAMED = frozenset({"prefill", "decode"})
"""passes whose every output is user-visible (a token)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a plan.

    ``kind`` is :data:`COMPUTE` (blocks ``[lo, hi)`` of one pass instance on ``side``, needing
    the items ``needs`` there and making ``makes`` there, for ``seconds`` by the profile) or
    :data:`SEND` (``side`` sends ``items``, ``nbytes`` in all, to the other side: uplink when
    ``side`` is the device). ``what`` names a send's contents (``input``, ``cut``, ``output``,
    ``context``, ``state``); ``visible`` marks a user-visible output (a token, the image).
    """

    kind: int
    side: int
    pass_name: str
    rep: int
    lo: int = 0
    hi: int = 0
    needs: tuple[int, ...] = ()
    makes: tuple[int, ...] = ()
    seconds: float = 0.0
    items: tuple[int, ...] = ()
    nbytes: int = 0
    what: str = ""
    visible: bool = False
    wire_bytes: float = 0.0
    """What a send costs at the link's rate: its payload with the framing and headers that
    carry it (:func:`agent.wire.priced_bytes`); ``nbytes`` is the payload alone."""


@dataclass(frozen=True)
class Plan:
    """The ordered steps of one request. Items are small integers; ``item_names`` names them
    (``input``, ``out:PASS:REP``, ``cut:PASS:REP``, ``state:BLOCK@PASS:REP``)."""

    model: str
    steps: tuple[Step, ...]
    item_names: tuple[str, ...]
    initial: tuple[int, ...]
    """Items on the device when the request starts (the request input)."""
    outputs: tuple[int, ...]
    """User-visible items in the order the user sees them (tokens, or the final output)."""
    final: int
    """The item whose arrival on the device ends the request."""

    @property
    def offloaded(self) -> bool:
        return any(s.kind == COMPUTE and s.side == MEC for s in self.steps)

    @property
    def mec_only(self) -> bool:
        """Every computation runs on the MEC (the device only sends the input and receives
        what the user sees): the plans a local fallback may race
        (:func:`agent.latency.fallback_start`)."""
        return self.offloaded and not any(s.kind == COMPUTE and s.side == DEVICE
                                          for s in self.steps)

    def side_steps(self, side: int) -> tuple[Step, ...]:
        """The steps ``side`` runs, in order: its computations and the sends it issues."""
        return tuple(s for s in self.steps if s.side == side)

    def last_mec_compute(self) -> int:
        """Index in :attr:`steps` of the MEC's last computation (-1 if none)."""
        for i in range(len(self.steps) - 1, -1, -1):
            s = self.steps[i]
            if s.kind == COMPUTE and s.side == MEC:
                return i
        return -1


class _Builder:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.size: list[int] = []
        self.where: list[int] = []  # producing side

    def item(self, name: str, nbytes: int, side: int) -> int:
        self.names.append(name)
        self.size.append(int(nbytes))
        self.where.append(side)
        return len(self.names) - 1


def build_plan(model: LatencyModel, decision: Decision, workload: Workload) -> Plan:
    """The plan of ``workload`` run with ``decision`` (see the module docstring).

    :raises AgentError: the decision is not a plan of this model, or it moves a block's state
        and the profile has no state bytes (a schema-1 profile: the message says what to
        regenerate).
    """
    model.check_decision(decision, workload)
    reps = model.repeats(workload)
    b = _Builder()
    inp = b.item("input", 0, DEVICE)
    parts: list[tuple[int, str, int, int, int, list[int], list[int], float]] = []
    # (side, pass, rep, lo, hi, needs, makes, seconds) in execution order
    state: dict[str, int] = {}  # block name -> latest state item
    state_side: dict[str, int] = {}
    tokens = 0
    chain = inp
    last_out: dict[str, int] = {}
    visible: list[int] = []
    first_pass = True
    for p in model.passes:
        n = p.n_blocks
        for r in range(reps[p.name]):
            k = decision.split_for(p.name, r)
            if first_pass:
                b.size[inp] = p.input_bytes
                first_pass = False
            chain_in: int | None = chain
            if p.name in _FRESH and r == 0:
                chain_in = None
            ctx = last_out.get(_CONTEXT.get(p.name, ""))
            tokens += p.tokens_appended
            out = b.item(f"out:{p.name}:{r}", p.output_bytes, MEC if k == 0 else DEVICE)
            segs = []
            if k > 0:
                segs.append((DEVICE, 0, k))
            if k < n:
                segs.append((MEC, k, n))
            prev_cut: int | None = None
            for side, lo, hi in segs:
                needs: list[int] = []
                if lo == 0:
                    if chain_in is not None:
                        needs.append(chain_in)
                else:
                    assert prev_cut is not None
                    needs.append(prev_cut)
                if ctx is not None:
                    needs.append(ctx)
                makes: list[int] = []
                for j in range(lo, hi):
                    per_tok, fixed = p.state[j]
                    if per_tok is None and p.name not in _STREAMED:
                        continue  # schema 1: only LLM layers are known to keep state
                    if per_tok == 0 and fixed == 0:
                        continue
                    blk = p.block_names[j]
                    old = state.get(blk)
                    if old is not None:
                        needs.append(old)
                        if per_tok is None and state_side[blk] != side:
                            raise AgentError(model.state_missing_message(blk))
                    nb = 0 if per_tok is None else (fixed or 0) + per_tok * tokens
                    new = b.item(f"state:{blk}@{p.name}:{r}", nb, side)
                    state[blk] = new
                    state_side[blk] = side
                    makes.append(new)
                if hi == n:
                    b.where[out] = side
                    makes.insert(0, out)
                else:
                    prev_cut = b.item(f"cut:{p.name}:{r}", p.cut_bytes[hi], side)
                    makes.insert(0, prev_cut)
                secs = p.device_s[hi] - p.device_s[lo] if side == DEVICE else \
                    p.mec_s[lo] - p.mec_s[hi]
                parts.append((side, p.name, r, lo, hi, needs, makes, secs))
            chain = out
            last_out[p.name] = out
            if p.name in _STREAMED:
                visible.append(out)
    if chain == inp:
        raise AgentError(f"the workload runs no pass of {model.model!r}; nothing to plan")
    final = chain
    if not visible or visible[-1] != final:
        visible.append(final)
    return _emit(model.model, b, parts, inp, tuple(visible), final, model.wire_overhead)


def _emit(model: str, b: _Builder,
          parts: list[tuple[int, str, int, int, int, list[int], list[int], float]],
          inp: int, visible: tuple[int, ...], final: int, wire_overhead: bool = True) -> Plan:
    """Order computations and sends: a send right after the computation that made its items,
    to every other side that needs them (or to the device when they are user-visible). A
    send's :attr:`Step.wire_bytes` is its :func:`agent.wire.priced_bytes` (``wire_overhead``)
    or its payload."""
    consumers: dict[int, set[int]] = {}
    for side, *_rest, needs, _makes, _secs in parts:
        for it in needs:
            consumers.setdefault(it, set()).add(side)
    vis = set(visible)
    steps: list[Step] = []

    def sends_for(items: list[int], producer: int, pass_name: str, rep: int) -> None:
        other = 1 - producer
        go = [it for it in items if other in consumers.get(it, ()) or
              (other == DEVICE and it in vis)]
        if not go:
            return
        # one send per kind of content, in the order made (output/cut first, then states)
        groups: dict[str, list[int]] = {}
        for it in go:
            groups.setdefault(_what(b.names[it], it == inp), []).append(it)
        for what, its in groups.items():
            nbytes = sum(b.size[i] for i in its)
            steps.append(Step(SEND, producer, pass_name, rep, items=tuple(its),
                              nbytes=nbytes, what=what, visible=any(i in vis for i in its),
                              wire_bytes=priced_bytes(nbytes, len(steps), its)
                              if wire_overhead else float(nbytes)))

    sends_for([inp], DEVICE, parts[0][1], 0)
    for side, pname, rep, lo, hi, needs, makes, secs in parts:
        steps.append(Step(COMPUTE, side, pname, rep, lo, hi, tuple(needs), tuple(makes),
                          float(secs)))
        sends_for(makes, side, pname, rep)
    return Plan(model=model, steps=tuple(steps), item_names=tuple(b.names), initial=(inp,),
                outputs=visible, final=final)


def _what(name: str, is_input: bool) -> str:
    if is_input:
        return "input"
    return name.split(":", 1)[0] if not name.startswith("out:") else "output"


def decision_from_json(splits: Mapping[str, object], action: int = -1) -> Decision:
    """A :class:`Decision` from its JSON form (``{pass: k | [k, ...]}``), as the emulator's
    device sends it to the MEC."""
    out: dict[str, int | tuple[int, ...]] = {}
    for name, v in splits.items():
        if isinstance(v, bool):
            raise AgentError(f"split of pass {name!r} must be an integer or a list, got {v!r}")
        if isinstance(v, int):
            out[str(name)] = v
        elif isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                               for x in v):
            out[str(name)] = tuple(v)
        else:
            raise AgentError(f"split of pass {name!r} must be an integer or a non-empty list of "
                             f"integers, got {v!r}")
    return Decision(splits=out, action=action)


def tokens_appended(pass_name: str, parameters: Mapping[str, object], input_bytes: int) -> int:
    """Tokens one instance of the pass adds to its blocks' state (the KV cache): the prompt
    length for ``prefill`` (the profile's ``prompt_tokens``, else its int64 input size), 1 for
    ``decode``, 0 otherwise."""
    if pass_name == "decode":
        return 1
    if pass_name == "prefill":
        p = parameters.get("prompt_tokens")
        return int(p) if isinstance(p, int) and p > 0 else max(int(input_bytes) // 8, 1)
    return 0
