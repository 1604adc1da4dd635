"""Pooling, padding, resizing and reductions over other axes: channels pass through unchanged, a constant
channel stays that constant; Resize's constant output sizes follow the channels that stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Spatial(OpFamily):
    ops = frozenset({"GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool", "Pad", "ReduceMean",
                     "ReduceMax", "ReduceMin"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        if len(node.output) > 1 and any(node.output[1:]) and any(analysis.users.get(o) for o in node.output[1:]):
            return analysis.not_understood(node)
        rank_in, rank_out = track.elems.ndim, analysis.rank(node.output[0])
        value = track.value
        spatial = [a for a in range(2, rank_in)]
        if node.op_type.startswith("Reduce"):
            axes = attribute(node, "axes", None)
            if axes is None:
                axes = analysis.const_input(node, 1)
            if axes is None:
                return analysis.not_understood(node)
            axes = sorted(int(a) % rank_in for a in np.atleast_1d(axes))
            if track.axis in axes or track.elems.shape[track.axis] > 1 and any(track.elems.shape[a] > 1 for a in axes):
                return analysis.not_understood(node)
            spatial = axes
        elif track.axis != 1:
            return analysis.not_understood(node)
        if node.op_type == "Pad":
            pads = analysis.const_input(node, 1)
            mode = attribute(node, "mode", b"constant")
            if pads is None or pads[track.axis] or pads[track.axis + rank_in]:
                return analysis.not_understood(node)
            if mode in (b"constant", "constant"):
                value = np.where(value == 0, value, np.nan)
        if node.op_type == "AveragePool" and attribute(node, "count_include_pad", 0):
            value = np.where(value == 0, value, np.nan)
        # a constant channel stays that constant; one that varies over space becomes unknown
        value = expand_rank(value, rank_in)
        if any(value.shape[a] > 1 for a in spatial):
            value = np.full(value.shape, np.nan, np.float32)
        value = value[tuple(slice(0, 1) if a in spatial else slice(None) for a in range(value.ndim))]
        elems = track.elems
        if rank_out is not None and rank_out < rank_in:  # keepdims=0
            keep_axes = [a for a in range(rank_in) if a not in spatial]
            elems = elems.reshape([elems.shape[a] for a in keep_axes])
            value = value.reshape([value.shape[a] for a in keep_axes])
            axis = keep_axes.index(track.axis)
        else:
            axis = track.axis
        analysis.set_track(node.output[0], elems, value, axis)


@register
class Resize(Spatial):
    ops = frozenset({"Resize"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        if len(node.input) > 3 and node.input[3] and analysis.const_input(node, 3) is None:
            return analysis.not_understood(node)  # output sizes computed at run time
        super().rule(analysis, node)

    def edit(self, editor: Editor, node: gs.Node) -> None:
        out = node.outputs[0].name
        keep = editor.keep_of(out)
        sizes = editor.value(node, 3) if len(node.inputs) > 3 else None
        if keep is not None and sizes is not None and sizes.size:
            sizes = sizes.copy()
            sizes[editor.track(out).axis] = len(keep)
            editor.set_value(node, 3, sizes)
