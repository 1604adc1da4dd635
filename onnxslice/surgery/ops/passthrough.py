"""Ops that leave values as they are (Dropout at inference, Cast between float types); nothing to edit."""

from __future__ import annotations

import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, Track
from onnxslice.surgery.ops.base import OpFamily, register


@register
class PassThrough(OpFamily):
    ops = frozenset({"Dropout", "Cast"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        if node.op_type == "Cast" and attribute(node, "to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return analysis.not_understood(node)
        track = analysis.tracks[node.input[0]]
        analysis.tracks[node.output[0]] = Track(track.elems, track.value.copy(), track.axis)
