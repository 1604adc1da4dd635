"""Gather of one position along an axis that carries no channels (e.g. a class token); nothing to edit."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Gather(OpFamily):
    ops = frozenset({"Gather"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        index = analysis.const_input(node, 1)
        rank = track.elems.ndim
        axis = int(attribute(node, "axis", 0)) % rank
        if index is None or index.ndim != 0 or axis == track.axis or track.elems.shape[axis] > 1:
            return analysis.not_understood(node)
        value = expand_rank(track.value, rank)
        value = np.take(value, int(index) if value.shape[axis] > 1 else 0, axis=axis)
        analysis.set_track(node.output[0], np.take(track.elems, 0, axis=axis), value,
                           track.axis - (axis < track.axis))
