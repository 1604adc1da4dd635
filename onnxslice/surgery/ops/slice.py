"""Slice with constant bounds and step 1: the output keeps its range of channels; restructure moves the bounds
on the channel axis to the channels that stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.surgery.analysis import Analysis, expand_rank
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.ops.base import OpFamily, register


@register
class Slice(OpFamily):
    ops = frozenset({"Slice"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        rank = track.elems.ndim
        starts, ends = analysis.const_input(node, 1), analysis.const_input(node, 2)
        if starts is None or ends is None:
            return analysis.not_understood(node)
        axes = analysis.const_input(node, 3) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        steps = analysis.const_input(node, 4) if len(node.input) > 4 and node.input[4] else None
        if axes is None or (len(node.input) > 4 and node.input[4] and steps is None):
            return analysis.not_understood(node)
        steps = np.ones(len(starts), np.int64) if steps is None else steps
        elems, value = track.elems, expand_rank(track.value, rank)
        for start, end, a, step in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist(), strict=True):
            a = int(a) % rank
            if elems.shape[a] == 1:
                continue
            if step != 1:
                return analysis.not_understood(node)
            pick = tuple(slice(start, end) if b == a else slice(None) for b in range(rank))
            elems = elems[pick]
            value = value[pick] if value.shape[a] > 1 else value
        analysis.set_track(node.output[0], elems, value, track.axis)

    def edit(self, editor: Editor, node: gs.Node) -> None:
        name = node.inputs[0].name
        track = editor.track(name)
        if editor.keep_of(name) is None:
            return
        removed = editor.removed_of(name)
        starts, ends = editor.value(node, 1), editor.value(node, 2)
        axes = editor.value(node, 3) if len(node.inputs) > 3 else np.arange(len(starts))
        position = [i for i, a in enumerate(axes.tolist()) if int(a) % track.elems.ndim == track.axis]
        if not position:
            return
        i = position[0]
        picked = np.arange(len(removed))[slice(int(starts[i]), int(ends[i]))]
        before = int(np.sum(~removed[: picked[0]])) if len(picked) else 0
        starts, ends = starts.copy(), ends.copy()
        starts[i], ends[i] = before, before + int(np.sum(~removed[picked]))
        editor.set_value(node, 1, starts)
        editor.set_value(node, 2, ends)
