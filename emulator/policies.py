"""The emulator's thin adapter to the agent's policy factory (one latency model: ``agent/``).

:func:`load_policy` builds a policy with :func:`agent.policies.make_policy` and turns its errors
into :class:`~emulator.errors.EmulatorError`. The spec ``default`` (the shipped trained policy
``policies/<model>.zip``) falls back to ``greedy`` with a note when that file does not exist
yet, so the bare demo runs before a policy is trained.
"""

from __future__ import annotations

from typing import Any

from agent.policy import Policy
from emulator.errors import EmulatorError
from profiler.schema import Profile, ProfileError

__all__ = ["load_policy"]


def load_policy(spec: str, device_profile: Profile, mec_profile: Profile, *, light: bool = False,
                **kw: Any) -> tuple[Policy, str]:
    """Return ``(policy, note)``; ``note`` is empty unless ``default`` fell back to greedy (or,
    with ``light``, a trained policy fell back to SB3).

    ``light``: a trained policy's network is evaluated with numpy
    (:class:`agent.numpy_policy.NumpyActor`, no torch in the process: what device processes
    use); a policy the numpy actor does not cover (DQN, custom ``policy_kwargs``) is loaded
    with SB3 instead, and the note says so."""
    try:
        from agent.errors import AgentError
        from agent.policies import POLICIES_DIR, make_policy
    except ImportError as e:  # the agent package is not installed or is incomplete
        raise EmulatorError(f"cannot load policies: agent.policies is not importable ({e}); "
                            "run bash scripts/setup.sh", 2) from e
    note = ""
    if spec == "default":
        path = POLICIES_DIR / f"{device_profile.model.name}.zip"
        if not path.is_file():
            note = (f"note: no trained default policy {path} yet; using the greedy policy "
                    "(train one with python -m agent.train)")
            spec = "greedy"
    try:
        if light:
            try:
                return make_policy(spec, device_profile, mec_profile, policy_backend="numpy",
                                   **kw), note
            except AgentError as e:
                light_error = str(e)
            pol = make_policy(spec, device_profile, mec_profile, **kw)
            return pol, (f"note: policy {spec!r} evaluated with SB3 (torch), not numpy: "
                         f"{light_error}")
        return make_policy(spec, device_profile, mec_profile, **kw), note
    except (AgentError, ProfileError) as e:
        raise EmulatorError(f"policy {spec!r}: {e}", 2) from e
    except ImportError as e:
        raise EmulatorError(f"policy {spec!r} needs a package that is missing ({e}); "
                            "run bash scripts/setup.sh", 2) from e
