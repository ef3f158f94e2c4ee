"""Profiling ONNX files nobody here wrote: dynamic shapes, skip connections, control flow."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.nn import functional as F

from profiler.build import profile_onnx
from profiler.cut import build_pieces, partition_auto
from profiler.graph import analyse, fold_static_shapes, load_onnx, resolve_shapes
from profiler.hardware import resolve_class
from profiler.schema import ProfileError
from profiler.timing import run_chain


class TinyUNet(nn.Module):
    """Encoder, bottleneck with a residual, decoder with a long skip (concat) and a global add."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(16, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.mid2 = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Conv2d(16, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.relu(self.down(e1))))
        m = F.relu(self.mid(e2)) + e2
        m = F.relu(self.mid2(m)) + m
        d = F.relu(self.dec(torch.cat([self.up(m), e1], 1)))
        return self.out(d) + x


def export_dynamic(model: nn.Module, path: Path) -> Path:
    from torch.export import Dim

    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, input_names=["x"],
                          output_names=["y"],
                          dynamic_shapes={"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}})
    return path


@pytest.fixture(scope="module")
def tiny_unet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_dynamic(TinyUNet(), tmp_path_factory.mktemp("unet") / "tiny_unet.onnx")


@pytest.mark.onnx
def test_dynamic_dims_must_be_given(tiny_unet_onnx: Path) -> None:
    m = load_onnx(tiny_unet_onnx)
    with pytest.raises(ProfileError, match=r"input 'x' has dynamic shape .*--input x=D1,D2"):
        resolve_shapes(m, {})
    with pytest.raises(ProfileError, match="fixed by the model"):
        resolve_shapes(m, {"x": [1, 4, 32, 32]})
    assert resolve_shapes(m, {"x": [1, 3, 32, 32]}) == {"x": (1, 3, 32, 32)}


@pytest.mark.onnx
def test_auto_cut_pieces_chain_to_the_torch_output(tiny_unet_onnx: Path, tmp_path: Path) -> None:
    m = load_onnx(tiny_unet_onnx)
    resolve_shapes(m, {"x": [1, 3, 32, 48]})
    fold_static_shapes(m)
    info = analyse(m)
    part = partition_auto(info, blocks=5)
    assert 3 <= len(part.names) <= 5
    pieces = build_pieces(info, part, tiny_unet_onnx.parent, tmp_path / "pieces")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 48)).astype(np.float32)
    values = run_chain(pieces, {"x": x}, resolve_class("mec"))
    with torch.no_grad():
        want = TinyUNet().eval()(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(values["y"] - want)) < 1e-4
    # the long skip (e1) and the input (global residual) cross every inner cut
    inner = [p.crossing for p in pieces[1:-1]]
    assert inner and all(len(c) >= 2 for c in inner)
    assert all("x" in c for p in pieces[:-1] for c in [p.crossing])
    for p in pieces[:-1]:
        for t in p.crossing:  # bytes are shape x itemsize of the real tensor
            assert values[t].nbytes == int(np.prod(values[t].shape)) * values[t].itemsize


@pytest.mark.onnx
def test_profile_onnx_end_to_end(tiny_unet_onnx: Path, tmp_path: Path) -> None:
    prof = profile_onnx(tiny_unet_onnx, {"x": [1, 3, 32, 32]}, resolve_class("device"),
                        tmp_path, blocks=4, warmup=0, runs=2, min_seconds=0, quiet=True)
    (p,) = prof.passes
    assert p.n_blocks >= 3
    assert p.input_bytes == 1 * 3 * 32 * 32 * 4 == p.output_bytes
    assert p.chain_max_error is not None and p.chain_max_error < 1e-4
    assert max(len(b.out_tensors) for b in p.blocks[:-1]) >= 2
    assert all(b.out_bytes == sum(t.bytes for t in b.out_tensors) for b in p.blocks)
    assert p.state_bytes(0, p.n_blocks, 100) == 0
    assert "persistent state unknown (no past/cache graph inputs), assumed 0" in p.note


@pytest.mark.onnx
def test_profile_onnx_counts_past_inputs_as_state(tmp_path: Path) -> None:
    # attention-like: the new key is appended to a past of dynamic length, then reduced
    g = helper.make_graph(
        [helper.make_node("Concat", ["past_key", "x"], ["k"], axis=2),
         helper.make_node("ReduceSum", ["k", "axes"], ["s"], keepdims=1),
         helper.make_node("Relu", ["s"], ["y"])], "kv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 8]),
         helper.make_tensor_value_info("past_key", TensorProto.FLOAT,
                                       [1, 2, "past_sequence_length", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 8])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    path = tmp_path / "kv.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    prof = profile_onnx(path, {"past_key": [1, 2, 10, 8]}, resolve_class("device"), tmp_path,
                        blocks=2, warmup=0, runs=2, min_seconds=0, quiet=True)
    (p,) = prof.passes
    assert p.state_bytes(0, p.n_blocks, 1) == 2 * 8 * 4  # heads x width x fp32 per token
    assert p.state_bytes(0, p.n_blocks, 0) == 0
    assert p.input_bytes == 2 * 8 * 4  # x only: the past stays where its block runs
    assert "persistent state: graph inputs past_key (token axis 2)" in p.note


def _loop_model(path: Path) -> Path:
    """A graph that is one Loop node summing its input 3 times."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [4])])
    g = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "zero"], ["y"], body=body)], "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[helper.make_tensor("n", TensorProto.INT64, [], [3]),
                     helper.make_tensor("zero", TensorProto.FLOAT, [4], [0.0] * 4)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))
    return path


@pytest.mark.onnx
def test_control_flow_graph_is_one_block(tmp_path: Path) -> None:
    path = _loop_model(tmp_path / "loop.onnx")
    info = analyse(load_onnx(path))
    part = partition_auto(info, blocks=8)
    assert len(part.names) == 1
    assert any("one block" in n and "control flow" in n for n in part.notes)
    pieces = build_pieces(info, part, tmp_path, tmp_path / "pieces")
    x = np.arange(4, dtype=np.float32)
    assert np.allclose(run_chain(pieces, {"x": x}, resolve_class("mec"))["y"], 3 * x)


@pytest.mark.onnx
@pytest.mark.parametrize(("interleave_limit", "interleave_max_ms"),
                         [(0, 1e9), (1 << 40, 1e9), (1 << 40, 0.0)])
def test_both_timing_schedules(tiny_unet_onnx: Path, tmp_path: Path,
                               interleave_limit: int, interleave_max_ms: float) -> None:
    from profiler.timing import time_pass

    m = load_onnx(tiny_unet_onnx)
    resolve_shapes(m, {"x": [1, 3, 16, 16]})
    fold_static_shapes(m)
    # the export keeps weights in tiny_unet.onnx.data: the static copy must sit next to it
    static = tiny_unet_onnx.parent / f"static-{interleave_limit}-{interleave_max_ms:g}.onnx"
    onnx.save(m, str(static))
    info = analyse(m)
    pieces = build_pieces(info, partition_auto(info, 3), tiny_unet_onnx.parent,
                          tmp_path / "pieces")
    x = np.zeros((1, 3, 16, 16), dtype=np.float32)
    t = time_pass("fwd", static, pieces, {"x": x}, resolve_class("device"), warmup=1, runs=3,
                  weight_bytes=1, progress=False, interleave_limit=interleave_limit,
                  interleave_max_ms=interleave_max_ms)
    assert t.whole.runs == 3 and [b.runs for b in t.blocks] == [3] * len(pieces)
    assert t.max_error < 1e-6 and t.whole_cold_ms > 0


@pytest.mark.onnx
def test_weights_stored_as_constant_nodes_are_counted(tmp_path: Path) -> None:
    """PP-OCR-style exports keep weights in Constant nodes, not initializers."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    nodes, prev = [], "x"
    for i in range(4):
        w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}")
        nodes += [helper.make_node("Constant", [], [f"w{i}"], value=w),
                  helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"y{i}"])]
        prev = f"y{i}"
    graph = helper.make_graph(nodes, "consts",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "consts.onnx"
    onnx.save(model, str(path))
    prof = profile_onnx(path, {}, resolve_class("device"), tmp_path / "work", blocks=2,
                        warmup=0, runs=2, min_seconds=0, quiet=True)
    (p,) = prof.passes
    assert sum(b.weight_bytes for b in p.blocks) == 4 * 64 * 64 * 4
    assert all(b.weight_bytes > 0 for b in p.blocks)
