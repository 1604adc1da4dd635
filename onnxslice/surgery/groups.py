"""Channel dependency groups of an ONNX graph, computed once as data: the analysis
(:mod:`onnxslice.surgery.analysis`) run with every op family's rule (:mod:`onnxslice.surgery.ops`)."""

from __future__ import annotations

import onnx

from onnxslice.surgery.analysis import Analysis, ChannelGroups, Track, UnionFind
from onnxslice.surgery.ops import LAYER, family_of

__all__ = ["ChannelGroups", "Track", "UnionFind", "channel_groups"]


def channel_groups(model: onnx.ModelProto) -> ChannelGroups:
    """Analyse a canonical model (see :func:`onnxslice.graph.load_model`) once."""
    return Analysis(model).run(LAYER, family_of)
