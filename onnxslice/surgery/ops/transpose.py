"""Transpose: the channels move with their axis; nothing to edit."""

from __future__ import annotations

import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Transpose(OpFamily):
    ops = frozenset({"Transpose"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        perm = attribute(node, "perm", None) or list(reversed(range(track.elems.ndim)))
        value = expand_rank(track.value, track.elems.ndim)
        analysis.set_track(node.output[0], track.elems.transpose(perm), value.transpose(perm),
                           list(perm).index(track.axis))
