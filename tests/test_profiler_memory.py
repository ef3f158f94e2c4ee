"""Memory while timing: nothing the timing returns may keep an ONNX Runtime session's arena alive.

An array returned by ``InferenceSession.run`` points into the session's CPU memory arena and
keeps the whole arena alive after the session is closed; the chained run's values, kept for
the chain check, once held every piece's arena at once (the SD 1.5 UNet at batch 2 was
OOM-killed past 24 GB). Every array :func:`profiler.timing.time_pass` hands back must own its
memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from profiler.cut import build_pieces, partition_auto
from profiler.graph import analyse, load_onnx
from profiler.hardware import resolve_class
from profiler.timing import _run, run_chain, run_whole, time_pass

pytestmark = pytest.mark.onnx


def _mlp(path: Path) -> Path:
    """x -> MatMul -> Relu -> MatMul -> Relu -> MatMul -> + x: three cuttable stages."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        w = rng.standard_normal((16, 16)).astype(np.float32) * 0.2
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Add", [prev, "x"], ["y"]))
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
                          initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture()
def mlp_pieces(tmp_path: Path) -> tuple[Path, list, dict[str, np.ndarray]]:  # type: ignore[type-arg]
    path = _mlp(tmp_path / "mlp.onnx")
    info = analyse(load_onnx(path))
    pieces = build_pieces(info, partition_auto(info, 3), tmp_path, tmp_path / "pieces")
    assert len(pieces) >= 2
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    return path, pieces, {"x": x}


def test_plain_run_outputs_own_their_memory(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    hw = resolve_class("device")
    sess = ort.InferenceSession(str(path), sess_options=hw.session_options(),
                                providers=list(hw.providers))
    x = np.ones((4, 16), np.float32)
    raw = sess.run(None, {"x": x})[0]
    ms, (out,) = _run(sess, {"x": x})
    assert ms > 0
    assert out.flags.owndata and out.base is None
    assert np.array_equal(out, raw)  # the same values, in memory of its own


@pytest.mark.parametrize("interleave_limit", [1 << 40, 0], ids=["interleaved", "one-at-a-time"])
def test_time_pass_keeps_no_session_memory(mlp_pieces, interleave_limit: int) -> None:  # type: ignore[no-untyped-def]
    path, pieces, feeds = mlp_pieces
    t = time_pass("mlp", path, pieces, feeds, resolve_class("device"), warmup=1, runs=2,
                  weight_bytes=0, progress=False, interleave_limit=interleave_limit)
    produced = {o for p in pieces for o in p.outputs}
    assert produced <= set(t.values)
    for name in produced:
        assert t.values[name].flags.owndata, f"chained value {name!r} points into an arena"
    assert t.whole_outputs and all(a.flags.owndata for a in t.whole_outputs.values())
    assert t.max_error < 1e-6
    assert len(t.blocks) == len(pieces) and all(b.runs >= 2 for b in t.blocks)


def test_check_runs_keep_no_session_memory(mlp_pieces) -> None:  # type: ignore[no-untyped-def]
    # the chain check of torch timing (run_chain, run_whole) holds its values the same way
    path, pieces, feeds = mlp_pieces
    hw = resolve_class("mec")
    values = run_chain(pieces, feeds, hw)
    whole = run_whole(path, feeds, hw)
    assert all(values[o].flags.owndata for p in pieces for o in p.outputs)
    assert whole["y"].flags.owndata
    assert np.allclose(values["y"], whole["y"], atol=1e-6)
