"""Neuron layers (Conv, Gemm, MatMul found by :func:`onnxslice.graph.find_neuron_layers`): their output channels
are the elements; their input channels are consumed as weight columns, any constant a removed input leaves
folded into the bias.

A Conv, Gemm or MatMul is a layer only when the scan says so (e.g. attention's MatMul of two activations is not),
so this family claims no op type in the table: the analysis and the editor apply it by node name.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.graph import NeuronLayer
from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, Track
from onnxslice.surgery.editor import Editor, same_array
from onnxslice.surgery.ops.base import OpFamily


class Layer(OpFamily):
    """The neuron layers: new elements out, tracked channels in (see the module docstring)."""

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        layer = analysis.layers[node.name]
        out = node.output[0]
        rank = analysis.rank(out) or (2 if layer.channel_axis == -1 else analysis.consts[layer.weight].ndim)
        elems = analysis.uf.make(layer.size)
        analysis.layer_elems[layer.name] = elems
        if layer.is_output:
            analysis.keep(elems, "classifier output (its channels are the categories)")
        axis = 1 if layer.op_type == "Conv" else rank - 1
        shape = [1] * rank
        shape[axis] = layer.size
        group = int(attribute(node, "group", 1)) if layer.op_type == "Conv" else 1
        inp = node.input[0]
        if inp in analysis.tracks:
            _consume(analysis, node, layer, analysis.tracks[inp], elems, group)
        elif group > 1:
            analysis.keep(elems, f"grouped convolution {node.name!r} reads channels that cannot be removed")
        analysis.tracks[out] = Track(elems.reshape(shape), np.full(shape, np.nan, np.float32), axis)

    def edit(self, editor: Editor, node: gs.Node) -> None:
        layer = editor.layers[node.name]
        weight = editor.value(node, 1)
        trans_b = int(node.attrs.get("transB", 0)) if node.op == "Gemm" else 0
        out_axis = {"Conv": 0, "Gemm": 0 if trans_b else 1, "MatMul": 1}[node.op]
        in_axis = {"Conv": 1, "Gemm": 1 if trans_b else 0, "MatMul": 0}[node.op]
        bias_index = 2 if node.op in ("Conv", "Gemm") else None
        size = layer.size
        bias = editor.value(node, bias_index) if bias_index is not None and len(node.inputs) > 2 else None
        if bias is not None:
            bias = np.broadcast_to(bias.reshape(-1), (size,)).astype(weight.dtype).copy()
        original_bias = bias
        if node.name in editor.zero:
            weight = weight.copy()
            np.moveaxis(weight, out_axis, 0)[editor.zero[node.name]] = 0
            if bias is not None:
                bias = bias.copy()
                bias[editor.zero[node.name]] = 0
        group = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
        removed_in = editor.removed_of(node.inputs[0].name)
        by_position = node.name in editor.groups.by_position
        if by_position:  # the same input positions go from every group (see _consume)
            removed_in = removed_in[: weight.shape[1]]
        if (group == 1 or by_position) and removed_in.any():  # after zeroing: a zeroed row folds nothing, stays zero
            delta = _folded_constant(editor, node, weight, in_axis, removed_in, group)
            if delta is not None:
                if node.op == "MatMul":
                    editor.pending_bias[layer.tail[0]] = delta
                else:
                    scale = float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0)) \
                        if node.op == "Gemm" and bias is not None else float(node.attrs.get("alpha", 1.0))
                    if node.op == "Gemm" and bias is None:
                        node.attrs["beta"] = 1.0
                    bias = (np.zeros(size, weight.dtype) if bias is None else bias) + \
                        (scale * delta).astype(weight.dtype)
            weight = np.compress(~removed_in, weight, axis=in_axis)
        keep_out = editor.keep_of(node.outputs[0].name)
        if keep_out is not None:
            weight = np.take(weight, keep_out, axis=out_axis)
            bias = bias[keep_out] if bias is not None else None
            if group > 1 and not by_position:
                node.attrs["group"] = group * len(keep_out) // size
        editor.set_value(node, 1, weight)
        if bias is not None and (original_bias is None or not same_array(bias, original_bias)):  # untouched: as was
            editor.set_value(node, bias_index, bias)


LAYER = Layer()


def _consume(an: Analysis, node: onnx.NodeProto, layer: NeuronLayer, track: Track, out_elems: np.ndarray,
             group: int) -> None:
    rank = track.elems.ndim
    if layer.op_type == "Gemm" and attribute(node, "transA", 0):
        an.keep(track.elems, f"Gemm {node.name!r} reads its input transposed")
        return
    axis = 1 if layer.op_type == "Conv" else rank - 1
    elems = an.collapse(track, axis)
    if group > 1:
        per_in, per_out = len(elems) // group, layer.size // group
        if per_in == 1 or per_in + per_out <= group:
            # whole groups go: a group's inputs and outputs form one class (depthwise: channel i in and out)
            for g in range(group):
                an.uf.unite(np.array([out_elems[g * per_out]]), np.concatenate(
                    [elems[g * per_in:(g + 1) * per_in], out_elems[g * per_out:(g + 1) * per_out]]))
            return
        # few groups of many channels: position j of every group goes together, so the groups stay equal
        an.by_position.add(node.name)
        an.unite_along(elems.reshape(group, per_in), 1)
        an.unite_along(out_elems.reshape(group, per_out), 1)
    value = Track(track.elems, track.value, axis).value_along_axis()
    nonzero = value != 0
    unknown = np.isnan(value)
    an.keep(elems[unknown], f"the value a removed channel leaves at the input of {node.name!r} is not a constant")
    if not np.any(nonzero & ~unknown):
        return
    why_not = _why_not_foldable(an, node, layer)
    if why_not:
        an.keep(elems[nonzero & ~unknown], f"a removed channel leaves a non-zero constant at the input of "
                                           f"{node.name!r}, which cannot be folded ({why_not})")


def _why_not_foldable(an: Analysis, node: onnx.NodeProto, layer: NeuronLayer) -> str | None:
    if layer.op_type == "Conv":
        pads = attribute(node, "pads", None)
        if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID") or (
                pads is not None and any(pads)):
            return "padding"
        return None
    if layer.op_type == "Gemm":
        bias = an.const_input(node, 2)
        if len(node.input) > 2 and node.input[2] and (bias is None or bias.size not in (1, layer.size)):
            return "its bias is not a per-output vector"
        return None
    add = an.nodes[layer.tail[0]] if layer.tail else None
    if add is None or add.op_type != "Add":
        return "MatMul without a bias Add"
    bias = next((an.consts[n] for n in add.input if n in an.consts), None)
    return None if bias is not None and bias.size == layer.size else "MatMul without a per-output bias"


def _folded_constant(ed: Editor, node: gs.Node, weight: np.ndarray, in_axis: int, removed: np.ndarray,
                     group: int = 1) -> np.ndarray | None:
    """What the removed input channels contributed as constants, per output channel (None when all zero).

    ``removed`` marks input positions (within each group for a grouped conv, the same in every group).
    """
    track = ed.track(node.inputs[0].name)
    value = Track(track.elems, track.value, track.axis).value_along_axis()
    value = np.where(np.tile(removed, group), value, 0).astype(np.float64)
    if not np.any(value):
        return None
    if node.op == "Conv":
        per_channel = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2).astype(np.float64)
        per_group = value.reshape(group, -1)[np.arange(weight.shape[0]) // (weight.shape[0] // group)]
        return np.sum(per_channel * per_group, axis=1)
    return np.moveaxis(weight, in_axis, -1).astype(np.float64) @ value
