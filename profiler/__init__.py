"""Profiler: cut generative models into blocks and time them per hardware class.

``python -m profiler`` is the command line; :func:`profile_zoo` / :func:`profile_onnx` the
API. The output is a :class:`~profiler.schema.Profile` (see :mod:`profiler.schema`).
"""

from .schema import Profile, ProfileError, load_profile, save_profile

__all__ = ["Profile", "ProfileError", "load_profile", "profile_onnx", "profile_zoo",
           "save_profile"]


def __getattr__(name: str) -> object:  # heavy imports (torch, onnxruntime) only when used
    if name in ("profile_onnx", "profile_zoo"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
