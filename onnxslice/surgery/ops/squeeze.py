"""Squeeze and Unsqueeze of axes that carry no channels: the channel axis shifts; nothing to edit."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Squeeze(OpFamily):
    ops = frozenset({"Squeeze", "Unsqueeze"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        axes = attribute(node, "axes", None)
        if axes is None:
            axes = analysis.const_input(node, 1)
        rank_out = analysis.rank(node.output[0])
        if axes is None or rank_out is None:
            return analysis.not_understood(node)
        value = expand_rank(track.value, track.elems.ndim)
        if node.op_type == "Squeeze":
            axes = sorted(int(a) % track.elems.ndim for a in np.atleast_1d(axes))
            if track.axis in axes:
                return analysis.not_understood(node)
            axis = track.axis - sum(a < track.axis for a in axes)
            analysis.set_track(node.output[0], np.squeeze(track.elems, tuple(axes)), np.squeeze(value, tuple(axes)),
                               axis)
        else:
            axes = sorted(int(a) % rank_out for a in np.atleast_1d(axes))
            elems, axis = track.elems, track.axis
            for a in axes:
                elems, value = np.expand_dims(elems, a), np.expand_dims(value, a)
                axis += a <= axis
            analysis.set_track(node.output[0], elems, value, axis)
