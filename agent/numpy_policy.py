"""A trained SB3 actor-critic policy's action choice in numpy: no torch in the process.

A device process that runs a trained policy with SB3 imports torch and holds ~300 MB for a
64x64 MLP (measured: 316 MiB max RSS and 3.1 s to load ``policies/gpt2.zip``, against 40 MiB
for a baseline policy). :class:`NumpyActor` reads the policy network straight from the SB3
``.zip`` (``policy.pth`` is a zip of a pickle and raw little-endian storages, read here with
a restricted unpickler that builds numpy arrays and nothing else) and computes what
``predict(obs, deterministic=True, action_masks=mask)`` returns for PPO, MaskablePPO and A2C
``MlpPolicy`` with the default activation (tanh) and no observation normalisation: the masked
argmax of the action logits. ``tests/test_numpy_policy.py`` checks it against SB3 on
observations recorded in the simulator, and that :class:`agent.policies.SB3Policy` with
``backend="numpy"`` (what emulator device processes use) decides as the SB3 backend does.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError

__all__ = ["NumpyActor", "read_state_dict"]

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_,
           "ByteStorage": np.uint8}
_TORCH_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
                 "int64": np.int64, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8}


class _Storage:
    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride)).copy()


class _Unpickler(pickle.Unpickler):
    """Only what a state dict of tensors needs; anything else is refused."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _Storage(_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _Storage(_TORCH_DTYPES[name])
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a policy state dict")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, storage, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"),
                             count=int(numel))


def read_state_dict(pth: bytes) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``'d state dict (zip format), as numpy arrays."""
    with zipfile.ZipFile(io.BytesIO(pth)) as z:
        pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise AgentError("policy.pth is not in torch's zip format")
        prefix = pkl.rsplit("/", 1)[0]
        if f"{prefix}/byteorder" in z.namelist() and z.read(f"{prefix}/byteorder") != b"little":
            raise AgentError("policy.pth was saved big-endian")
        out = _Unpickler(z.read(pkl), z, prefix).load()
    if not isinstance(out, dict):
        raise AgentError("policy.pth does not hold a state dict")
    return {str(k): np.asarray(v) for k, v in out.items()}


class NumpyActor:
    """The deterministic, masked action choice of an SB3 actor-critic ``MlpPolicy``."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        try:
            with zipfile.ZipFile(p) as z:
                data = json.loads(z.read("data"))
                state = read_state_dict(z.read("policy.pth"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
            raise AgentError(f"{p}: not a readable SB3 policy ({e})") from e
        kwargs = data.get("policy_kwargs") or {}
        extra = sorted(set(kwargs) - {"net_arch"})
        if extra:
            raise AgentError(f"{p}: policy_kwargs {extra} are not supported without torch "
                             "(only net_arch, with the default tanh activation)")
        layers = sorted({int(m.group(1)) for k in state
                         if (m := re.fullmatch(r"mlp_extractor\.policy_net\.(\d+)\.weight", k))})
        if "action_net.weight" not in state:
            raise AgentError(f"{p}: no action_net in the policy (not an actor-critic policy)")
        self.hidden = [(state[f"mlp_extractor.policy_net.{i}.weight"].astype(np.float32),
                        state[f"mlp_extractor.policy_net.{i}.bias"].astype(np.float32))
                       for i in layers]
        self.out = (state["action_net.weight"].astype(np.float32),
                    state["action_net.bias"].astype(np.float32))
        cls = data.get("policy_class")
        module = str(cls.get("__module__", "")) if isinstance(cls, dict) else ""
        self.maskable = "maskable" in module
        """A MaskablePPO policy: its action choice honours the action mask."""
        self.obs_size = int(self.hidden[0][0].shape[1] if self.hidden else self.out[0].shape[1])
        self.n_actions = int(self.out[0].shape[0])

    def logits(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float32).reshape(-1, self.obs_size)
        for w, b in self.hidden:
            h = np.tanh(h @ w.T + b)
        w, b = self.out
        out: np.ndarray = h @ w.T + b
        return out

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None) -> int:
        """The action ``predict(obs, deterministic=True, action_masks=...)`` picks."""
        z = self.logits(obs)[0].astype(np.float64)
        if action_masks is not None:
            z = np.where(np.asarray(action_masks, dtype=bool), z, -np.inf)
        return int(np.argmax(z))
