"""Plan templates: the agent's actions, a small documented set of generation plans per model family.

A template is a named rule that turns a request's workload (its pass repeats) into a
:class:`~agent.policy.Decision` with per-repetition splits; :func:`agent.plan.build_plan` turns
that into the request's plan. The family of a model is read from its pass names:

``llm`` (passes ``prefill`` and ``decode`` with the same blocks; ``N`` blocks)
    ``offload``            every pass on the MEC (the prompt goes up, tokens stream down)
    ``split:k``            blocks ``[0, k)`` on the device for prefill and every decode step,
                           ``k = 1..N-1`` (each layer's KV cache stays where the layer runs)
    ``kv-down``            prefill on the MEC, decode on the device (the KV cache moves down
                           after prefill, at the prompt's length)
    ``kv-up``              prefill on the device, decode on the MEC (the KV cache moves up)
    ``local``              everything on the device
``diffusion`` (a ``unet`` pass repeated ``S`` times, optional ``text_encoder``/``vae_decoder``)
    ``offload``            every pass on the MEC (the prompt goes up, the image comes down)
    ``offload/vae-local``  text encoder and UNet on the MEC, the last latent comes down and the
                           VAE decodes it on the device
    ``offload/te-local``   the text encoder on the device (its embedding goes up), the rest on
                           the MEC
    ``unet-mec``           only the UNet on the MEC (embedding up, last latent down)
    ``hybrid:F``           text encoder and the first ``m = round(F x S)`` UNet steps on the
                           MEC (``1 <= m <= S-1``), the other steps and the VAE on the device
                           (the latent and the embedding come down once), ``F`` in 1/4, 1/2, 3/4
    ``split:k``            every UNet step split at ``k`` (text encoder and VAE on the device),
                           for the :data:`UNET_SPLITS` interior ``k`` whose cut is smallest
    ``local``              everything on the device
``chain`` (any other model; its *main pass* is the one with the largest device time)
    ``split:k``            the main pass and every pass with the same blocks split at ``k`` in
                           ``0..N`` (``split:0`` is named ``offload``, ``split:N`` ``local``);
                           other passes on the MEC at ``k = 0``, else on the device

Action ``0`` is always ``offload`` and the last action ``local``. A template whose plan the
profile cannot express (``kv-down``/``kv-up`` on a schema-1 profile, which has no KV bytes) is
left out of the model's action set; asking for it by name is one clear error. The action set
is identified by :func:`action_set_id` (recorded in every policy sidecar; a policy of another
action set is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.policy import Decision, Workload

if TYPE_CHECKING:
    from agent.latency import LatencyModel

__all__ = ["ACTION_SET_VERSION", "HYBRID_FRACTIONS", "UNET_SPLITS", "Template",
           "action_set_id", "family", "fitting_templates", "hybrid_steps", "template_names",
           "templates_for"]

ACTION_SET_VERSION = "templates-1"
"""Version of the template rules above (part of :func:`action_set_id`)."""
HYBRID_FRACTIONS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
"""Fractions ``F`` of the ``hybrid:F`` templates (first ``F x S`` UNet steps on the MEC)."""
UNET_SPLITS = 3
"""How many UNet splits ``split:k`` a diffusion model's action set has (the cheapest cuts)."""

Splits = dict[str, int | tuple[int, ...]]


@dataclass(frozen=True)
class Template:
    """A named plan rule: ``splits(reps)`` gives every pass's split for a request whose passes
    repeat ``reps`` times; ``per_request`` says whether it depends on ``reps``."""

    name: str
    splits: Callable[[Mapping[str, int]], Splits]
    per_request: bool = False

    def decision(self, reps: Mapping[str, int], action: int = -1) -> Decision:
        return Decision(splits=self.splits(reps), action=action)


def family(model: LatencyModel) -> str:
    """``llm``, ``diffusion`` or ``chain`` (see the module docstring)."""
    names = {p.name: p for p in model.passes}
    if ("prefill" in names and "decode" in names
            and names["prefill"].block_names == names["decode"].block_names):
        return "llm"
    if "unet" in names:
        return "diffusion"
    return "chain"


def hybrid_steps(fraction: Fraction, steps: int) -> int:
    """UNet steps on the MEC of ``hybrid:F`` for a request of ``steps`` steps."""
    if steps < 2:
        return steps
    return min(max(round(fraction * steps), 1), steps - 1)


def _const(splits: Splits) -> Callable[[Mapping[str, int]], Splits]:
    return lambda reps: dict(splits)


def _llm(model: LatencyModel) -> list[Template]:
    n = model.pass_costs("decode").n_blocks
    others = {p.name: p.n_blocks for p in model.passes if p.name not in ("prefill", "decode")}

    def mk(name: str, pre: int, dec: int) -> Template:
        rest = {k: (0 if pre == 0 and dec == 0 else v) for k, v in others.items()}
        return Template(name, _const({**rest, "prefill": pre, "decode": dec}))

    out = [mk("offload", 0, 0)]
    out += [mk(f"split:{k}", k, k) for k in range(1, n)]
    out += [mk("kv-down", 0, n), mk("kv-up", n, 0), mk("local", n, n)]
    return out


def _diffusion(model: LatencyModel) -> list[Template]:
    unet = model.pass_costs("unet")
    n = unet.n_blocks
    full = {p.name: p.n_blocks for p in model.passes}
    aux = [p.name for p in model.passes if p.name != "unet"]
    te = "text_encoder" if "text_encoder" in full else None
    vae = "vae_decoder" if "vae_decoder" in full else None

    def place(unet_k: int, on_mec: set[str]) -> Splits:
        d: Splits = {a: (0 if a in on_mec else full[a]) for a in aux}
        d["unet"] = unet_k
        return d

    out = [Template("offload", _const(place(0, set(aux))))]
    if vae:
        out.append(Template("offload/vae-local", _const(place(0, set(aux) - {vae}))))
    if te:
        out.append(Template("offload/te-local", _const(place(0, set(aux) - {te}))))
    if te or vae:
        out.append(Template("unet-mec", _const(place(0, set(aux) - {te, vae}))))
    for f in HYBRID_FRACTIONS:
        def hyb(reps: Mapping[str, int], f: Fraction = f) -> Splits:
            s = int(reps.get("unet", unet.repeat))
            m = hybrid_steps(f, s)
            d = place(0, set(aux) - {vae})
            d["unet"] = (0,) * m + (n,) * (s - m) if s > 0 else 0
            return d
        out.append(Template(f"hybrid:{f.numerator}/{f.denominator}", hyb, per_request=True))
    cuts = sorted(range(1, n), key=lambda k: (unet.cut_bytes[k], k))[:UNET_SPLITS]
    out += [Template(f"split:{k}", _const(place(k, set()))) for k in sorted(cuts)]
    out.append(Template("local", _const(dict(full))))
    return out


def _chain(model: LatencyModel) -> list[Template]:
    reps = model.repeats(Workload(model.model))
    main = max(model.passes, key=lambda p: p.local_s * max(reps[p.name], 1))
    n = main.n_blocks
    group = {p.name for p in model.passes if p.block_names == main.block_names}

    def splits(k: int) -> Splits:
        return {p.name: (k if p.name in group else (0 if k == 0 else p.n_blocks))
                for p in model.passes}

    names = ["offload", *(f"split:{k}" for k in range(1, n)), "local"]
    return [Template(nm, _const(splits(k))) for k, nm in enumerate(names)]


def templates_for(model: LatencyModel) -> list[Template]:
    """Every template of the model's family, in action order (not checked against the
    profile: see :func:`fitting_templates`)."""
    fam = family(model)
    return _llm(model) if fam == "llm" else _diffusion(model) if fam == "diffusion" else \
        _chain(model)


def fitting_templates(model: LatencyModel) -> tuple[list[Template], dict[str, str]]:
    """The templates whose plans the profiles can express (for the default workload), and
    ``{name: why}`` of those left out."""
    wl = Workload(model.model)
    reps = model.repeats(wl)
    ok: list[Template] = []
    left: dict[str, str] = {}
    for t in templates_for(model):
        try:
            model.plan(t.decision(reps), wl)
        except AgentError as e:
            left[t.name] = str(e)
            continue
        ok.append(t)
    return ok, left


def template_names(model: LatencyModel) -> list[str]:
    return [t.name for t in fitting_templates(model)[0]]


def action_set_id(model: LatencyModel) -> str:
    """``templates-1:<family>:<names>``: what a policy's action indices mean."""
    return f"{ACTION_SET_VERSION}:{family(model)}:{','.join(template_names(model))}"
