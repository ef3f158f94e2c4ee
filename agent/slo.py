"""Service-level objectives per request, and goodput: the share of requests that meet them.

An :class:`Slo` bounds any of: the end-to-end latency (``e2e_s``, start of the request to its
final output, the quantity every table averages), the time to the first user-visible output
(``ttft_s``, an LLM's first token) and the mean time per output token after the first
(``tpot_s``; requests with one output have none and meet it). A request meets the SLO when it
meets every bound that is set; a request whose workload carries its own ``deadline_s``
(:class:`agent.policy.Workload`) is held to that end-to-end bound instead of ``e2e_s``.
Goodput is the share of requests that meet it, as serving benchmarks (vLLM, DistServe) report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import AgentError
from agent.latency import RequestResult

__all__ = ["Slo", "goodput"]


@dataclass(frozen=True)
class Slo:
    """Per-request bounds in seconds (``None``: not bounded)."""

    e2e_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        for flag, v in (("--slo-e2e", self.e2e_s), ("--slo-ttft", self.ttft_s),
                        ("--slo-tpot", self.tpot_s)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise AgentError(f"{flag} must be a positive number of seconds, got {v}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.e2e_s, self.ttft_s, self.tpot_s))

    def met(self, res: RequestResult, deadline_s: float | None = None) -> bool:
        """Whether ``res`` meets every bound (``deadline_s``: the request's own e2e bound)."""
        e2e = deadline_s if deadline_s is not None else self.e2e_s
        if e2e is not None and res.latency_s > e2e:
            return False
        if self.ttft_s is not None and res.ttft_s > self.ttft_s:
            return False
        tpot = res.tpot_s
        return not (self.tpot_s is not None and tpot is not None and tpot > self.tpot_s)

    def describe(self) -> str:
        parts = [f"{k} <= {v:g} s" for k, v in (("e2e", self.e2e_s), ("TTFT", self.ttft_s),
                                                 ("TPOT", self.tpot_s)) if v is not None]
        return ", ".join(parts) if parts else "none"


def goodput(slo: Slo, results: Iterable[RequestResult]) -> float:
    """Share of ``results`` meeting ``slo`` (0 when there are none)."""
    flags = [slo.met(r) for r in results]
    return sum(flags) / len(flags) if flags else 0.0
