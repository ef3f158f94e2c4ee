"""Timing zoo blocks with torch (the MEC GPU path when ONNX Runtime has no CUDA provider).

No GPU is needed: the same code times on the CPU (``--backend torch``), and the block
boundaries, the block order and the bytes must be those of the ONNX pieces.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from profiler import hardware
from profiler.build import profile_zoo
from profiler.hardware import resolve_class
from profiler.schema import ProfileError, load_profile, save_profile
from profiler.torch_timing import block_heads, time_pass_torch
from profiler.zoo import get_model

pytestmark = pytest.mark.onnx

ROOT = Path(__file__).resolve().parents[1]


def test_block_heads_are_the_modules_the_block_rule_names() -> None:
    spec = get_model("gpt2-tiny").build(get_model("gpt2-tiny").defaults)[0]
    heads = block_heads(spec.module, spec.block_key)
    # GPT-2 tiny has two layers; submodules of a head (h.0.attn, embed.wte) are not heads
    assert [(n, b) for n, b, _ in heads] == [("embed", "embed"), ("h.0", "h.0"),
                                             ("h.1", "h.1"), ("head", "head")]


def test_sd15_tiny_unet_heads_cover_every_onnx_block() -> None:
    # the stem is three modules (time_proj, time_embedding, conv_in) that make one block
    spec = get_model("sd15-tiny").build({"steps": 1})[1]
    heads = block_heads(spec.module, spec.block_key)
    stem = [n for n, b, _ in heads if b == "stem"]
    assert sorted(stem) == ["m.conv_in", "m.time_embedding", "m.time_proj"]
    blocks = list(dict.fromkeys(b for _, b, _ in heads))
    assert blocks[0] == "stem" and "mid_block.resnets.0" in blocks and blocks[-1] == "out"


def test_torch_blocks_telescope_and_are_checked_against_the_onnx_order() -> None:
    spec = get_model("gpt2-tiny").build(get_model("gpt2-tiny").defaults)[1]  # decode
    names = ["embed", "h.0", "h.1", "head"]
    t_call = time.perf_counter()
    t = time_pass_torch("decode", spec.module, spec.inputs, spec.block_key, names,
                        torch.device("cpu"), warmup=0, runs=3, threads=1, progress=False)
    t_call = (time.perf_counter() - t_call) * 1e3
    assert len(t.blocks) == 4 and all(b.runs == 3 and b.median > 0 for b in t.blocks)
    assert t.whole.runs == 3 and t.whole.median > 0
    # independent clocks: the cold pass and three timed passes all ran inside this call
    assert t.whole_cold_ms + 3 * t.whole.median * 0.5 <= t_call
    # and a plain forward (no hooks) timed here is about the hooked whole pass: 0.3 .. 3 x
    # (hooks cost little; loose because the build machine is shared and noisy)
    torch.set_num_threads(1)
    plain = []
    with torch.no_grad():
        spec.module(*spec.inputs)
        for _ in range(5):
            t0 = time.perf_counter()
            spec.module(*spec.inputs)
            plain.append((time.perf_counter() - t0) * 1e3)
    ratio = t.whole.median / statistics.median(plain)
    assert 0.3 < ratio < 3.0, (t.whole.median, plain)
    with pytest.raises(ProfileError, match=r"torch runs the blocks as \['embed', 'h.0'"):
        time_pass_torch("decode", spec.module, spec.inputs, spec.block_key,
                        ["embed", "h.1", "h.0", "head"], torch.device("cpu"), warmup=0, runs=1,
                        progress=False)


def test_torch_profile_matches_the_onnx_profile_blocks(tmp_path: Path) -> None:
    root = tmp_path / "work"
    hw_t = resolve_class("device", backend="torch")
    hw_o = resolve_class("device")
    assert (hw_t.backend, hw_o.backend) == ("torch-cpu", "onnxruntime-cpu")
    pt = profile_zoo("gpt2-tiny", {}, hw_t, root, warmup=1, runs=5, min_seconds=0.0,
                     quiet=True)
    po = profile_zoo("gpt2-tiny", {}, hw_o, root, warmup=0, runs=1, min_seconds=0.0,
                     quiet=True)
    assert pt.hardware.backend == "torch-cpu" and "torch" in pt.hardware.description
    for a, b in zip(pt.passes, po.passes, strict=True):
        assert [x.name for x in a.blocks] == [x.name for x in b.blocks]
        assert [x.out_bytes for x in a.blocks] == [x.out_bytes for x in b.blocks]
        assert [x.weight_bytes for x in a.blocks] == [x.weight_bytes for x in b.blocks]
        assert a.chain_max_error <= 1e-4
        assert all(x.latency.runs >= 5 for x in a.blocks)
        # hooks cost little: the blocks of a hooked pass add up to about a plain pass
        # (a loose bound: the build machine is shared and noisy)
        s = sum(x.latency.median for x in a.blocks)
        assert 0.5 < s / a.whole.median < 2.0, (a.name, s, a.whole.median)
    save_profile(pt, tmp_path / "t.json")
    assert load_profile(tmp_path / "t.json") == pt


def test_class_resolution_picks_torch_cuda_only_without_ort_cuda(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_torch_gpu", lambda: "NVIDIA H100")
    monkeypatch.setattr(hardware.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    hw = resolve_class("mec")
    assert (hw.label, hw.backend, hw.gpu) == ("mec-gpu", "torch-cuda", "NVIDIA H100")
    rec = hw.describe()
    assert rec.backend == "torch-cuda" and rec.gpu == "NVIDIA H100"
    assert "torch" in rec.description and "has no CUDA provider" in rec.description
    assert resolve_class("mec", backend="onnxruntime").label == "mec-cpu"
    monkeypatch.setattr(hardware.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    hw = resolve_class("mec")
    assert (hw.label, hw.backend, hw.ort_device) == ("mec-gpu", "onnxruntime-cuda", "cuda")
    forced = resolve_class("mec", backend="torch")
    assert forced.backend == "torch-cuda"
    assert "chosen with --backend torch" in forced.describe().description


def test_class_resolution_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_torch_gpu", lambda: None)
    monkeypatch.setattr(hardware.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_class("mec").backend == "onnxruntime-cpu"
    hw = resolve_class("mec", backend="torch")
    assert (hw.label, hw.backend) == ("mec-cpu", "torch-cpu")
    with pytest.raises(ProfileError, match="unknown backend 'tensorrt'"):
        resolve_class("mec", backend="tensorrt")


def test_cli_refuses_torch_for_an_onnx_file(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"\x08\x07")
    r = subprocess.run([sys.executable, "-m", "profiler", "profile", str(f), "--backend", "torch",
                        "--out", str(tmp_path / "o.json")], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "--backend torch needs a zoo model" in lines[0]


def test_cut_from_takes_bytes_from_the_file_and_times_here(tmp_path: Path) -> None:
    # the GPU path: cut, bytes, state and chain check from a checked profile; nothing exported
    ref = load_profile(ROOT / "profiles" / "gpt2-tiny.mec-cpu.json")
    hw = resolve_class("mec", backend="torch")
    root = tmp_path / "work"
    prof = profile_zoo("gpt2-tiny", {}, hw, root, warmup=0, runs=2, min_seconds=0.0,
                       quiet=True, batch_sizes=(1, 2), cut_from=ref)
    assert not root.exists()  # no export, no pieces
    assert prof.hardware.backend == "torch-cpu"
    for a, b in zip(prof.passes, ref.passes, strict=True):
        assert [x.name for x in a.blocks] == [x.name for x in b.blocks]
        assert [x.out_bytes for x in a.blocks] == [x.out_bytes for x in b.blocks]
        assert [x.out_tensors for x in a.blocks] == [x.out_tensors for x in b.blocks]
        assert [(x.state_bytes_per_token, x.state_bytes_fixed) for x in a.blocks] == \
            [(x.state_bytes_per_token, x.state_bytes_fixed) for x in b.blocks]
        assert (a.input_bytes, a.output_bytes, a.chain_max_error) == \
            (b.input_bytes, b.output_bytes, b.chain_max_error)
        # the timings are this run's, not the file's: their run counts differ
        assert all(x.latency.runs >= 2 for x in a.blocks) and a.whole.runs >= 2
        assert [x.latency for x in a.blocks] != [x.latency for x in b.blocks]
        assert a.batch_sizes == (1, 2) and "cut and bytes from" in a.note


@pytest.mark.parametrize("args,expect", [
    (["gpt2-tiny", "--prompt-tokens", "16"], "request shape differs from this run's in"),
    (["gpt2", ], "profiles model 'gpt2-tiny', not 'gpt2'"),
])
def test_cut_from_refuses_another_model_or_shape(tmp_path: Path, args: list[str],
                                                 expect: str) -> None:
    r = subprocess.run([sys.executable, "-m", "profiler", "model", *args, "--class", "mec",
                        "--backend", "torch", "--cut-from",
                        str(ROOT / "profiles" / "gpt2-tiny.mec-cpu.json"),
                        "--out", str(tmp_path / "o.json")], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and expect in lines[0], r.stderr


@pytest.mark.parametrize("model", ["gpt2", "sd15"])
def test_shipped_gpu_profiles_share_the_cpu_cut_and_batch_flatter(model: str) -> None:
    # profiles/*.mec-gpu.json (benchmarks/gpu_profiles.sh on an H200) take the cut and bytes of
    # the CPU profile; a GPU runs a batch of 8 in far less than 8 single passes
    gpu = load_profile(ROOT / "profiles" / f"{model}.mec-gpu.json")
    cpu = load_profile(ROOT / "profiles" / f"{model}.mec-cpu.json")
    assert gpu.hardware.hw_class == "mec-gpu" and gpu.hardware.backend == "torch-cuda"
    assert gpu.hardware.gpu is not None and "H200" in gpu.hardware.gpu
    for g, c in zip(gpu.passes, cpu.passes, strict=True):
        assert [(b.name, b.out_bytes) for b in g.blocks] == [(b.name, b.out_bytes)
                                                            for b in c.blocks]
        assert g.batch_sizes == (1, 2, 4, 8, 16, 32)
        assert g.whole_at(8).median < 8 * g.whole.median
        assert g.whole.median < c.whole.median  # an H200 beats two CPU threads
