"""Split: each output takes its part of the channels; restructure recomputes the part sizes along the channel
axis."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Split(OpFamily):
    ops = frozenset({"Split"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        rank = track.elems.ndim
        axis = int(attribute(node, "axis", 0)) % rank
        sizes = analysis.const_input(node, 1)
        if sizes is None:
            sizes = attribute(node, "split", None)
        shape = analysis.shapes.get(node.input[0])
        if sizes is None and shape is not None and isinstance(shape[axis], int):
            sizes = [shape[axis] // len(node.output)] * len(node.output)
        if sizes is None or (len(node.input) > 1 and node.input[1] and analysis.const_input(node, 1) is None):
            return analysis.not_understood(node)
        value = expand_rank(track.value, rank)
        start = 0
        for out, size in zip(node.output, np.atleast_1d(sizes).tolist(), strict=True):
            part = slice(start, start + size)
            pick = tuple(part if a == axis else slice(None) for a in range(rank))
            elems = track.elems[pick] if track.elems.shape[axis] > 1 else track.elems
            val = value[pick] if value.shape[axis] > 1 else value
            analysis.set_track(out, elems, val, track.axis)
            start += size

    def edit(self, editor: Editor, node: gs.Node) -> None:
        track = editor.track(node.inputs[0].name)
        if editor.keep_of(node.inputs[0].name) is None:
            return
        axis = int(node.attrs.get("axis", 0)) % track.elems.ndim
        if axis != track.axis:
            return
        sizes = [int(np.sum(~editor.removed_of(out.name))) for out in node.outputs]
        if "split" in node.attrs:
            node.attrs["split"] = sizes
        else:
            node.attrs.pop("num_outputs", None)
            editor.set_value(node, 1, np.array(sizes, np.int64))
