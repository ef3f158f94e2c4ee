"""Cutting an ONNX graph into a chain of standalone pieces.

A *partition* lists the compute nodes of each block, blocks in execution order and each
block's nodes a contiguous run of one topological order. The cut after block ``i`` is every
tensor produced at or before block ``i`` (or a non-state graph input) and read after it:
with skip connections that is several tensors. Each piece is a standalone ONNX model whose
inputs are the tensors it reads from earlier pieces or the graph, whose outputs are what later
pieces or the caller need, and which carries its own copy of every weight and constant it uses
(the exporter ties and de-duplicates them across blocks).

Two ways to partition: :func:`partition_by_scope` groups nodes by the module scope the torch
exporter records (zoo models), :func:`partition_auto` finds cut points in the graph alone
(any ONNX file): positions of a topological order where few, small tensors cross, spaced to
give blocks of similar estimated cost. Nodes are never split, so an If/Loop/Scan with its
subgraphs stays inside one block.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from .graph import GraphInfo, constant_bytes, dtype_of, infer_types, tensor_bytes
from .schema import ProfileError
from .zoo import BlockKey

__all__ = ["Partition", "Piece", "build_pieces", "crossing", "partition_auto",
           "partition_by_scope", "scopes_of"]

_EXTERNAL_LIMIT = 1_800_000_000  # bytes of weights above which a piece uses external data
_UNKNOWN_BYTES = 1 << 30  # cost of a crossing tensor whose size shape inference cannot tell
# ops ONNX Runtime fuses into the op before them: on a tie, do not cut just before one
_FOLLOWERS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid",
                        "HardSwish", "Gelu", "Add", "Mul", "BatchNormalization"})


@dataclass
class Partition:
    """Blocks in order: ``names[i]`` holds compute nodes ``nodes[i]`` (graph node indices)."""

    names: list[str]
    nodes: list[list[int]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Piece:
    """One block as a standalone ONNX model on disk."""

    name: str
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    crossing: tuple[str, ...]  # tensors crossing the cut after this block (empty for the last)
    weight_bytes: int


def scopes_of(node: onnx.NodeProto) -> list[str]:
    """Module scopes recorded by ``torch.onnx.export(dynamo=True)``, outermost first."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            v = p.value.strip()
            if v.startswith("["):
                import ast

                try:
                    return [str(s) for s in ast.literal_eval(v)]
                except (ValueError, SyntaxError):
                    return []
            return [v]
    return []


def partition_by_scope(info: GraphInfo, key: BlockKey) -> Partition:
    """Group compute nodes by ``key(scopes)``; a node between blocks joins the next block."""
    nodes = info.model.graph.node
    keys = [key(scopes_of(nodes[i])) for i in info.compute]
    if not any(keys):
        raise ProfileError("no node carries a module scope the model's block rule recognises; "
                           "was the graph exported with torch.onnx.export(dynamo=True)?")
    nxt: str | None = None
    for j in range(len(keys) - 1, -1, -1):  # backward fill, then forward fill the tail
        if keys[j] is None:
            keys[j] = nxt
        nxt = keys[j]
    last = next(k for k in reversed(keys) if k)
    filled = [k or last for k in keys]
    order: list[str] = []
    groups: dict[str, list[int]] = {}
    for k, i in zip(filled, info.compute, strict=True):
        if k not in groups:
            order.append(k)
            groups[k] = []
        groups[k].append(i)
    part = Partition(names=order, nodes=[groups[k] for k in order])
    _check_order(info, part)
    return part


def _check_order(info: GraphInfo, part: Partition) -> None:
    block_of = {i: b for b, ns in enumerate(part.nodes) for i in ns}
    for b, ns in enumerate(part.nodes):
        for i in ns:
            for t in info.uses[i]:
                pb = block_of.get(info.producer.get(t, -1), -1)
                if pb > b:
                    raise ProfileError(f"block {part.names[b]!r} reads {t!r} produced by later "
                                       f"block {part.names[pb]!r}: blocks are not sequential")


def crossing(info: GraphInfo, part: Partition, state: Collection[str] = ()) -> list[list[str]]:
    """Tensors crossing the cut after each block (the last block's list is empty)."""
    block_of = {i: b for b, ns in enumerate(part.nodes) for i in ns}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for b, ns in enumerate(part.nodes):
        for i in ns:
            for t in info.uses[i]:
                if t in info.const_tensors or (t in state and t not in info.producer):
                    continue
                first.setdefault(t, b)
                last[t] = b
    out: list[list[str]] = [[] for _ in part.nodes]
    for t, lb in last.items():
        pb = block_of[info.producer[t]] if t in info.producer else -1
        for b in range(max(pb, 0), lb):
            out[b].append(t)
    return out


def partition_auto(info: GraphInfo, blocks: int) -> Partition:
    """Cut points found in the graph alone; aims at ``blocks`` blocks of similar cost."""
    if blocks < 1:
        raise ProfileError(f"--blocks must be >= 1, got {blocks}")
    nodes = info.model.graph.node
    comp = info.compute
    if not comp:
        raise ProfileError("the graph has no compute nodes (only constants)")
    types = infer_types(info.model)
    size: dict[str, int] = {}
    for name, vi in types.items():
        tt = vi.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim] if tt.HasField("shape") else None
        if dims is not None and all(d > 0 for d in dims):
            size[name] = int(np.prod(dims)) * dtype_of(tt.elem_type).itemsize if dims else \
                dtype_of(tt.elem_type).itemsize
    pos = {i: p for p, i in enumerate(comp)}
    c = len(comp)
    live_bytes = np.zeros(c + 1)
    live_count = np.zeros(c + 1, dtype=np.int64)
    last: dict[str, int] = {}
    for p, i in enumerate(comp):
        for t in info.uses[i]:
            if t not in info.const_tensors:
                last[t] = p
    for t, lp in last.items():
        start = pos[info.producer[t]] + 1 if t in info.producer else 0
        if start <= lp:
            live_bytes[start:lp + 1] += size.get(t, _UNKNOWN_BYTES)
            live_count[start:lp + 1] += 1
    cost = np.zeros(c)
    for p, i in enumerate(comp):
        w = sum(int(np.prod(info.initializers[t].dims)) for t in info.uses[i]
                if t in info.initializers)
        o = sum(size.get(t, 0) for t in nodes[i].output)
        cost[p] = 1.0 + w + o
    cum = np.concatenate([[0.0], np.cumsum(cost)])  # cum[p]: cost before boundary p
    total = cum[-1]
    notes: list[str] = []
    cf = info.control_flow_nodes()
    if cf:
        notes.append(f"{len(cf)} control-flow node(s) ({', '.join(sorted({n.op_type for n in cf}))}) "
                     "kept whole: cuts never enter their subgraphs")
    blocks = max(1, min(blocks, c))
    cuts: list[int] = []
    for j in range(1, blocks):
        target = total * j / blocks
        lo, hi = total * (j - 0.5) / blocks, total * (j + 0.5) / blocks
        cand = [p for p in range(1, c) if lo <= cum[p] <= hi and (not cuts or p > cuts[-1])]
        if not cand:
            continue
        best = min(cand, key=lambda p: (live_bytes[p], live_count[p],
                                        nodes[comp[p]].op_type in _FOLLOWERS,
                                        abs(cum[p] - target)))
        cuts.append(best)
    bounds = [0, *cuts, c]
    part_nodes = [comp[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    if len(part_nodes) == 1:
        only = nodes[comp[0]].op_type if c == 1 else f"{c} nodes"
        notes.append(f"the graph is one block ({only}): no cut point inside it"
                     + (" (all of it is control flow)" if c == len(cf) else ""))
    names = [f"b{k:02d}.{nodes[ns[0]].op_type}-{nodes[ns[-1]].op_type}"
             for k, ns in enumerate(part_nodes)]
    return Partition(names=names, nodes=part_nodes, notes=notes)


def build_pieces(info: GraphInfo, part: Partition, base_dir: Path, out_dir: Path,
                 state: Collection[str] = ()) -> list[Piece]:
    """Write one standalone ONNX model per block into ``out_dir``.

    ``base_dir`` is where the whole model's external weight files are.
    """
    m = info.model
    g = m.graph
    types = infer_types(m)
    block_of = {i: b for b, ns in enumerate(part.nodes) for i in ns}
    cross = crossing(info, part, state)
    needed_later: dict[int, set[str]] = {b: set() for b in range(len(part.nodes))}
    for b, ns in enumerate(part.nodes):
        for i in ns:
            for t in info.uses[i]:
                if t in info.const_tensors:
                    continue
                pb = block_of.get(info.producer.get(t, -1), -1)
                if 0 <= pb < b:
                    needed_later[pb].add(t)
    outputs_set = set(info.graph_outputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces: list[Piece] = []
    for b, ns in enumerate(part.nodes):
        produced = {o for i in ns for o in g.node[i].output if o}
        reads: list[str] = []
        consts: set[int] = set()
        inits: list[str] = []
        stack = [t for i in ns for t in info.uses[i]]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in info.initializers:
                inits.append(t)
            elif t in info.const_tensors:
                ci = info.producer[t]
                if ci not in consts:
                    consts.add(ci)
                    stack.extend(info.uses[ci])
        for i in ns:
            for t in info.uses[i]:
                if t not in produced and t not in info.const_tensors and t not in reads:
                    reads.append(t)
        outs = [o for i in ns for o in g.node[i].output
                if o and (o in needed_later[b] or o in outputs_set)]
        node_ids = sorted(consts | set(ns))
        graph = helper.make_graph(
            [g.node[i] for i in node_ids], f"{g.name or 'graph'}.{part.names[b]}",
            [_value_info(t, types) for t in reads], [_value_info(t, types) for t in outs],
            initializer=[_own_copy(info.initializers[t], base_dir) for t in sorted(inits)])
        piece = helper.make_model(graph, opset_imports=list(m.opset_import),
                                  ir_version=m.ir_version, producer_name="aigc-offload-emu profiler")
        piece.functions.extend(m.functions)
        wbytes = (sum(tensor_bytes(info.initializers[t]) for t in inits)
                  + sum(constant_bytes(g.node[ci]) for ci in consts))
        path = out_dir / f"{b:03d}.onnx"
        _save(piece, path, wbytes)
        pieces.append(Piece(name=part.names[b], path=path, inputs=tuple(reads), outputs=tuple(outs),
                            crossing=tuple(cross[b]), weight_bytes=wbytes))
        del piece, graph
    return pieces


def _value_info(name: str, types: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto:
    vi = types.get(name)
    if vi is None:
        raise ProfileError(f"cannot tell the type of tensor {name!r} crossing a cut (ONNX shape "
                           "inference does not know it); the model may use custom operators")
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    return out


def _own_copy(t: TensorProto, base_dir: Path) -> TensorProto:
    c = TensorProto()
    c.CopyFrom(t)
    if c.data_location == TensorProto.EXTERNAL:
        onnx.external_data_helper.load_external_data_for_tensor(c, str(base_dir))
        c.data_location = TensorProto.DEFAULT
        del c.external_data[:]
    return c


def _save(model: ModelProto, path: Path, weight_bytes: int) -> None:
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if weight_bytes > _EXTERNAL_LIMIT:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data.name, size_threshold=1024)
    else:
        onnx.save(model, str(path))

