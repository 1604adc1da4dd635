"""The graph editor restructure runs: which positions each tracked tensor keeps, and safe constant edits.

One walk over the graph (onnx-graphsurgeon): each node whose output carries channels gets its family's edit
(:mod:`onnxslice.surgery.ops`). A channel that stays because another member of its class keeps it, but that
this layer's slice drops, is zeroed (weight row, bias and tail constants); where the tail maps zero to a
constant (a sigmoid, say), that constant is subtracted right after the tail, so no mask node is ever written.
Every constant that is edited is copied first, so constants shared by several nodes stay intact, and one left
unchanged is never copied (a restructured model has no more parameters than the original).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.reference import ReferenceEvaluator

from onnxslice.graph import NeuronLayer, export_graph
from onnxslice.graph_utils import replace_uses
from onnxslice.large import infer_shapes
from onnxslice.surgery.analysis import ChannelGroups, Track

if TYPE_CHECKING:
    from onnxslice.surgery.ops.base import OpFamily


class Editor:
    """Removes the channels of the classes a slice drops, one family edit per node."""

    def __init__(self, groups: ChannelGroups, kept: Mapping[str, Sequence[int]], layer_family: OpFamily,
                 family_of: Callable[[str], OpFamily]) -> None:
        self.groups = groups
        self.kept = kept
        self.layer_family = layer_family
        self.family_of = family_of
        self.layers = groups.scan.by_name()
        self.removed = groups.removed(kept)
        self.graph = gs.import_onnx(groups.model)
        self.tensors = self.graph.tensors()
        self.pending_bias: dict[str, np.ndarray] = {}  #: MatMul tail Add -> constant to add to its bias
        self.zero: dict[str, np.ndarray] = {}  #: layer or tail node -> channels (original indices) to zero
        self.offsets: dict[str, np.ndarray] = {}  #: layer -> constant its tail leaves on zeroed channels (new order)
        self.zeroed = 0  #: dropped channels that stay (zeroed or masked)
        self._plan_zeroing()

    def run(self) -> onnx.ModelProto:
        for node in list(self.graph.nodes):
            if node.name in self.layers:
                self.layer_family.edit(self, node)
            elif node.outputs and node.outputs[0].name in self.groups.tracks:
                self.family_of(node.op).edit(self, node)
        for attention in self.groups.attention:
            attention.edit(self)
        self._cancel_offsets()
        io = {id(t) for t in [*self.graph.inputs, *self.graph.outputs]}
        for tensor in self.graph.tensors().values():
            if isinstance(tensor, gs.Variable) and id(tensor) not in io:
                tensor.shape = None
        self.graph.cleanup().toposort()
        model = export_graph(self.graph, like=self.groups.model)
        return infer_shapes(model)

    # -- what to keep ------------------------------------------------------------------------------
    def track(self, name: str) -> Track | None:
        return self.groups.tracks.get(name)

    def keep_of(self, name: str) -> np.ndarray | None:
        """Positions kept along a tensor's channel axis, or None when nothing is removed there."""
        track = self.track(name)
        if track is None:
            return None
        removed = self.removed[track.along_axis()]
        return None if not removed.any() else np.flatnonzero(~removed)

    def removed_of(self, name: str) -> np.ndarray:
        track = self.track(name)
        return np.zeros(0, bool) if track is None else self.removed[track.along_axis()]

    # -- constants -----------------------------------------------------------------------------------
    def value(self, node: gs.Node, index: int) -> np.ndarray | None:
        tensor = node.inputs[index] if index < len(node.inputs) else None
        return np.array(tensor.values) if isinstance(tensor, gs.Constant) else None

    def set_value(self, node: gs.Node, index: int, array: np.ndarray) -> None:
        """Give ``node`` its own copy of input ``index`` (shared constants are never edited in place); an
        unchanged value keeps the original constant, shared or not."""
        old = node.inputs[index] if index < len(node.inputs) else None
        if isinstance(old, gs.Constant) and same_array(np.asarray(old.values), array):
            return
        base = old.name if old is not None and old.name else f"{node.name}_input{index}"
        constant = gs.Constant(f"{base}__{node.name}__{index}", np.array(array, order="C"))  # keeps a scalar 0-d
        while len(node.inputs) <= index:
            node.inputs.append(gs.Variable.empty())
        node.inputs[index] = constant

    # -- partially dropped channels --------------------------------------------------------------------
    def _plan_zeroing(self) -> None:
        nodes = {node.name: node for node in self.graph.nodes}
        for name, indices in self.kept.items():
            layer = self.layers[name]
            elems = self.groups.layer_elems[name]
            dropped = np.ones(layer.size, bool)
            dropped[list(indices)] = False
            stays = dropped & ~self.removed[elems]
            if not stays.any():
                continue
            channels = np.flatnonzero(stays)
            self.zeroed += len(channels)
            zeroable = all(self.family_of(nodes[t].op).keeps_zero(self, nodes[t], layer) for t in layer.tail)
            for target in (name, *layer.tail) if zeroable else (name,):
                self.zero[target] = channels
            if not zeroable:
                keep = self.keep_of(layer.output)
                keep = np.arange(layer.size) if keep is None else keep
                at_zero = _tail_at_zero(self.groups, layer)
                offset = np.where(np.isin(np.arange(layer.size), channels), at_zero, 0)
                self.offsets[name] = offset[keep].astype(np.float32)

    def _cancel_offsets(self) -> None:
        """Subtract, right after the tail, the constant a zeroed channel's tail outputs (e.g. sigmoid(0))."""
        for name, offset in self.offsets.items():
            layer = self.layers[name]
            activation = self.tensors[layer.output]
            rank = len(self.groups.tracks[layer.output].elems.shape)
            axis = layer.channel_axis % rank
            shape = [len(offset) if a == axis else 1 for a in range(axis, rank)]
            cancelled = gs.Variable(f"{layer.output}__zeroed", dtype=activation.dtype)
            replace_uses(activation, cancelled)
            constant = gs.Constant(f"{layer.output}__zero_offset", (-offset).reshape(shape))
            self.graph.nodes.append(gs.Node("Add", f"{name}__zero_offset", inputs=[activation, constant],
                                            outputs=[cancelled]))


def same_array(old: np.ndarray, new: np.ndarray) -> bool:
    return old.shape == new.shape and old.dtype == new.dtype and np.array_equal(old, new)


def _tail_at_zero(groups: ChannelGroups, layer: NeuronLayer) -> np.ndarray:
    """Per channel, what ``layer``'s tail outputs when the layer outputs zero (onnx.reference on the tail alone)."""
    model = groups.model
    nodes = {node.name: node for node in model.graph.node}
    tail = [nodes[t] for t in layer.tail]
    inits = {init.name: init for init in model.graph.initializer}
    raw = nodes[layer.name].output[0]
    rank = groups.tracks[raw].elems.ndim
    axis = 1 if layer.op_type == "Conv" else rank - 1
    zero = np.zeros([layer.size if a == axis else 1 for a in range(rank)], np.float32)
    graph = onnx.helper.make_graph(
        tail, "tail", [onnx.helper.make_tensor_value_info(raw, onnx.TensorProto.FLOAT, zero.shape)],
        [onnx.helper.make_tensor_value_info(layer.output, onnx.TensorProto.FLOAT, None)],
        [inits[name] for node in tail for name in node.input if name in inits])
    tail_model = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    out = np.asarray(ReferenceEvaluator(tail_model).run(None, {raw: zero})[0])
    return np.moveaxis(out, layer.channel_axis, 0).reshape(layer.size, -1)[:, 0]
