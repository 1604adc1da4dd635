"""Flatten and Reshape with static non-batch axes: a channel becomes a block (or a grid) of positions;
restructure rewrites the constant entry of the target shape that sets the channel count. A Reshape that starts a
recognised multi-head attention is left to :mod:`onnxslice.surgery.ops.attention`."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.graph_utils import attribute, concat_piece, vector_length
from onnxslice.surgery.analysis import Analysis
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.ops.attention import heads_rule
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Reshape(OpFamily):
    ops = frozenset({"Flatten", "Reshape"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        if node.op_type == "Reshape" and heads_rule(analysis, node):
            return
        track = analysis.tracks[node.input[0]]
        shape_in, shape_out = analysis.full_shape(node.input[0]), analysis.full_shape(node.output[0])
        real_in, real_out = analysis.shapes.get(node.input[0]), analysis.shapes.get(node.output[0])
        batch_first = _batch_first_target(analysis, node, shape_in) if node.op_type == "Reshape" else None
        if batch_first is not None:
            shape_out = batch_first
        elif shape_in is None or shape_out is None or real_in[0] is None or real_in[0] != real_out[0]:
            return analysis.not_understood(node)
        if node.op_type == "Flatten" and attribute(node, "axis", 1) != 1:
            return analysis.not_understood(node)
        elems = np.broadcast_to(track.elems, shape_in).reshape(shape_out)
        value = np.broadcast_to(track.value, np.broadcast_shapes(track.value.shape, shape_in)).reshape(shape_out)
        elems, value = _compress(elems), _compress(value)
        if elems.size == 1:
            return analysis.not_understood(node)
        analysis.set_track(node.output[0], elems, value, 1)
        if node.op_type == "Reshape" and not _channel_count_is_constant(analysis, node.input[1],
                                                                        analysis.tracks[node.output[0]].axis):
            del analysis.tracks[node.output[0]]
            analysis.keep(track.elems, f"Reshape {node.name!r} takes its channel count from a computed shape")

    def edit(self, editor: Editor, node: gs.Node) -> None:
        out = node.outputs[0].name
        keep = editor.keep_of(out)
        if keep is None or node.op == "Flatten":
            return
        axis = editor.track(out).axis
        shape_tensor = node.inputs[1]
        if isinstance(shape_tensor, gs.Constant):
            shape = np.array(shape_tensor.values)
            if shape[axis] != -1:
                shape[axis] = len(keep)
                editor.set_value(node, 1, shape)
            return
        concat = shape_tensor.inputs[0]
        piece, index = concat_piece((int(piece.shape[0]) for piece in concat.inputs), axis)
        values = np.array(concat.inputs[piece].values)
        if values[index] != -1:
            values[index] = len(keep)
            editor.set_value(concat, piece, values)


def _channel_count_is_constant(an: Analysis, shape_name: str, axis: int) -> bool:
    """Whether a constant (the target shape, or a constant piece of the Concat that builds it) sets output axis
    ``axis`` of a Reshape: the entry restructure rewrites."""
    if shape_name in an.consts:
        return _settable(an.consts[shape_name][axis])
    producer = next((n for n in an.model.graph.node if shape_name in n.output), None)
    if producer is None or producer.op_type != "Concat":
        return False
    found = concat_piece((vector_length(an.shapes.get(piece)) for piece in producer.input), axis)
    if found is None:
        return False
    piece, index = producer.input[found[0]], found[1]
    return piece in an.consts and _settable(an.consts[piece][index])


def _settable(entry: np.integer) -> bool:
    return entry > 0 or entry == -1


def _batch_first_target(an: Analysis, node: onnx.NodeProto, shape_in: tuple[int, ...] | None
                        ) -> tuple[int, ...] | None:
    """The output shape (batch as 1) of a Reshape to a constant ``(-1, d1, d2, ...)`` of the input's per-sample size:
    the -1 is the batch. PyTorch's dynamo exporter writes ``view(-1, C)`` so, and shape inference cannot tell that
    -1 is the batch (it names the axis anew), so this is read from the constant."""
    target = an.consts.get(node.input[1])
    if shape_in is None or target is None or target.ndim != 1 or len(target) < 2 or target[0] != -1:
        return None
    rest = [int(d) for d in target[1:]]
    return (1, *rest) if min(rest) > 0 and math.prod(rest) == math.prod(shape_in[1:]) else None


def _compress(array: np.ndarray) -> np.ndarray:
    """Shrink to size 1 every axis along which the array does not vary (NaN equal to NaN)."""
    for axis in range(array.ndim):
        if array.shape[axis] > 1:
            first = np.take(array, [0], axis=axis)
            same = (array == first) | (np.isnan(array) & np.isnan(first)) if array.dtype.kind == "f" else \
                array == first
            if np.all(same):
                array = first
    return np.ascontiguousarray(array)
