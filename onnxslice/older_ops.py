"""Rewrite ONNX ops of opsets 18–23 into equivalent older ops, for onnx2torch (which knows opsets up to 17).

onnx's version converter takes most of a newer graph down to opset 17 (ReduceMean with axes as an input, the
type-only revisions of Conv, Reshape, Identity, …) but not these, which are rewritten first:

- ``Gelu`` (opset 20, no earlier version): its Erf form, or its tanh form for ``approximate="tanh"``;
- ``Split`` (opset 18, ``num_outputs`` or not; the converter has no 18 → 13 adapter): one ``Slice`` per output;
- ``RMSNormalization`` (opset 23, no earlier version): ``x / sqrt(mean(x²) + ε) · scale``.

The node that produces a rewritten node's (first) output keeps its name, so a neuron layer's tail (a Gelu) is
still found by name in the converted module.

Some ops' newer versions only add options, and the converter has no adapter for them either; a node that uses
none of those options is valid at opset 17 as it stands, and passes the converter under a private domain
(:func:`hide_unchanged_ops`, then :func:`restore_hidden_ops`):

- ``Pad`` (opset 18: an ``axes`` input; opset 19: mode ``"wrap"``), as the dynamo exporter writes it for
  Swin's window padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxslice.graph import constant_values
from onnxslice.graph_utils import attribute, tensor_shapes


class _Builder:
    """New nodes and constants replacing one node; names derive from it and never collide."""

    def __init__(self, node: onnx.NodeProto, dtype: np.dtype, taken: set[str]) -> None:
        self.node, self.dtype, self.taken = node, dtype, taken
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def fresh(self, suffix: str) -> str:
        name = f"{self.node.name}/{suffix}"
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def constant(self, suffix: str, value: float | list[int]) -> str:
        array = np.array(value, np.int64) if isinstance(value, list) else np.array(value, self.dtype)
        name = self.fresh(suffix)
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], suffix: str | None = None, output: str | None = None) -> str:
        """Add a node; ``suffix=None`` gives it the replaced node's name (it produces the replaced output)."""
        name = self.node.name if suffix is None else self.fresh(suffix)
        out = output or self.fresh(f"{suffix}_output")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name))
        return out


def _gelu(node: onnx.NodeProto, build: _Builder, _info: _GraphInfo) -> bool:
    x, y = node.input[0], node.output[0]
    if attribute(node, "approximate", b"none") == b"tanh":  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        cube = build.op("Mul", [build.op("Mul", [x, x], "square"), x], "cube")
        inner = build.op("Add", [x, build.op("Mul", [cube, build.constant("c", 0.044715)], "scaled_cube")], "sum")
        scaled = build.op("Mul", [inner, build.constant("k", math.sqrt(2 / math.pi))], "scaled")
        curve = build.op("Tanh", [scaled], "tanh")
    else:  # 0.5·x·(1 + erf(x / √2))
        curve = build.op("Erf", [build.op("Div", [x, build.constant("sqrt2", math.sqrt(2))], "div")], "erf")
    gate = build.op("Mul", [x, build.op("Add", [curve, build.constant("one", 1.0)], "plus_one")], "gate")
    build.op("Mul", [gate, build.constant("half", 0.5)], output=y)
    return True


def _split(node: onnx.NodeProto, build: _Builder, info: _GraphInfo) -> bool:
    axis = int(attribute(node, "axis", 0))
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in info.constants:
            return False
        sizes = [int(s) for s in info.constants[node.input[1]]]
    else:
        dim = info.dim(node.input[0], axis)
        if dim is None:
            return False
        parts = int(attribute(node, "num_outputs", len(node.output)))
        chunk = -(-dim // parts)  # the spec: equal chunks of ceil(dim / n), the last one smaller
        sizes = [min(chunk, dim - i * chunk) for i in range(parts)]
    start = 0
    for index, (size, output) in enumerate(zip(sizes, node.output, strict=True)):
        bounds = [build.constant(f"{key}{index}", [value]) for key, value in
                  (("starts", start), ("ends", start + size), ("axes", axis))]
        build.op("Slice", [node.input[0], *bounds], None if index == 0 else f"slice{index}", output=output)
        start += size
    return True


def _rms_normalization(node: onnx.NodeProto, build: _Builder, info: _GraphInfo) -> bool:
    axis = int(attribute(node, "axis", -1))
    if axis < 0:
        axes = list(range(axis, 0))
    else:
        rank = info.rank(node.input[0])
        if rank is None:
            return False
        axes = list(range(axis, rank))
    x = node.input[0]
    mean = build.op("ReduceMean", [build.op("Mul", [x, x], "square"), build.constant("axes", axes)], "mean")
    root = build.op("Sqrt", [build.op("Add", [mean, build.constant("epsilon", attribute(node, "epsilon", 1e-5))],
                                      "plus_epsilon")], "sqrt")
    build.op("Mul", [build.op("Div", [x, root], "normalised"), node.input[1]], output=node.output[0])
    return True


class _GraphInfo:
    """Constants, element types and inferred shapes of a graph's tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.constants = constant_values(model)
        graph = model.graph
        self.types = {init.name: init.data_type for init in graph.initializer}
        for info in [*graph.input, *graph.value_info, *graph.output]:
            self.types[info.name] = info.type.tensor_type.elem_type
        self.shapes = tensor_shapes(graph)

    def dtype(self, name: str) -> np.dtype:
        elem = self.types.get(name, onnx.TensorProto.FLOAT) or onnx.TensorProto.FLOAT
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem))

    def rank(self, name: str) -> int | None:
        return len(self.shapes[name]) if name in self.shapes else None

    def dim(self, name: str, axis: int) -> int | None:
        rank = self.rank(name)
        if rank is None or not -rank <= axis < rank:
            return None
        size = self.shapes[name][axis]
        return size if isinstance(size, int) else None


#: op type -> rewrite (False when the node cannot be rewritten, e.g. an unknown split size; it is then kept).
REWRITES: dict[str, Callable[[onnx.NodeProto, _Builder, _GraphInfo], bool]] = {
    "Gelu": _gelu, "Split": _split, "RMSNormalization": _rms_normalization,
}


def rewrite_newer_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every default-domain op of :data:`REWRITES` replaced by its older equivalent (in place)."""
    info = _GraphInfo(model)
    taken = {node.name for node in model.graph.node} | {name for node in model.graph.node for name in node.output}
    taken |= set(info.constants)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        rewrite = REWRITES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        build = _Builder(node, info.dtype(node.input[0]) if node.input else np.dtype(np.float32), taken)
        if rewrite is not None and rewrite(node, build, info):
            nodes += build.nodes
            model.graph.initializer.extend(build.constants)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


#: The private domain under which :func:`hide_unchanged_ops` passes nodes through onnx's version converter.
HIDDEN_DOMAIN = "onnxslice.unchanged"


def _pad_as_opset_13(node: onnx.NodeProto) -> bool:
    """Pad without ``axes`` (opset 18) and not in mode ``"wrap"`` (opset 19) means what Pad of opset 13 means."""
    return (len(node.input) < 4 or not node.input[3]) and attribute(node, "mode", b"constant") != b"wrap"


#: op type -> whether a node of it (of a newer opset) means the same at opset 17.
UNCHANGED: dict[str, Callable[[onnx.NodeProto], bool]] = {"Pad": _pad_as_opset_13}


def hide_unchanged_ops(model: onnx.ModelProto) -> int:
    """Move every default-domain node of :data:`UNCHANGED` that means the same at opset 17 into
    :data:`HIDDEN_DOMAIN` (in place), so that the version converter leaves it alone; returns how many."""
    hidden = 0
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in UNCHANGED and UNCHANGED[node.op_type](node):
            node.domain = HIDDEN_DOMAIN
            hidden += 1
    if hidden:
        model.opset_import.append(helper.make_opsetid(HIDDEN_DOMAIN, 1))
    return hidden


def restore_hidden_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """Undo :func:`hide_unchanged_ops` (in place): the nodes back in the default domain, the private opset gone."""
    for node in model.graph.node:
        if node.domain == HIDDEN_DOMAIN:
            node.domain = ""
    kept = [opset for opset in model.opset_import if opset.domain != HIDDEN_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model
