"""Reading an ONNX graph: loading with clear errors, dynamic dimensions, who uses what.

The cutter (:mod:`profiler.cut`) works on a :class:`GraphInfo`: the top-level nodes in a
topological order, the tensors each node uses (including names a subgraph of an If/Loop/Scan
takes from the outer scope, so a control-flow node is one indivisible unit), and the set of
*constant* tensors (initializers, and outputs of nodes whose inputs are all constant) which
every piece gets its own copy of instead of receiving them over a cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .schema import ProfileError

__all__ = ["CONTROL_FLOW", "GraphInfo", "analyse", "constant_bytes", "dtype_of", "fold_static_shapes",
           "infer_types", "input_shapes", "load_onnx", "node_uses", "resolve_shapes",
           "tensor_bytes"]

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                               "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})


def load_onnx(path: str | Path, load_weights: bool = False) -> ModelProto:
    """Load an ONNX file (without external weights unless asked); ProfileError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ProfileError(f"{p}: no such ONNX file")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others
        raise ProfileError(f"{p}: not a readable ONNX model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'parse failed'}); "
                           "is the file truncated or not ONNX?") from None
    if not m.graph.node or not m.opset_import:
        raise ProfileError(f"{p}: not an ONNX model (no graph nodes or opset); is the file "
                           "truncated or not ONNX?")
    base = str(p.parent)
    for t in _external_tensors(m):
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        if not (p.parent / loc).is_file():
            raise ProfileError(f"{p}: weight {t.name!r} is stored in external file {loc!r}, "
                               "which is missing next to the model")
    if load_weights:
        onnx.load_external_data_for_model(m, base)
    return m


def _external_tensors(m: ModelProto) -> Iterable[TensorProto]:
    for t in m.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            yield t


def dtype_of(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def tensor_bytes(t: TensorProto) -> int:
    n = int(np.prod(t.dims)) if t.dims else 1
    if t.data_type == TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return n * dtype_of(t.data_type).itemsize


def constant_bytes(node: onnx.NodeProto) -> int:
    """Bytes of the value a ``Constant`` node holds (weights stored as Constant nodes, as in
    PP-OCR-style exports); 0 for any other node."""
    if node.op_type != "Constant":
        return 0
    for a in node.attribute:
        if a.name in ("value", "sparse_value") and a.type == onnx.AttributeProto.TENSOR:
            return tensor_bytes(a.t)
        if a.name in ("value_floats", "value_ints"):
            return 4 * len(a.floats) if a.name == "value_floats" else 8 * len(a.ints)
        if a.name in ("value_float", "value_int"):
            return 4 if a.name == "value_float" else 8
    return 0


def _dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tt.shape.dim]


def input_shapes(m: ModelProto) -> dict[str, list[int | str] | None]:
    """Graph inputs (initializers excluded) with their declared dims (str for dynamic ones)."""
    inits = {t.name for t in m.graph.initializer}
    return {vi.name: _dims(vi) for vi in m.graph.input if vi.name not in inits}


def resolve_shapes(m: ModelProto, given: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every graph input, from the model or ``given`` (``--input``).

    Writes them into ``m``'s inputs. Raises ProfileError naming the first input whose shape
    is dynamic and not given, or a given shape that contradicts the model.
    """
    declared = input_shapes(m)
    unknown = set(given) - set(declared)
    if unknown:
        raise ProfileError(f"--input names {sorted(unknown)} are not inputs of the model "
                           f"(inputs: {', '.join(declared) or 'none'})")
    out: dict[str, tuple[int, ...]] = {}
    for name, dims in declared.items():
        if name in given:
            g = tuple(int(x) for x in given[name])
            decl = dims or []
            if dims is not None and len(decl) != len(g):
                raise ProfileError(f"--input {name}: model input has rank {len(decl)} "
                                   f"({_fmt(decl)}), got {len(g)} dims")
            for d, x in zip(decl, g, strict=False):
                if isinstance(d, int) and d > 0 and d != x:
                    raise ProfileError(f"--input {name}: dimension {d} of [{_fmt(decl)}] is "
                                       f"fixed by the model, got {x}")
            if any(x < 1 for x in g):
                raise ProfileError(f"--input {name}: dimensions must be >= 1, got {g}")
            out[name] = g
        elif dims is None or any(not isinstance(d, int) or d < 1 for d in dims):
            shown = _fmt(dims) if dims is not None else "unknown rank"
            raise ProfileError(f"input {name!r} has dynamic shape [{shown}]; give it with "
                               f"--input {name}=D1,D2,... (one value per dimension)")
        else:
            out[name] = tuple(int(d) for d in dims)
    for vi in m.graph.input:
        if vi.name in out:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for x in out[vi.name]:
                shape.dim.add().dim_value = x
    return out


def _fmt(dims: Sequence[int | str]) -> str:
    return ", ".join(str(d) for d in dims)


def _subgraph_uses(g: GraphProto) -> set[str]:
    """Names a subgraph reads from the enclosing scope."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    used: set[str] = set()
    for n in g.node:
        for x in n.input:
            if x and x not in defined:
                used.add(x)
        for a in n.attribute:
            for sg in _attr_graphs(a):
                used |= _subgraph_uses(sg) - defined
        defined.update(o for o in n.output if o)
    used |= {o.name for o in g.output} - defined
    return used


def _attr_graphs(a: onnx.AttributeProto) -> list[GraphProto]:
    if a.type == onnx.AttributeProto.GRAPH:
        return [a.g]
    if a.type == onnx.AttributeProto.GRAPHS:
        return list(a.graphs)
    return []


def node_uses(n: NodeProto) -> list[str]:
    """Every tensor ``n`` reads: its inputs and what its subgraphs take from outside."""
    uses = [x for x in n.input if x]
    for a in n.attribute:
        for sg in _attr_graphs(a):
            uses += sorted(_subgraph_uses(sg) - set(uses))
    return uses


@dataclass
class GraphInfo:
    """A top-level graph split into constant and compute nodes, with use/def maps."""

    model: ModelProto
    compute: list[int]  # indices into model.graph.node, topological
    constant: list[int]  # nodes computing constants (copied into every piece that needs them)
    uses: dict[int, list[str]]  # node index -> tensors read
    producer: dict[str, int]  # tensor -> node index
    const_tensors: set[str]
    initializers: dict[str, TensorProto]
    graph_inputs: list[str]
    graph_outputs: list[str]

    def control_flow_nodes(self) -> list[NodeProto]:
        nodes = self.model.graph.node
        return [nodes[i] for i in self.compute if nodes[i].op_type in CONTROL_FLOW]


def analyse(m: ModelProto) -> GraphInfo:
    """Build the use/def maps and classify nodes; checks the order is topological."""
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    ginputs = [vi.name for vi in g.input if vi.name not in inits]
    known = set(inits) | set(ginputs)
    const = set(inits)
    producer: dict[str, int] = {}
    uses: dict[int, list[str]] = {}
    compute: list[int] = []
    constant: list[int] = []
    for i, n in enumerate(g.node):
        u = node_uses(n)
        missing = [x for x in u if x not in known]
        if missing:
            raise ProfileError(f"node {n.name or n.op_type!r} ({n.op_type}) reads {missing[0]!r} "
                               "before anything produces it: the graph is not in topological "
                               "order or is incomplete")
        uses[i] = u
        for o in n.output:
            if o:
                producer[o] = i
                known.add(o)
        is_const = (n.op_type not in _NONDETERMINISTIC and n.domain in ("", "ai.onnx")
                    and all(x in const for x in u) and not any(_attr_graphs(a) for a in n.attribute))
        if is_const:
            const.update(o for o in n.output if o)
            constant.append(i)
        else:
            compute.append(i)
    return GraphInfo(model=m, compute=compute, constant=constant, uses=uses, producer=producer,
                     const_tensors=const, initializers=inits, graph_inputs=ginputs,
                     graph_outputs=[o.name for o in g.output])


def fold_static_shapes(m: ModelProto) -> int:
    """Replace ``Shape``/``Size`` of tensors whose shape is fully known by constants.

    With every input shape resolved this turns shape arithmetic into constants, so cuts do
    not carry tiny shape tensors. Returns how many nodes were replaced.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return 0
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        d = _dims(vi)
        if d is not None and all(isinstance(x, int) and x > 0 for x in d):
            shapes[vi.name] = [int(x) for x in d]  # type: ignore[arg-type]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    count = 0
    for n in m.graph.node:
        if n.op_type not in ("Shape", "Size") or n.domain not in ("", "ai.onnx"):
            continue
        s = shapes.get(n.input[0])
        if s is None:
            continue
        if n.op_type == "Shape":
            attrs = {a.name: a.i for a in n.attribute}
            start, end = attrs.get("start", 0), attrs.get("end", len(s))
            value = np.array(s[slice(start, end)], dtype=np.int64)
        else:
            value = np.array(int(np.prod(s)), dtype=np.int64)
        out = n.output[0]
        n.Clear()
        n.op_type = "Constant"
        n.output.append(out)
        n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value, out)))
        count += 1
    return count


def infer_types(m: ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Value infos (dtype, and shape where known) of every tensor ONNX shape inference finds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:
        inferred = m
    out = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.input,
                                  *inferred.graph.output] if vi.type.tensor_type.elem_type}
    return out

