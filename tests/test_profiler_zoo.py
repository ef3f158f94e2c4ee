"""Zoo models cut at module boundaries: bytes and outputs against the torch model itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from profiler.build import profile_zoo
from profiler.cut import build_pieces, partition_by_scope
from profiler.export import export_pass
from profiler.graph import analyse, load_onnx
from profiler.hardware import resolve_class
from profiler.schema import ProfileError, load_profile, save_profile
from profiler.timing import run_chain
from profiler.zoo import MODELS, get_model

pytestmark = pytest.mark.onnx


@pytest.fixture(scope="module")
def gpt2_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, Path]:
    z = get_model("gpt2-tiny")
    specs = z.build(z.defaults)
    wd = tmp_path_factory.mktemp("gpt2-tiny")
    for s in specs:
        export_pass(s, wd / f"{s.name}.onnx")
    return specs, wd


def _torch_outputs(spec) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return [o.numpy() for o in spec.module(*spec.inputs)]


@pytest.mark.parametrize("pass_index", [0, 1])
def test_chained_pieces_match_torch(gpt2_tiny, tmp_path: Path, pass_index: int) -> None:  # type: ignore[no-untyped-def]
    specs, wd = gpt2_tiny
    spec = specs[pass_index]
    info = analyse(load_onnx(wd / f"{spec.name}.onnx"))
    part = partition_by_scope(info, spec.block_key)
    assert part.names == ["embed", "h.0", "h.1", "head"]
    pieces = build_pieces(info, part, wd, tmp_path / "pieces", spec.state_inputs)
    feeds = {n: x.numpy() for n, x in zip(spec.input_names, spec.inputs, strict=True)}
    values = run_chain(pieces, feeds, resolve_class("mec"))
    for name, want in zip(spec.output_names, _torch_outputs(spec), strict=True):
        got = values[name]
        assert got.shape == want.shape
        if want.dtype.kind == "f":
            assert np.max(np.abs(got - want)) < 1e-4, name
        else:
            assert np.array_equal(got, want), name


def test_cut_bytes_equal_torch_hidden_state(gpt2_tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    specs, wd = gpt2_tiny
    spec = specs[0]  # prefill
    seen: dict[str, torch.Tensor] = {}
    model = spec.module
    hooks = [model.h[0].register_forward_hook(lambda m, i, o: seen.__setitem__("h0", o[0])),
             model.embed.register_forward_hook(lambda m, i, o: seen.__setitem__("embed", o))]
    try:
        _torch_outputs(spec)
    finally:
        for h in hooks:
            h.remove()
    info = analyse(load_onnx(wd / "prefill.onnx"))
    part = partition_by_scope(info, spec.block_key)
    pieces = build_pieces(info, part, wd, tmp_path / "pieces", spec.state_inputs)
    feeds = {n: x.numpy() for n, x in zip(spec.input_names, spec.inputs, strict=True)}
    values = run_chain(pieces, feeds, resolve_class("mec"))
    for piece, key in [(pieces[0], "embed"), (pieces[1], "h0")]:
        t = seen[key]
        expect = int(np.prod(t.shape)) * t.element_size()
        assert len(piece.crossing) == 1  # the hidden state only: masks are constants
        assert sum(values[x].nbytes for x in piece.crossing) == expect
        np.testing.assert_allclose(values[piece.crossing[0]], t.numpy(), atol=1e-4)


def test_decode_kv_cache_never_crosses(gpt2_tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    specs, wd = gpt2_tiny
    spec = specs[1]
    info = analyse(load_onnx(wd / "decode.onnx"))
    part = partition_by_scope(info, spec.block_key)
    pieces = build_pieces(info, part, wd, tmp_path / "pieces", spec.state_inputs)
    d = MODELS["gpt2-tiny"].describe(MODELS["gpt2-tiny"].defaults)["d_model"]
    for p in pieces[:-1]:
        assert [x for x in p.crossing if "past" in x] == []
    assert "past_key.1" in pieces[2].inputs  # layer 1's cache goes to layer 1's piece
    feeds = {n: x.numpy() for n, x in zip(spec.input_names, spec.inputs, strict=True)}
    values = run_chain(pieces, feeds, resolve_class("mec"))
    assert sum(values[x].nbytes for x in pieces[1].crossing) == d * 4


def test_profile_zoo_writes_a_valid_profile(gpt2_tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _specs, wd = gpt2_tiny
    root = wd.parent / "root"
    # reuse the fixture's export by placing it where profile_zoo looks
    from profiler.export import work_dir_for

    target = work_dir_for(root, "gpt2-tiny", MODELS["gpt2-tiny"].defaults)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(wd)
    prof = profile_zoo("gpt2-tiny", {}, resolve_class("device"), root, warmup=0, runs=2,
                       min_seconds=0.0, quiet=True)
    pre, dec = prof.passes
    p_tokens = MODELS["gpt2-tiny"].defaults["prompt_tokens"]
    assert (pre.name, pre.repeat, dec.name, dec.repeat) == ("prefill", 1, "decode", 8)
    assert pre.input_bytes == p_tokens * 8 and pre.output_bytes == 8
    assert dec.input_bytes == 8 and dec.output_bytes == 8
    assert [b.latency.runs for b in pre.blocks] == [2] * 4
    assert pre.blocks[-1].out_bytes == 8 and pre.chain_max_error == 0.0
    assert prof.hardware.hw_class == "device" and prof.hardware.threads == 1
    for ps in (pre, dec):  # each layer's KV cache: 2 x 768 x 4 B per token, nothing fixed
        assert [(b.state_bytes_per_token, b.state_bytes_fixed) for b in ps.blocks] == \
            [(0, 0), (6144, 0), (6144, 0), (0, 0)]
    out = tmp_path / "p.json"
    save_profile(prof, out)
    assert load_profile(out) == prof


def test_profile_zoo_batch_curve(gpt2_tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # batch 1 reuses the fixture's export; batch 2 is exported, cut, checked and timed too
    _specs, wd = gpt2_tiny
    from profiler.export import work_dir_for

    root = tmp_path / "root"
    target = work_dir_for(root, "gpt2-tiny", MODELS["gpt2-tiny"].defaults)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(wd)
    prof = profile_zoo("gpt2-tiny", {}, resolve_class("mec"), root, warmup=0, runs=2,
                       min_seconds=0.0, quiet=True, passes=["decode"], batch_sizes=(1, 2))
    (dec,) = prof.passes
    assert dec.batch_sizes == (1, 2) and dec.whole_at(2).runs == 2
    assert all(b.latency_at(2).runs == 2 for b in dec.blocks)
    # bytes and state stay per request (batch 1): the decode's input is one token id
    assert dec.input_bytes == 8 and dec.blocks[1].state_bytes_per_token == 6144
    assert prof.model.parameters["batch_sizes"] == [1, 2]
    assert prof.model.parameters["batch"] == 1
    with pytest.raises(ProfileError, match="must include 1"):
        profile_zoo("gpt2-tiny", {}, resolve_class("mec"), root, batch_sizes=(2, 4))
    # torch timing (what a GPU uses): batch 2 times the batch-1 modules, nothing exported
    hw = resolve_class("mec", backend="torch")
    prof = profile_zoo("gpt2-tiny", {}, hw, root, warmup=0, runs=1, min_seconds=0.0,
                       quiet=True, passes=["decode"], batch_sizes=(1, 2))
    (dec,) = prof.passes
    assert prof.hardware.backend == "torch-cpu" and dec.batch_sizes == (1, 2)
    assert [b.name for b in dec.blocks] == ["embed", "h.0", "h.1", "head"]
    assert dec.whole_at(2).runs == 1 and dec.blocks[1].state_bytes_per_token == 6144


def test_unknown_model_suggests() -> None:
    with pytest.raises(ProfileError, match=r"Did you mean 'gpt2'\?"):
        get_model("gtp2")


@pytest.mark.slow
def test_sd15_tiny_unet_cut_carries_skip_connections(tmp_path: Path) -> None:
    z = get_model("sd15-tiny")
    unet = next(s for s in z.build({"steps": 2}) if s.name == "unet")
    path = export_pass(unet, tmp_path / "unet.onnx")
    info = analyse(load_onnx(path))
    part = partition_by_scope(info, unet.block_key)
    assert part.names[0] == "stem" and part.names[-1] == "out"
    assert any(n.startswith("up_blocks.") for n in part.names)
    pieces = build_pieces(info, part, tmp_path, tmp_path / "pieces", unet.state_inputs)
    assert max(len(p.crossing) for p in pieces) >= 3  # skip connections cross together
    assert all("prompt_embedding" not in p.crossing for p in pieces)
    feeds = {n: x.numpy() for n, x in zip(unet.input_names, unet.inputs, strict=True)}
    values = run_chain(pieces, feeds, resolve_class("mec"))
    want = _torch_outputs(unet) if isinstance(unet.module(*unet.inputs), tuple) else \
        [unet.module(*unet.inputs).detach().numpy()]
    assert np.max(np.abs(values["noise_pred"] - want[0])) < 1e-4


def test_bound_runs_compute_what_plain_runs_compute(gpt2_tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # timed runs go through I/O binding: the bound inputs must be the chained values, so a
    # bound run of every piece gives exactly the outputs of the plain chained run
    import onnxruntime as ort

    from profiler.timing import _Bound

    specs, wd = gpt2_tiny
    spec = specs[1]  # decode: KV-cache inputs bound too
    info = analyse(load_onnx(wd / f"{spec.name}.onnx"))
    pieces = build_pieces(info, partition_by_scope(info, spec.block_key), wd, tmp_path / "p",
                          spec.state_inputs)
    feeds = {n: x.numpy() for n, x in zip(spec.input_names, spec.inputs, strict=True)}
    hw = resolve_class("device")
    values = run_chain(pieces, feeds, hw)
    for p in pieces:
        sess = ort.InferenceSession(str(p.path), sess_options=hw.session_options(),
                                    providers=list(hw.providers))
        b = _Bound(sess, {k: values[k] for k in p.inputs}, hw.ort_device)
        assert b() > 0 and b() > 0  # twice: outputs rebound by ORT on each run
        got = b.binding.copy_outputs_to_cpu()
        for name, arr in zip(p.outputs, got, strict=True):
            assert np.array_equal(arr, values[name]), (p.name, name)


def test_export_cache_follows_the_architecture(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    # a zoo model whose architecture changes must not reuse the old export
    import dataclasses

    from profiler import zoo
    from profiler.export import work_dir_for

    z = MODELS["gpt2-tiny"]
    before = work_dir_for(tmp_path, "gpt2-tiny", z.defaults)
    assert before == work_dir_for(tmp_path, "gpt2-tiny", dict(z.defaults))
    wider = dataclasses.replace(z, describe=lambda p: {**z.describe(p), "d_model": 1024})
    monkeypatch.setitem(zoo.MODELS, "gpt2-tiny", wider)
    after = work_dir_for(tmp_path, "gpt2-tiny", z.defaults)
    assert after != before and after.parent == before.parent
