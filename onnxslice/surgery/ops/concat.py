"""Concat: along the channel axis channels follow one another; along another axis they are united. Nothing to
edit (its inputs are already edited)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Concat(OpFamily):
    ops = frozenset({"Concat"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        rank = analysis.rank(node.output[0])
        if rank is None:
            return analysis.not_understood(node)
        axis = int(attribute(node, "axis")) % rank
        parts_e, parts_v, common = [], [], [1] * rank
        for name in node.input:
            if name in analysis.tracks:
                for a, d in enumerate(analysis.tracks[name].elems.shape):
                    if a != axis and d > 1:
                        common[a] = d
        channel_axis = next(analysis.tracks[n].axis for n in node.input if n in analysis.tracks)
        for name in node.input:
            shape = analysis.shapes.get(name)
            if shape is None or not isinstance(shape[axis], int):
                return analysis.not_understood(node)
            target = list(common)
            target[axis] = shape[axis]
            if name in analysis.tracks:
                track = analysis.tracks[name]
                value = expand_rank(track.value, rank)
                parts_e.append(np.broadcast_to(track.elems, target))
                parts_v.append(np.broadcast_to(value, target) if all(
                    v in (1, t) for v, t in zip(value.shape, target, strict=True))
                    else np.full(target, np.nan, np.float32))
            else:
                reason = f"Concat {node.name!r} joins the channels with {name!r}, whose channels are not tracked"
                parts_e.append(analysis.opaque(int(np.prod(target)), reason).reshape(target))
                parts_v.append(np.full(target, np.nan, np.float32))
        analysis.set_track(node.output[0], np.concatenate(parts_e, axis), np.concatenate(parts_v, axis),
                           channel_axis)
