"""Physically remove the channels a slice drops: a smaller ONNX model that computes what the mask computes.

The channel groups (:mod:`onnxslice.surgery.groups`) decide which channels go; this module edits the
graph with onnx-graphsurgeon, one small edit per op family (:data:`EDITS`): neuron layers lose output
rows and input columns (folding any constant a removed input leaves into the bias), element-wise ops
and BatchNormalization lose the matching entries of their constant operands, grouped convolutions
change ``group``, and Reshape / Split / Slice / Resize get their constant sizes recomputed. A channel
that stays because another member of its class keeps it, but that this layer's slice drops, is zeroed
(weight row, bias and tail constants); where the tail maps zero to a constant (a sigmoid, say), that constant
is subtracted right after the tail, so no mask node is ever written. Every constant that is edited is
copied first, so constants shared by several nodes stay intact, and one left unchanged is never copied (a
restructured model has no more parameters than the original).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx.reference import ReferenceEvaluator

from onnxslice.errors import InputError
from onnxslice.graph import NeuronLayer, export_graph, fold_constants
from onnxslice.graph_utils import node_named, replace_uses
from onnxslice.large import infer_shapes
from onnxslice.surgery.groups import ZERO_PRESERVING, ChannelGroups, Track, channel_groups


@dataclass
class RestructureReport:
    """What was removed and what was kept whole, and why."""

    channels: dict[str, tuple[int, int]]  #: hidden layer -> (channels before, after)
    dropped_by_slice: int  #: hidden channels the slice drops
    zeroed: int  #: dropped channels kept (zeroed) because a coupled layer keeps them or for a reason below
    kept_whole: list[dict] = field(default_factory=list)  #: {"layers", "channels", "reason"}

    @property
    def channels_before(self) -> int:
        return sum(before for before, _ in self.channels.values())

    @property
    def channels_removed(self) -> int:
        return sum(before - after for before, after in self.channels.values())

    @property
    def removed_fraction(self) -> float:
        """Fraction of all hidden channels that were physically removed."""
        return self.channels_removed / max(self.channels_before, 1)

    def to_json(self) -> dict:
        return {
            "channels_before": self.channels_before,
            "channels_removed": self.channels_removed,
            "channels_dropped_by_slice": self.dropped_by_slice,
            "channels_zeroed": self.zeroed,
            "channels_removed_fraction": self.removed_fraction,
            "layers": {name: {"before": b, "after": a} for name, (b, a) in self.channels.items()},
            "kept_whole": self.kept_whole,
        }


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold shape computations that the static (non-batch) axes decide, so sizes become editable constants."""
    model = infer_shapes(model)
    while True:  # each pass can fix shapes that let the next one fold further (e.g. channel shuffles)
        graph = gs.import_onnx(model)
        fold_constants(graph, fold_shapes=True).cleanup().toposort()
        folded = export_graph(graph, like=model)
        del folded.graph.value_info[:]
        folded = infer_shapes(folded)
        if len(folded.graph.node) == len(model.graph.node):
            return folded
        model = folded


def restructure(model: onnx.ModelProto, kept: Mapping[str, Sequence[int]],
                groups: ChannelGroups | None = None) -> tuple[onnx.ModelProto, RestructureReport]:
    """Remove the channels ``kept`` drops from a canonical model; returns the new model and a report.

    ``groups`` may be passed when already computed for ``prepare(model)``.
    """
    groups = groups or channel_groups(prepare(model))
    layers = groups.scan.by_name()
    for name, indices in kept.items():
        if name not in layers:
            raise InputError(f"cannot restructure {name!r}: not a neuron layer of the model")
        if layers[name].is_output and len(indices) != layers[name].size:
            raise InputError(f"cannot restructure {name!r}: it is the output layer (its neurons are the categories)")
    editor = _Editor(groups, kept)
    pruned = editor.run()
    channels = {}
    for layer in groups.scan.hidden:
        keep = editor.keep_of(layer_raw_output(groups, layer))
        channels[layer.name] = (layer.size, layer.size if keep is None else len(keep))
    dropped = sum(layers[name].size - len(indices) for name, indices in kept.items() if not layers[name].is_output)
    kept_whole = [{"layers": g["layers"], "channels": count, "of": g["channels"], "reason": reason}
                  for g in groups.groups() for reason, count in g["kept"].items()
                  if not reason.startswith("classifier output")]
    return pruned, RestructureReport(channels, dropped, editor.zeroed, kept_whole)


def layer_raw_output(groups: ChannelGroups, layer: NeuronLayer) -> str:
    return node_named(groups.model.graph, layer.name).output[0]


class _Editor:
    def __init__(self, groups: ChannelGroups, kept: Mapping[str, Sequence[int]]) -> None:
        self.groups = groups
        self.kept = kept
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
                _edit_layer(self, node, self.layers[node.name])
            elif node.outputs and node.outputs[0].name in self.groups.tracks:
                EDITS.get(node.op, _no_edit)(self, node)
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
        if isinstance(old, gs.Constant) and _same(np.asarray(old.values), array):
            return
        base = old.name if old is not None and old.name else f"{node.name}_input{index}"
        constant = gs.Constant(f"{base}__{node.name}__{index}", np.ascontiguousarray(array))
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
            zeroable = all(_tail_zeroable(nodes[t], layer, self.value) for t in layer.tail)
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


def _same(old: np.ndarray, new: np.ndarray) -> bool:
    return old.shape == new.shape and old.dtype == new.dtype and np.array_equal(old, new)


def _tail_zeroable(node: gs.Node, layer: NeuronLayer, value: Callable) -> bool:
    """Whether zeroing this tail node's per-channel constants keeps a zeroed channel at zero."""
    if node.op in ("Add", "Sub"):
        constant = next((value(node, i) for i in range(2) if value(node, i) is not None), None)
        return constant is not None and constant.size == layer.size
    if node.op == "Clip":
        low = value(node, 1) if len(node.inputs) > 1 else node.attrs.get("min")
        high = value(node, 2) if len(node.inputs) > 2 else node.attrs.get("max")
        return (low is None or low <= 0) and (high is None or high >= 0)
    return node.op in ("Mul", "Div", "BatchNormalization") or node.op in ZERO_PRESERVING


# -- edits: one per op family --------------------------------------------------------------------------

def _no_edit(ed: _Editor, node: gs.Node) -> None:
    """Concat, Transpose, Flatten, Squeeze, pooling, Gather, Shape: nothing to change but the inputs."""


def _edit_layer(ed: _Editor, node: gs.Node, layer: NeuronLayer) -> None:
    weight = ed.value(node, 1)
    trans_b = int(node.attrs.get("transB", 0)) if node.op == "Gemm" else 0
    out_axis = {"Conv": 0, "Gemm": 0 if trans_b else 1, "MatMul": 1}[node.op]
    in_axis = {"Conv": 1, "Gemm": 1 if trans_b else 0, "MatMul": 0}[node.op]
    bias_index = 2 if node.op in ("Conv", "Gemm") else None
    size = layer.size
    bias = ed.value(node, bias_index) if bias_index is not None and len(node.inputs) > 2 else None
    if bias is not None:
        bias = np.broadcast_to(bias.reshape(-1), (size,)).astype(weight.dtype).copy()
    original_bias = bias
    if node.name in ed.zero:
        weight = weight.copy()
        np.moveaxis(weight, out_axis, 0)[ed.zero[node.name]] = 0
        if bias is not None:
            bias = bias.copy()
            bias[ed.zero[node.name]] = 0
    group = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
    removed_in = ed.removed_of(node.inputs[0].name)
    by_position = node.name in ed.groups.by_position
    if by_position:  # the same input positions go from every group (see groups._consume)
        removed_in = removed_in[: weight.shape[1]]
    if (group == 1 or by_position) and removed_in.any():  # after zeroing: a zeroed row folds nothing, stays zero
        delta = _folded_constant(ed, node, weight, in_axis, removed_in, group)
        if delta is not None:
            if node.op == "MatMul":
                ed.pending_bias[layer.tail[0]] = delta
            else:
                scale = float(node.attrs.get("alpha", 1.0)) / float(node.attrs.get("beta", 1.0)) \
                    if node.op == "Gemm" and bias is not None else float(node.attrs.get("alpha", 1.0))
                if node.op == "Gemm" and bias is None:
                    node.attrs["beta"] = 1.0
                bias = (np.zeros(size, weight.dtype) if bias is None else bias) + (scale * delta).astype(weight.dtype)
        weight = np.compress(~removed_in, weight, axis=in_axis)
    keep_out = ed.keep_of(node.outputs[0].name)
    if keep_out is not None:
        weight = np.take(weight, keep_out, axis=out_axis)
        bias = bias[keep_out] if bias is not None else None
        if group > 1 and not by_position:
            node.attrs["group"] = group * len(keep_out) // size
    ed.set_value(node, 1, weight)
    if bias is not None and (original_bias is None or not _same(bias, original_bias)):  # untouched: as it was
        ed.set_value(node, bias_index, bias)


def _folded_constant(ed: _Editor, node: gs.Node, weight: np.ndarray, in_axis: int, removed: np.ndarray,
                     group: int = 1) -> np.ndarray | None:
    """What the removed input channels contributed as constants, per output channel (None when all zero).

    ``removed`` marks input positions (within each group for a grouped conv, the same in every group).
    """
    track = ed.track(node.inputs[0].name)
    value = Track(track.elems, track.value, track.axis).value_along_axis()
    value = np.where(np.tile(removed, group), value, 0).astype(np.float64)
    if not np.any(value):
        return None
    if node.op == "Conv":
        per_channel = weight.reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2).astype(np.float64)
        per_group = value.reshape(group, -1)[np.arange(weight.shape[0]) // (weight.shape[0] // group)]
        return np.sum(per_channel * per_group, axis=1)
    return np.moveaxis(weight, in_axis, -1).astype(np.float64) @ value


def _edit_elementwise(ed: _Editor, node: gs.Node) -> None:
    """Slice each constant operand along the channel axis; zero entries of partially dropped channels."""
    out = node.outputs[0].name
    track = ed.track(out)
    keep = ed.keep_of(out)
    rank = track.elems.ndim
    full = track.elems.shape[track.axis]
    zero = ed.zero.get(node.name)
    for i in range(len(node.inputs)):
        array = ed.value(node, i)
        if array is None or array.dtype.kind != "f":
            continue
        if node.op == "BatchNormalization":
            axis = 0 if i > 0 else None
        else:
            axis = track.axis - (rank - array.ndim)
            axis = axis if 0 <= axis < array.ndim and array.shape[axis] == full and full > 1 else None
        if axis is None:
            continue
        edited = array
        if zero is not None and (node.op in ("Add", "Sub") or (node.op == "BatchNormalization" and i in (2, 3))):
            edited = array.copy()
            np.moveaxis(edited, axis, 0)[zero] = 0
        if node.name in ed.pending_bias:
            edited = edited + np.reshape(ed.pending_bias[node.name], [-1 if a == axis else 1
                                                                    for a in range(array.ndim)]).astype(array.dtype)
        if keep is not None:
            edited = np.take(edited, keep, axis=axis)
        if edited is not array:
            ed.set_value(node, i, edited)


def _edit_reshape(ed: _Editor, node: gs.Node) -> None:
    out = node.outputs[0].name
    keep = ed.keep_of(out)
    if keep is None or node.op == "Flatten":
        return
    axis = ed.track(out).axis
    shape_tensor = node.inputs[1]
    if isinstance(shape_tensor, gs.Constant):
        shape = np.array(shape_tensor.values)
        if shape[axis] != -1:
            shape[axis] = len(keep)
            ed.set_value(node, 1, shape)
        return
    concat = shape_tensor.inputs[0]
    offset = 0
    for i, piece in enumerate(concat.inputs):
        length = int(piece.shape[0])
        if offset <= axis < offset + length:
            values = np.array(piece.values)
            if values[axis - offset] != -1:
                values[axis - offset] = len(keep)
                ed.set_value(concat, i, values)
            return
        offset += length


def _edit_split(ed: _Editor, node: gs.Node) -> None:
    track = ed.track(node.inputs[0].name)
    if ed.keep_of(node.inputs[0].name) is None:
        return
    axis = int(node.attrs.get("axis", 0)) % track.elems.ndim
    if axis != track.axis:
        return
    sizes = [int(np.sum(~ed.removed_of(out.name))) for out in node.outputs]
    if "split" in node.attrs:
        node.attrs["split"] = sizes
    else:
        node.attrs.pop("num_outputs", None)
        ed.set_value(node, 1, np.array(sizes, np.int64))


def _edit_slice(ed: _Editor, node: gs.Node) -> None:
    name = node.inputs[0].name
    track = ed.track(name)
    if ed.keep_of(name) is None:
        return
    removed = ed.removed_of(name)
    starts, ends = ed.value(node, 1), ed.value(node, 2)
    axes = ed.value(node, 3) if len(node.inputs) > 3 else np.arange(len(starts))
    position = [i for i, a in enumerate(axes.tolist()) if int(a) % track.elems.ndim == track.axis]
    if not position:
        return
    i = position[0]
    picked = np.arange(len(removed))[slice(int(starts[i]), int(ends[i]))]
    before = int(np.sum(~removed[: picked[0]])) if len(picked) else 0
    starts, ends = starts.copy(), ends.copy()
    starts[i], ends[i] = before, before + int(np.sum(~removed[picked]))
    ed.set_value(node, 1, starts)
    ed.set_value(node, 2, ends)


def _edit_resize(ed: _Editor, node: gs.Node) -> None:
    out = node.outputs[0].name
    keep = ed.keep_of(out)
    sizes = ed.value(node, 3) if len(node.inputs) > 3 else None
    if keep is not None and sizes is not None and sizes.size:
        sizes = sizes.copy()
        sizes[ed.track(out).axis] = len(keep)
        ed.set_value(node, 3, sizes)


EDITS: dict[str, Callable[[_Editor, gs.Node], None]] = {
    **{op: _edit_elementwise for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "Where",
                                        "PRelu", "Clip", "BatchNormalization")},
    "Reshape": _edit_reshape,
    "Split": _edit_split,
    "Slice": _edit_slice,
    "Resize": _edit_resize,
}
