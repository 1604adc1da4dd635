"""Shape of a tracked tensor: fine while only entries of axes that carry no channels are read from it (the batch
size, the token count, ...): removing channels leaves those entries as they were."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.graph_utils import attribute
from onnxslice.surgery.analysis import Analysis
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Shape(OpFamily):
    ops = frozenset({"Shape"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        if attribute(node, "start", 0) not in (0, None):
            return analysis.not_understood(node)
        track = analysis.tracks[node.input[0]]
        elems = track.elems
        with_channels = {track.axis} | {a for a in range(elems.ndim) if elems.shape[a] > 1}
        for user in analysis.users.get(node.output[0], []):
            read = _entries_read(analysis, user, elems.ndim)
            if read is None or read & with_channels:
                return analysis.not_understood(node)


def _entries_read(an: Analysis, user: onnx.NodeProto, rank: int) -> set[int] | None:
    """The entries of a shape vector that ``user`` reads: a Gather of constant indices or a Slice of constant bounds
    (step 1); None for any other reader."""
    if user.op_type == "Gather":
        index = an.const_input(user, 1)
        return None if index is None else {int(i) % rank for i in np.atleast_1d(index)}
    if user.op_type == "Slice" and len(user.input) <= 4:
        starts, ends = an.const_input(user, 1), an.const_input(user, 2)
        axes = an.const_input(user, 3) if len(user.input) > 3 else np.zeros(1, np.int64)
        if starts is None or ends is None or axes is None or starts.size != 1 or np.any(axes != 0):
            return None
        return set(range(rank)[slice(int(starts[0]), int(ends[0]))])
    return None
