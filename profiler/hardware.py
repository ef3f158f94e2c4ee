"""Hardware classes: how a session is configured to stand for a device or the MEC.

* ``device``: one ONNX Runtime intra-op thread, one inter-op thread, no spinning, the process
  pinned to one core with ``os.sched_setaffinity`` (a phone big core stands in for it).
* ``mec``: a GPU through ORT's CUDA provider when that provider is installed; else, when torch
  sees a CUDA GPU, torch on that GPU timing the same blocks (zoo models only, see
  :mod:`profiler.torch_timing`); otherwise this machine's CPU with all its threads, labelled
  ``mec-cpu`` and saying no GPU was available.

The backend (``onnxruntime-cpu``, ``onnxruntime-cuda``, ``torch-cuda``, ``torch-cpu``) is
recorded in every profile. ``backend="torch"`` forces torch timing (on the CPU when there is
no GPU), ``backend="onnxruntime"`` forbids it.

Threads are always set explicitly (ORT otherwise sizes its pools from the host) and
recorded, with the versions of everything that ran, in :class:`profiler.schema.Hardware`.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import onnxruntime as ort

from .machine import cpu_model
from .schema import Hardware, ProfileError

__all__ = ["BACKENDS", "CLASSES", "HardwareClass", "cpu_model", "pinned", "resolve_class"]

CLASSES = ("device", "mec")
BACKENDS = ("auto", "onnxruntime", "torch")


@dataclass(frozen=True)
class HardwareClass:
    """A resolved class: the label written to profiles and the session settings."""

    label: str  # "device", "mec-gpu", "mec-cpu"
    intra_threads: int
    inter_threads: int
    providers: tuple[str, ...]
    core: int | None  # the core the process is pinned to, if any
    gpu: str | None
    quota: float | None = None  # fraction of one core (cgroup CPU quota), device class only
    torch_device: str | None = None  # "cuda" or "cpu": blocks timed with torch, not ORT

    @property
    def backend(self) -> str:
        """What times the blocks: ``onnxruntime-cpu|cuda`` or ``torch-cpu|cuda``."""
        if self.torch_device is not None:
            return f"torch-{self.torch_device}"
        return f"onnxruntime-{self.ort_device}"

    @property
    def ort_device(self) -> str:
        """Where bound inputs and outputs live: ``cuda`` for ORT's CUDA provider, else ``cpu``."""
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_threads
        so.inter_op_num_threads = self.inter_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def describe(self, note: str = "") -> Hardware:
        allowed = len(os.sched_getaffinity(0))
        machine = f"{cpu_model()}, {os.cpu_count()} logical cores ({allowed} allowed)"
        if self.label.startswith("device"):
            runtime = (f"torch {torch_version()} CPU, {self.intra_threads} thread, block "
                       "boundaries stamped by forward hooks" if self.torch_device else
                       f"ONNX Runtime CPU, {self.intra_threads} intra-op thread, "
                       f"{self.inter_threads} inter-op, spinning off")
            desc = f"device class: {runtime}, pinned to core {self.core} of {machine}"
            if self.quota is not None:
                from .quota import PERIOD_US, quota_mechanism

                desc += (f", slowed by a CPU quota of {100 * self.quota:.0f}% of that core "
                         f"({quota_mechanism()}, period {PERIOD_US} us)")
        elif self.label == "mec-gpu" and self.torch_device == "cuda":
            why = ("chosen with --backend torch"
                   if "CUDAExecutionProvider" in ort.get_available_providers()
                   else "this onnxruntime has no CUDA provider")
            desc = (f"MEC class: torch {torch_version()} CUDA on {self.gpu} ({why}); the same "
                    "blocks as the ONNX pieces, timed with CUDA "
                    "events at block boundaries in one forward pass, the whole pass in "
                    "hook-free passes interleaved with them")
        elif self.label == "mec-gpu":
            desc = f"MEC class: ONNX Runtime CUDA provider on {self.gpu}"
        else:
            gpu = _torch_gpu()
            why = (f"a GPU ({gpu}) exists but this onnxruntime has no CUDA provider and torch "
                   "timing was not chosen (it needs a zoo model)" if gpu else
                   "no GPU was available")
            runtime = (f"torch {torch_version()} CPU, block boundaries stamped by forward hooks"
                       if self.torch_device == "cpu" else
                       f"ONNX Runtime CPU, inter-op {self.inter_threads}, spinning off")
            desc = (f"MEC class on CPU: {why}, so this is {machine} with all "
                    f"{self.intra_threads} threads ({runtime}); a real MEC GPU is much faster")
        if note:
            desc += f"; {note}"
        desc += (f"; 1-min load average {os.getloadavg()[0]:.1f} when written (other jobs on "
                 "the machine inflate and spread the timings)")
        import numpy
        import onnx

        versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                    "numpy": numpy.__version__, "python": platform.python_version(),
                    "kernel": platform.release(), "intra_op_threads": str(self.intra_threads),
                    "inter_op_threads": str(self.inter_threads),
                    "allow_spinning": "0", "pinned_core": str(self.core),
                    "cpu_quota": str(self.quota)}
        try:
            import torch

            versions["torch"] = torch.__version__
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        return Hardware(hw_class=self.label, cpu=cpu_model(), gpu=self.gpu,
                        threads=self.intra_threads,
                        backend=self.backend,
                        versions=versions, description=desc)


def resolve_class(name: str, threads: int | None = None, core: int | None = None,
                  quota: float | None = None, backend: str = "auto") -> HardwareClass:
    """The session settings for ``device`` or ``mec`` on this machine.

    ``quota`` (device only): a fraction of one core enforced by a cgroup CPU quota; the class
    is then labelled ``device-q<percent>`` (e.g. ``device-q50``), a slower phone.
    ``backend``: ``auto`` (ORT, or torch CUDA for ``mec`` when ORT has no CUDA provider but
    torch sees a GPU), ``onnxruntime`` or ``torch``.
    """
    if backend not in BACKENDS:
        raise ProfileError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    allowed = sorted(os.sched_getaffinity(0))
    if quota is not None and name != "device":
        raise ProfileError("--cpu-quota applies to the device class only")
    if name == "device":
        c = allowed[-1] if core is None else core
        if c not in allowed:
            raise ProfileError(f"--core {c} is not a core this process may run on "
                               f"(allowed: {allowed})")
        if quota is not None:
            from .quota import quota_mechanism

            if not 0.01 <= quota < 1.0:
                raise ProfileError(f"--cpu-quota must be within 0.01..1 (a fraction of one "
                                   f"core), got {quota}")
            if quota_mechanism() is None:
                raise ProfileError("--cpu-quota needs the cgroup cpu controller, which this "
                                   "machine lacks")
        label = "device" if quota is None else f"device-q{round(100 * quota)}"
        return HardwareClass(label, threads or 1, 1, ("CPUExecutionProvider",), c, None, quota,
                             "cpu" if backend == "torch" else None)
    if name == "mec":
        n = threads or len(allowed)
        cpu = ("CPUExecutionProvider",)
        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        gpu = _torch_gpu()
        if ort_cuda and backend != "torch":
            return HardwareClass("mec-gpu", n, 1, ("CUDAExecutionProvider", *cpu), None,
                                 _gpu_name())
        if gpu and backend != "onnxruntime":
            return HardwareClass("mec-gpu", n, 1, cpu, None, gpu, None, "cuda")
        return HardwareClass("mec-cpu", n, 1, cpu, None, None, None,
                             "cpu" if backend == "torch" else None)
    raise ProfileError(f"unknown hardware class {name!r}; use one of {', '.join(CLASSES)}")


def torch_version() -> str:
    import torch

    return str(torch.__version__)


def _torch_gpu() -> str | None:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    except (ImportError, RuntimeError):  # pragma: no cover
        return None


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:  # pragma: no cover
        pass
    return "CUDA GPU"


@contextlib.contextmanager
def pinned(hw: HardwareClass) -> Iterator[None]:
    """Pin this process to ``hw.core`` (if any) and apply ``hw.quota`` (if any) for the
    duration; restores the old mask and cgroup."""
    with contextlib.ExitStack() as stack:
        if hw.quota is not None:
            from .quota import cpu_quota

            stack.enter_context(cpu_quota(hw.quota))
        if hw.core is None:
            yield
            return
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {hw.core})
        try:
            yield
        finally:
            os.sched_setaffinity(0, old)
