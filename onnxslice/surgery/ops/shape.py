"""Shape of a tracked tensor: fine while only the batch size is read from it (nothing carries channels on)."""

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
        for user in analysis.users.get(node.output[0], []):
            index = analysis.const_input(user, 1)
            if not (user.op_type == "Gather" and index is not None and np.all(np.atleast_1d(index) == 0)):
                return analysis.not_understood(node)
        if attribute(node, "start", 0) not in (0, None):
            return analysis.not_understood(node)
