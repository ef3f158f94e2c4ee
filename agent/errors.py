"""Errors of the ``agent`` package.

Hierarchy (one place, so callers know what to catch)::

    ValueError
     └── AgentError          bad input to the agent: an unknown policy spec, a policy file
          │                  that does not fit, nonsense parameters; the message says how to fix it
          ├── PolicyMismatchError   an SB3 policy whose observation or action space does not
          │                         match the profiles and scenario it is used with
          └── ScenarioFileError     a scenario TOML file that cannot be used (syntax, an
                                    unknown key, a wrong type): names the file, line and key

Profiles and traces raise their own :class:`profiler.schema.ProfileError` and
:class:`traces.TraceError` (both ``ValueError``); the command lines print any of these as one
line and exit with status 2.
"""

from __future__ import annotations

__all__ = ["AgentError", "PolicyMismatchError", "ScenarioFileError"]


class AgentError(ValueError):
    """Bad input to the agent (policy spec, policy file, parameters); the message says the fix."""


class PolicyMismatchError(AgentError):
    """A trained policy whose observation/action space does not fit the profiles it is used with."""


class ScenarioFileError(AgentError):
    """A scenario file that cannot be used; the message is ``FILE:LINE: what was expected``."""
