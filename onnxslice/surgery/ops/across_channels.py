"""Normalisations across channels (LayerNorm, Softmax, ...): a removed channel would change every other one, so
every channel they read is kept."""

from __future__ import annotations

import onnx

from onnxslice.surgery.analysis import Analysis
from onnxslice.surgery.ops.base import OpFamily, register


@register
class AcrossChannels(OpFamily):
    ops = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax",
                     "LpNormalization", "LRN"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        analysis.not_understood(node, f"{node.op_type} node {node.name!r} normalises across channels")
