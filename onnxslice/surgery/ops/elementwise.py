"""Activations, BatchNormalization and element-wise arithmetic: channels line up and are united; restructure
slices the constant operands along the channel axis."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.reference import ReferenceEvaluator

from onnxslice.graph import NeuronLayer
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.ops.base import OpFamily, register

#: Element-wise ops whose value at a removed channel can be computed from constants (onnx.reference).
UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
    "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Erf", "Neg", "Abs", "Exp", "Sqrt", "Reciprocal",
    "BatchNormalization",
})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "Where"})
#: Activations with f(0) = 0: a zeroed channel stays zero through them.
ZERO_PRESERVING = frozenset({"Relu", "LeakyRelu", "PRelu", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Mish",
                             "HardSwish", "Softsign", "ThresholdedRelu"})


@register
class Elementwise(OpFamily):
    ops = UNARY | BINARY
    slices_constants = True

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        out = node.output[0]
        rank = analysis.rank(out)
        tracked = [(i, analysis.tracks[name]) for i, name in enumerate(node.input) if name in analysis.tracks]
        if rank is None:
            return analysis.not_understood(node)
        if node.op_type == "BatchNormalization" and tracked[0][1].axis != 1:
            return analysis.not_understood(node)
        aligned = [expand_rank(track.elems, rank) for _, track in tracked]
        broadcast = np.broadcast_arrays(*aligned)
        for other in broadcast[1:]:
            analysis.uf.unite(broadcast[0], other)
        axis = tracked[0][1].axis + rank - tracked[0][1].elems.ndim
        elems = np.array(broadcast[0])
        computable = True
        for name in node.input:
            if not name or name in analysis.tracks or name in analysis.consts:
                continue
            computable = False
            shape = analysis.shapes.get(name)
            if shape is None or _dim(shape, axis, rank) not in (1,):
                analysis.keep(elems, f"{node.op_type} node {node.name!r} combines the channels with {name!r}, "
                                     "whose channels are not tracked")
        value = _evaluate(analysis, node, rank) if computable else np.full(elems.shape, np.nan, np.float32)
        value = np.where(np.isfinite(value), value, np.nan)  # never fold an infinity (e.g. a division by zero)
        if node.op_type in ("Mul", "Div"):
            zero_inputs = tracked if node.op_type == "Mul" else [t for t in tracked if t[0] == 0]
            for _, track in zero_inputs:
                zero = expand_rank(track.value, rank) == 0
                value = np.where(zero, np.float32(0), value)
        analysis.set_track(out, elems, np.asarray(value, np.float32), axis)

    def edit(self, editor: Editor, node: gs.Node) -> None:
        """Slice each constant operand along the channel axis; zero entries of partially dropped channels."""
        out = node.outputs[0].name
        track = editor.track(out)
        keep = editor.keep_of(out)
        rank = track.elems.ndim
        full = track.elems.shape[track.axis]
        zero = editor.zero.get(node.name)
        for i in range(len(node.inputs)):
            array = editor.value(node, i)
            if array is None or array.dtype.kind != "f":
                continue
            if node.op == "BatchNormalization":
                axis = 0 if i > 0 else None
            else:
                axis = track.axis - (rank - array.ndim)
                axis = axis if 0 <= axis < array.ndim and array.shape[axis] == full and full > 1 else None
            if axis is None:
                continue
            edited = array
            if zero is not None and (node.op in ("Add", "Sub") or (node.op == "BatchNormalization" and i in (2, 3))):
                edited = array.copy()
                np.moveaxis(edited, axis, 0)[zero] = 0
            if node.name in editor.pending_bias:
                edited = edited + np.reshape(editor.pending_bias[node.name],
                                             [-1 if a == axis else 1 for a in range(array.ndim)]).astype(array.dtype)
            if keep is not None:
                edited = np.take(edited, keep, axis=axis)
            if edited is not array:
                editor.set_value(node, i, edited)

    def keeps_zero(self, editor: Editor, node: gs.Node, layer: NeuronLayer) -> bool:
        if node.op in ("Add", "Sub"):  # the edit zeroes a per-channel constant
            constant = next((editor.value(node, i) for i in range(2) if editor.value(node, i) is not None), None)
            return constant is not None and constant.size == layer.size
        if node.op == "Clip":
            low = editor.value(node, 1) if len(node.inputs) > 1 else node.attrs.get("min")
            high = editor.value(node, 2) if len(node.inputs) > 2 else node.attrs.get("max")
            return (low is None or low <= 0) and (high is None or high >= 0)
        return node.op in ("Mul", "Div", "BatchNormalization") or node.op in ZERO_PRESERVING


def _evaluate(an: Analysis, node: onnx.NodeProto, rank: int) -> np.ndarray:
    """The op applied to the values at removed channels and its constant operands (onnx.reference)."""
    feeds, inputs = {}, []
    for i, name in enumerate(node.input):
        key = f"in{i}"
        inputs.append(key if name else "")
        if not name:
            continue
        if name in an.tracks:
            feeds[key] = expand_rank(an.tracks[name].value, rank).astype(np.float32)
        else:
            feeds[key] = an.consts[name]
    one = onnx.helper.make_node(node.op_type, inputs, ["out"], domain=node.domain)
    one.attribute.extend(node.attribute)
    graph = onnx.helper.make_graph(
        [one], "value", [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
                         for k, v in feeds.items()],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED, None)])
    model = onnx.helper.make_model(graph, opset_imports=list(an.model.opset_import))
    with np.errstate(all="ignore"):
        return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0], np.float32)


def _dim(shape: list[int | str | None], axis: int, rank: int) -> int | str | None:
    position = axis - (rank - len(shape))
    return 1 if position < 0 else shape[position]
