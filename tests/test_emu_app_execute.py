"""Execute mode: tensor framing; split execution against a plain torch run of the same model;
a real generation (KV cache threaded, migrated between sides) against torch's generation.

Runs on every clean clone: the module fixture exports the zoo's gpt2-tiny and sd15-tiny into a
temporary cache with the profiler's own export and cut code (``export_pass``,
``partition_by_scope``, ``build_pieces``; about 8 s and 13 s on the 2-core build machine), so
nothing needs to be in ``~/.cache`` beforehand. The reference is the zoo's torch module run on
the same inputs (``torch.no_grad``), not the ONNX pieces themselves: a piece with wrong weights
agrees with itself split and unsplit, but not with torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.latency import LatencyModel
from agent.plan import COMPUTE, MEC, SEND, Step
from agent.policy import Decision, Workload
from emulator.compute import ProfiledCompute
from emulator.errors import EmulatorError, ProtocolError
from emulator.execute import (
    PieceRunner,
    decode_tensors,
    encode_tensors,
    find_pieces_dir,
)
from emulator.steps import StepRunner, instance_seed
from emulator.transport import Inbox
from profiler.schema import Profile, load_profile
from profiler.timing import compare_outputs

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "profiles" / "gpt2-tiny.device.json"


def test_tensor_round_trip_and_validation() -> None:
    ts = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([[1, 2]]),
          "empty": np.zeros((0, 4), dtype=np.float16)}
    descs, payload = encode_tensors(ts)
    got = decode_tensors(descs, payload)
    assert list(got) == ["a", "ids", "empty"]
    for k, v in ts.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    with pytest.raises(ProtocolError, match="bytes beyond its tensors"):
        decode_tensors(descs, payload + b"x")
    with pytest.raises(ProtocolError, match="past the payload's end"):
        decode_tensors(descs, payload[:-20])
    with pytest.raises(ProtocolError, match="bad dtype 'object'"):
        decode_tensors([{"name": "x", "dtype": "object", "shape": [1]}], b"12345678")
    with pytest.raises(EmulatorError, match="unsupported dtype"):
        encode_tensors({"c": np.zeros(2, dtype=np.complex64)})


MODELS = ("gpt2-tiny", "sd15-tiny")
#: outputs of the pieces against torch: as the profiler's chain check (relative to magnitude)
TOL = 1e-4


def _export(model: str, root: Path) -> Path:
    """Export every pass of ``model`` and cut it into pieces under ``root`` (the cache layout
    execute mode reads: ``root/<model>/<key>/<pass>.pieces/NNN.onnx``)."""
    from profiler.cut import build_pieces, partition_by_scope
    from profiler.export import export_pass, work_dir_for
    from profiler.graph import analyse, load_onnx
    from profiler.zoo import get_model

    z = get_model(model)
    wd = work_dir_for(root, model, z.defaults)
    for spec in z.build(z.defaults):
        path = export_pass(spec, wd / f"{spec.name}.onnx")
        info = analyse(load_onnx(path))
        build_pieces(info, partition_by_scope(info, spec.block_key), wd,
                     wd / f"{spec.name}.pieces", spec.state_inputs)
    return wd


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh export cache holding gpt2-tiny and sd15-tiny pieces (made here, every run)."""
    root = tmp_path_factory.mktemp("aigc-cache")
    for m in MODELS:
        _export(m, root)
    return root


def _torch_outputs(model: str, pass_index: int,
                   feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The zoo's torch module of one pass run on ``feeds`` (by input name)."""
    import torch

    from profiler.zoo import get_model

    z = get_model(model)
    spec = z.build(z.defaults)[pass_index]
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.input_names]
    with torch.no_grad():
        out = spec.module(*args)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return {n: x.numpy() for n, x in zip(spec.output_names, outs, strict=True)}


def _profile(model: str) -> Profile:
    path = ROOT / "profiles" / f"{model}.device.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing (a shipped profile)")
    return load_profile(path)


@pytest.mark.onnx
@pytest.mark.parametrize("model", MODELS)
def test_split_execution_matches_torch(model: str, cache: Path) -> None:
    """Device pieces [0, k), the cut's tensors encoded as on the wire, the MEC's step runner
    runs [k, N) and encodes its output: equal to the torch module's on the same seeded inputs,
    for every split (gpt2-tiny: its prefill; its decodes are tested in a generation below)."""
    prof = _profile(model)
    pieces = find_pieces_dir(prof, cache / model / _only_key(cache / model))
    runner = PieceRunner(prof, pieces)
    mec = StepRunner(ProfiledCompute(prof, np.random.default_rng(0)), PieceRunner(prof, pieces))
    for pi, p in enumerate(prof.passes):
        if runner.past_axis[pi]:
            continue
        seed = instance_seed(11, pi, 0)  # what both sides draw for request seed 11
        feeds = runner.inputs(pi, seed)
        ref = _torch_outputs(model, pi, feeds)
        # all pieces here: every torch output (KV caches included) is produced by some piece
        whole = runner.run(pi, 0, p.n_blocks, runner.inputs(pi, seed))
        assert compare_outputs(ref, whole) <= TOL, (model, p.name, "local")
        first = next(iter(ref))  # next_token / prompt_embedding / noise_pred / image
        for k in range(p.n_blocks):  # k = 0: full offload
            env = runner.run(pi, 0, k, runner.inputs(pi, seed))
            descs, payload = encode_tensors({n: env[n] for n in runner.cut_names(pi, k)})
            received = decode_tensors(descs, payload)  # as the MEC's reader decodes it
            _, outs = mec.run(Step(COMPUTE, MEC, p.name, 0, k, p.n_blocks), 11, received)
            assert outs is not None
            meta, out = mec.payload(Step(1, MEC, p.name, 0, what="output"), outs)
            got = decode_tensors(meta["tensors"], out)
            assert first in got, (model, p.name, k, list(got))
            assert compare_outputs({n: ref[n] for n in got}, got) <= TOL, (model, p.name, k)


def _only_key(d: Path) -> str:
    (key,) = [x.name for x in d.iterdir() if x.is_dir()]
    return key


@pytest.mark.onnx
def test_split_run_equals_local(tmp_path: Path, cache: Path) -> None:
    """The whole execute-mode run (device and MEC processes on loopback) from a clean cache;
    its own check is split vs local ONNX, the pieces against torch are tested above."""
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--network", "loopback", "--model", "gpt2-tiny",
         "--compute", "execute", "--policy", "fixed:2", "--devices", "1", "--closed-loop",
         "--duration", "1.5", "--quiet", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "AIGC_EMU_CACHE": str(cache)})
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    check = summary["execute_check"]
    assert check["failed"] == 0 and check["passes_checked"] >= 9
    rec = json.loads((out / "requests.jsonl").read_text().splitlines()[0])
    assert rec["compute"] == "execute" and rec["check"]["ok"]
    # split 2 of 4 every pass: the prefill's cut and every decode's cut go up as real tensors,
    # and each token the MEC computed comes down and is checked (1 prefill + 8 decodes)
    assert rec["check"]["passes_checked"] == 9
    assert rec["check"]["tokens"] == rec["check"]["reference"]
    ups = [s for s in rec["steps"] if s["kind"] == "send" and s["side"] == "up"]
    assert [s["what"] for s in ups] == ["cut"] * 9


def _torch_generation(prompt: np.ndarray, decodes: int, zero_cache: bool = False) -> list[int]:
    """Greedy tokens of the zoo's gpt2-tiny in torch: prefill, then ``decodes`` passes, each
    fed the last token and the cache (all zeros, of the right length, with ``zero_cache``)."""
    import torch

    from profiler.zoo import get_model

    z = get_model("gpt2-tiny")
    module = z.build(z.defaults)[0].module
    with torch.no_grad():
        tok, *cache = module(torch.from_numpy(prompt))
        out = [int(tok.ravel()[0])]
        for _ in range(decodes):
            past = [torch.zeros_like(c) for c in cache] if zero_cache else cache
            tok, *cache = module(tok, *past)
            out.append(int(tok.ravel()[0]))
    return out


#: plans of gpt2-tiny (4 blocks: embed, h.0, h.1, head): local, full offload, a split every
#: pass, prefill on the MEC then decode here (both layers' caches move down), and decode
#: splits that move at every step (caches migrate both ways, embed's side lacks the cache)
PLANS = {
    "local": {"prefill": 4, "decode": 4},
    "offload": {"prefill": 0, "decode": 0},
    "split2": {"prefill": 2, "decode": 2},
    "mec-prefill": {"prefill": 0, "decode": 4},
    "moving": {"prefill": 4, "decode": (1, 3, 2, 0, 4, 2, 2, 1)},
}


@pytest.mark.onnx
@pytest.mark.parametrize("name", sorted(PLANS))
def test_generation_matches_torch(name: str, cache: Path) -> None:
    """A request's plan run step by step by a device and a MEC step runner (each with its own
    inbox, sends encoded and decoded as on the wire): the tokens the user gets equal torch's
    greedy generation from the same prompt; every send carries exactly the plan's bytes (a
    migrated cache at its current length); the device's own check agrees."""
    prof = _profile("gpt2-tiny")
    pieces = find_pieces_dir(prof, cache / "gpt2-tiny" / _only_key(cache / "gpt2-tiny"))
    sides = [StepRunner(ProfiledCompute(prof, np.random.default_rng(0)), PieceRunner(prof, pieces))
             for _ in range(2)]
    decodes = 8
    wl = Workload("gpt2-tiny", {"prefill": 1, "decode": decodes})
    plan = LatencyModel(prof, prof).plan(Decision(PLANS[name]), wl)
    boxes = [Inbox(), Inbox()]
    boxes[0].put(plan.initial, 0.0)
    kinds = set()
    for st in plan.steps:
        r, box = sides[st.side], boxes[st.side]
        if st.kind == COMPUTE:
            _, out = r.run(st, 5, r.gather(box, st.needs))
            r.store(box, st, 0.0, out)
            continue
        assert st.kind == SEND
        meta, payload = r.payload(st, r.gather(box, st.items))
        if st.what != "input":  # the prompt is drawn from the seed on both sides
            assert len(payload) == st.nbytes, (st.what, st.pass_name, st.rep)
        kinds.add(st.what)
        boxes[1 - st.side].put(st.items, 0.0, sides[1 - st.side].received(meta, bytes(payload)))
    if name in ("mec-prefill", "moving"):
        assert "state" in kinds
    tokens = [int(boxes[0].data(it)["next_token"].ravel()[0]) for it in plan.outputs]
    prompt = sides[0].runner.inputs(0, instance_seed(5, 0, 0))["input_ids"]  # type: ignore[union-attr]
    want = _torch_generation(prompt, decodes)
    assert tokens == want
    # the comparison can fail: the same model with its cache zeroed generates other tokens
    assert _torch_generation(prompt, decodes, zero_cache=True) != want
    check = sides[0].check_request(plan, boxes[0].data, 5, {"prefill": 1, "decode": decodes})
    assert check["ok"] and check["tokens"] == want


@pytest.mark.onnx
def test_fixed_past_pieces_refused(tmp_path: Path) -> None:
    """Decode pieces exported with a fixed past length cannot carry a growing cache: execute
    mode says which pieces and how to re-export them."""
    import dataclasses

    from profiler.cut import build_pieces, partition_by_scope
    from profiler.export import export_pass
    from profiler.graph import analyse, load_onnx
    from profiler.zoo import get_model

    z = get_model("gpt2-tiny")
    for spec in z.build(z.defaults):
        fixed = dataclasses.replace(spec, past_inputs={})  # no dynamic axis
        path = export_pass(fixed, tmp_path / f"{spec.name}.onnx")
        info = analyse(load_onnx(path))
        build_pieces(info, partition_by_scope(info, spec.block_key), tmp_path,
                     tmp_path / f"{spec.name}.pieces", spec.state_inputs)
    prof = _profile("gpt2-tiny")
    with pytest.raises(EmulatorError, match=r"fixed past length.*--fresh"):
        PieceRunner(prof, find_pieces_dir(prof, tmp_path))
