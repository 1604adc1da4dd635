"""Channel dependency groups of an ONNX graph, computed once as data.

Every output channel of every neuron layer is an *element*. Walking the graph in topological order,
each tensor that carries channels gets a :class:`Track`: an array of element ids that broadcasts to
the tensor (size 1 on the axes that do not carry channels), the axis along which channels would be
removed, and the value each position takes when its channel is removed (``NaN``: not a known
constant). Ops that combine tensors element-wise unite the elements they line up (a union-find), so
one *class* of elements is removed together or not at all. One small rule per op family, all in
:data:`RULES`; anything else that reads a tracked tensor keeps its channels and says why.

Removal semantics (the oracle is :func:`onnxslice.surgery.mask.mask_model`): a class can be removed
when every layer channel in it is dropped by the slice, nothing in it is kept for a static reason, and
every consumer reads either zero there or a constant it can fold into its bias.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from onnxslice.graph import LayerScan, NeuronLayer, constant_values, consumers_of, find_neuron_layers
from onnxslice.graph_utils import attribute, tensor_shapes

#: Element-wise ops whose value at a removed channel can be computed from constants (onnx.reference).
UNARY = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
    "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Erf", "Neg", "Abs", "Exp", "Sqrt", "Reciprocal",
    "BatchNormalization",
}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "Mean", "Where"}
#: Ops that keep each channel apart and turn a constant channel into the same constant.
SPATIAL = {"GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool", "Pad", "Resize",
           "ReduceMean", "ReduceMax", "ReduceMin"}
#: Activations with f(0) = 0: a zeroed channel stays zero through them.
ZERO_PRESERVING = {"Relu", "LeakyRelu", "PRelu", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Mish", "HardSwish",
                   "Softsign", "ThresholdedRelu"}
ACROSS_CHANNELS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "LogSoftmax",
                   "LpNormalization", "LRN"}


class UnionFind:
    """Elements 0..n-1 and the classes they are united into."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unite a[i] with b[i] for every position (a and b broadcast together)."""
        a, b = np.broadcast_arrays(a, b)
        for x, y in set(zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass
class Track:
    """The channels a tensor carries (see the module docstring)."""

    elems: np.ndarray  #: element ids, broadcastable to the tensor, same rank
    value: np.ndarray  #: float32 value at a removed channel, NaN where not a known constant; broadcasts with elems
    axis: int  #: the axis along which channels are removed

    def along_axis(self) -> np.ndarray:
        """``elems`` along the removal axis (index 0 on every other axis: the class is the same there)."""
        return self.elems[tuple(slice(None) if a == self.axis else 0 for a in range(self.elems.ndim))]

    def value_along_axis(self) -> np.ndarray:
        """The value per channel where it is the same at every other position, else NaN."""
        value = np.broadcast_to(self.value, np.broadcast_shapes(self.value.shape, self.elems.shape))
        moved = np.moveaxis(value, self.axis, 0).reshape(value.shape[self.axis], -1)
        same = np.all(moved == moved[:, :1], axis=1)
        return np.where(same, moved[:, 0], np.nan).astype(np.float32)


@dataclass
class ChannelGroups:
    """The result of the analysis: element classes, per-tensor tracks and why classes are kept."""

    model: onnx.ModelProto
    scan: LayerScan
    tracks: dict[str, Track]
    roots: np.ndarray  #: class (root element) of every element
    layer_elems: dict[str, np.ndarray]  #: layer name -> element id of each output channel
    kept_reason: dict[int, str]  #: root -> why the class can never be removed
    by_position: set[str]  #: grouped convs that lose the same positions in every group (not whole groups)

    def removed(self, kept: Mapping[str, Sequence[int]]) -> np.ndarray:
        """Boolean per element: its class is removed under the slice ``kept`` (layers not named keep all)."""
        drop_root = np.zeros(len(self.roots), dtype=bool)
        keep_root = np.zeros(len(self.roots), dtype=bool)
        for name, elems in self.layer_elems.items():
            dropped = np.ones(len(elems), dtype=bool)
            if name in kept:
                dropped[list(kept[name])] = False
            else:
                dropped[:] = False
            drop_root[self.roots[elems[dropped]]] = True
            keep_root[self.roots[elems[~dropped]]] = True
        for root in self.kept_reason:
            keep_root[root] = True
        return (drop_root & ~keep_root)[self.roots]

    def groups(self) -> list[dict]:
        """Layers coupled through shared classes, with the classes kept for a static reason."""
        layer_uf, layer_names = UnionFind(), list(self.layer_elems)
        layer_ids = dict(zip(layer_names, layer_uf.make(len(layer_names)).tolist(), strict=True))
        first_layer: dict[int, int] = {}
        for name, elems in self.layer_elems.items():
            for root in set(self.roots[elems].tolist()):
                if root in first_layer:
                    layer_uf.unite(np.array([first_layer[root]]), np.array([layer_ids[name]]))
                else:
                    first_layer[root] = layer_ids[name]
        members: dict[int, list[str]] = defaultdict(list)
        for name in layer_names:
            members[layer_uf.find(layer_ids[name])].append(name)
        result = []
        for names in members.values():
            roots = {r for name in names for r in self.roots[self.layer_elems[name]].tolist()}
            reasons: dict[str, int] = defaultdict(int)
            for root in roots:
                if root in self.kept_reason:
                    reasons[self.kept_reason[root]] += 1
            result.append({"layers": names, "channels": len(roots), "kept": dict(reasons)})
        return result


def channel_groups(model: onnx.ModelProto) -> ChannelGroups:
    """Analyse a canonical model (see :func:`onnxslice.graph.load_model`) once."""
    return _Analysis(model).run()


class _Analysis:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.scan = find_neuron_layers(model)
        self.layers = self.scan.by_name()
        self.mask_points = {layer.output: layer for layer in self.scan.layers}
        self.nodes = {node.name: node for node in model.graph.node}
        self.consts = constant_values(model)
        self.shapes = _shapes(model)
        self.users = consumers_of(model)
        self.uf = UnionFind()
        self.tracks: dict[str, Track] = {}
        self.reasons: dict[int, str] = {}
        self.layer_elems: dict[str, np.ndarray] = {}
        self.by_position: set[str] = set()

    def run(self) -> ChannelGroups:
        for node in self.model.graph.node:
            if node.name in self.layers:
                _layer_rule(self, node)
            elif any(name in self.tracks for name in node.input):
                self.apply(RULES.get(node.op_type, _not_understood), node)
            for out in node.output:
                if out in self.mask_points and out in self.tracks:
                    track = self.tracks[out]
                    track.value = np.zeros_like(track.elems, dtype=np.float32)
        for out in self.model.graph.output:
            if out.name in self.tracks:
                self.keep(self.tracks[out.name].elems, f"reaches the graph output {out.name!r}")
        roots = self.uf.roots()
        kept_reason: dict[int, str] = {}
        for elem, reason in self.reasons.items():
            kept_reason.setdefault(int(roots[elem]), reason)
        return ChannelGroups(self.model, self.scan, self.tracks, roots, self.layer_elems, kept_reason,
                             self.by_position)

    def apply(self, rule: Callable[[_Analysis, onnx.NodeProto], None], node: onnx.NodeProto) -> None:
        """Run a rule; a pattern it trips over keeps the channels it reads rather than guessing."""
        try:
            rule(self, node)
        except (ValueError, IndexError, TypeError, KeyError) as exc:
            for out in node.output:
                self.tracks.pop(out, None)
            _not_understood(self, node, f"{node.op_type} node {node.name!r}: pattern not handled ({exc})")

    # -- helpers used by the rules -------------------------------------------------------------------
    def keep(self, elems: np.ndarray, reason: str) -> None:
        for elem in np.unique(elems).tolist():
            self.reasons.setdefault(elem, reason)

    def opaque(self, count: int, reason: str) -> np.ndarray:
        elems = self.uf.make(count)
        self.keep(elems, reason)
        return elems

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def set_track(self, name: str, elems: np.ndarray, value: np.ndarray, preferred_axis: int) -> None:
        """Record a tensor's track; where channels vary along several axes, settle on one removal axis."""
        varying = [a for a in range(elems.ndim) if elems.shape[a] > 1]
        if len(varying) <= 1:
            axis = varying[0] if varying else preferred_axis
        else:
            roots = np.vectorize(self.uf.find, otypes=[np.int64])(elems)
            deciding = [a for a in varying if _decided_by(roots, a)]
            axis = deciding[0] if deciding else max(varying, key=lambda a: elems.shape[a])
            if not deciding:
                self.unite_along(elems, axis)
        self.tracks[name] = Track(np.ascontiguousarray(elems), value.astype(np.float32), axis)

    def unite_along(self, elems: np.ndarray, axis: int) -> None:
        """Unite all positions that share an index along ``axis``."""
        moved = np.moveaxis(elems, axis, 0).reshape(elems.shape[axis], -1)
        self.uf.unite(moved[:, :1], moved)

    def collapse(self, track: Track, axis: int) -> np.ndarray:
        """The elements along ``axis`` (which a consumer contracts), uniting them along every other axis."""
        if track.axis != axis and track.elems.shape[track.axis] > 1:
            self.keep(track.elems, "channels do not lie along the axis the consumer reads")
        self.unite_along(track.elems, axis)
        return np.moveaxis(track.elems, axis, 0).reshape(track.elems.shape[axis], -1)[:, 0]

    def const_input(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if index < len(node.input) and node.input[index] in self.consts:
            return self.consts[node.input[index]]
        return None

    def full_shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape with the batch axis as 1, when every other axis is static."""
        shape = self.shapes.get(name)
        if shape is None or not shape or any(not isinstance(d, int) for d in shape[1:]):
            return None
        return (1, *shape[1:])


# -- rules: one per op family ---------------------------------------------------------------------------

def _not_understood(an: _Analysis, node: onnx.NodeProto, reason: str | None = None) -> None:
    reason = reason or (f"{node.op_type} node {node.name!r} normalises across channels"
                        if node.op_type in ACROSS_CHANNELS else f"{node.op_type} node {node.name!r} is not understood")
    for name in node.input:
        if name in an.tracks:
            an.keep(an.tracks[name].elems, reason)


def _layer_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """A neuron layer: its input channels are consumed (removed as weight columns), its outputs are new."""
    layer: NeuronLayer = an.layers[node.name]
    out = node.output[0]
    rank = an.rank(out) or (2 if layer.channel_axis == -1 else an.consts[layer.weight].ndim)
    elems = an.uf.make(layer.size)
    an.layer_elems[layer.name] = elems
    if layer.is_output:
        an.keep(elems, "classifier output (its channels are the categories)")
    axis = 1 if layer.op_type == "Conv" else rank - 1
    shape = [1] * rank
    shape[axis] = layer.size
    group = int(attribute(node, "group", 1)) if layer.op_type == "Conv" else 1
    inp = node.input[0]
    if inp in an.tracks:
        _consume(an, node, layer, an.tracks[inp], elems, group)
    elif group > 1:
        an.keep(elems, f"grouped convolution {node.name!r} reads channels that cannot be removed")
    an.tracks[out] = Track(elems.reshape(shape), np.full(shape, np.nan, np.float32), axis)


def _consume(an: _Analysis, node: onnx.NodeProto, layer: NeuronLayer, track: Track, out_elems: np.ndarray,
             group: int) -> None:
    rank = track.elems.ndim
    if layer.op_type == "Gemm" and attribute(node, "transA", 0):
        an.keep(track.elems, f"Gemm {node.name!r} reads its input transposed")
        return
    axis = 1 if layer.op_type == "Conv" else rank - 1
    elems = an.collapse(track, axis)
    if group > 1:
        per_in, per_out = len(elems) // group, layer.size // group
        if per_in == 1 or per_in + per_out <= group:
            # whole groups go: a group's inputs and outputs form one class (depthwise: channel i in and out)
            for g in range(group):
                an.uf.unite(np.array([out_elems[g * per_out]]), np.concatenate(
                    [elems[g * per_in:(g + 1) * per_in], out_elems[g * per_out:(g + 1) * per_out]]))
            return
        # few groups of many channels: position j of every group goes together, so the groups stay equal
        an.by_position.add(node.name)
        an.unite_along(elems.reshape(group, per_in), 1)
        an.unite_along(out_elems.reshape(group, per_out), 1)
    value = Track(track.elems, track.value, axis).value_along_axis()
    nonzero = value != 0
    unknown = np.isnan(value)
    an.keep(elems[unknown], f"the value a removed channel leaves at the input of {node.name!r} is not a constant")
    if not np.any(nonzero & ~unknown):
        return
    why_not = _why_not_foldable(an, node, layer)
    if why_not:
        an.keep(elems[nonzero & ~unknown], f"a removed channel leaves a non-zero constant at the input of "
                                           f"{node.name!r}, which cannot be folded ({why_not})")


def _why_not_foldable(an: _Analysis, node: onnx.NodeProto, layer: NeuronLayer) -> str | None:
    if layer.op_type == "Conv":
        pads = attribute(node, "pads", None)
        if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID") or (
                pads is not None and any(pads)):
            return "padding"
        return None
    if layer.op_type == "Gemm":
        bias = an.const_input(node, 2)
        if len(node.input) > 2 and node.input[2] and (bias is None or bias.size not in (1, layer.size)):
            return "its bias is not a per-output vector"
        return None
    add = an.nodes[layer.tail[0]] if layer.tail else None
    if add is None or add.op_type != "Add":
        return "MatMul without a bias Add"
    bias = next((an.consts[n] for n in add.input if n in an.consts), None)
    return None if bias is not None and bias.size == layer.size else "MatMul without a per-output bias"


def _elementwise_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Activations, BatchNormalization and element-wise arithmetic: line channels up, unite them."""
    out = node.output[0]
    rank = an.rank(out)
    tracked = [(i, an.tracks[name]) for i, name in enumerate(node.input) if name in an.tracks]
    if rank is None:
        return _not_understood(an, node)
    if node.op_type == "BatchNormalization" and tracked[0][1].axis != 1:
        return _not_understood(an, node)
    aligned = [_expand_rank(track.elems, rank) for _, track in tracked]
    broadcast = np.broadcast_arrays(*aligned)
    for other in broadcast[1:]:
        an.uf.unite(broadcast[0], other)
    axis = tracked[0][1].axis + rank - tracked[0][1].elems.ndim
    elems = np.array(broadcast[0])
    computable = True
    for name in node.input:
        if not name or name in an.tracks or name in an.consts:
            continue
        computable = False
        shape = an.shapes.get(name)
        if shape is None or _dim(shape, axis, rank) not in (1,):
            an.keep(elems, f"{node.op_type} node {node.name!r} combines the channels with {name!r}, "
                           "whose channels are not tracked")
    value = _evaluate(an, node, rank) if computable else np.full(elems.shape, np.nan, np.float32)
    value = np.where(np.isfinite(value), value, np.nan)  # never fold an infinity (e.g. a division by zero)
    if node.op_type in ("Mul", "Div"):
        zero_inputs = tracked if node.op_type == "Mul" else [t for t in tracked if t[0] == 0]
        for _, track in zero_inputs:
            zero = _expand_rank(track.value, rank) == 0
            value = np.where(zero, np.float32(0), value)
    an.set_track(out, elems, np.asarray(value, np.float32), axis)


def _evaluate(an: _Analysis, node: onnx.NodeProto, rank: int) -> np.ndarray:
    """The op applied to the values at removed channels and its constant operands (onnx.reference)."""
    feeds, inputs = {}, []
    for i, name in enumerate(node.input):
        key = f"in{i}"
        inputs.append(key if name else "")
        if not name:
            continue
        if name in an.tracks:
            feeds[key] = _expand_rank(an.tracks[name].value, rank).astype(np.float32)
        else:
            feeds[key] = an.consts[name]
    one = onnx.helper.make_node(node.op_type, inputs, ["out"], domain=node.domain)
    one.attribute.extend(node.attribute)
    graph = onnx.helper.make_graph(
        [one], "value", [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
                         for k, v in feeds.items()],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED, None)])
    model = onnx.helper.make_model(graph, opset_imports=list(an.model.opset_import))
    with np.errstate(all="ignore"):
        return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0], np.float32)


def _spatial_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Pooling, padding, resizing, reductions over other axes: channels pass through unchanged."""
    track = an.tracks[node.input[0]]
    if len(node.output) > 1 and any(node.output[1:]) and any(an.users.get(o) for o in node.output[1:]):
        return _not_understood(an, node)
    rank_in, rank_out = track.elems.ndim, an.rank(node.output[0])
    value = track.value
    spatial = [a for a in range(2, rank_in)]
    if node.op_type.startswith("Reduce"):
        axes = attribute(node, "axes", None)
        if axes is None:
            axes = an.const_input(node, 1)
        if axes is None:
            return _not_understood(an, node)
        axes = sorted(int(a) % rank_in for a in np.atleast_1d(axes))
        if track.axis in axes or track.elems.shape[track.axis] > 1 and any(track.elems.shape[a] > 1 for a in axes):
            return _not_understood(an, node)
        spatial = axes
    elif track.axis != 1:
        return _not_understood(an, node)
    if node.op_type == "Pad":
        pads = an.const_input(node, 1)
        mode = attribute(node, "mode", b"constant")
        if pads is None or pads[track.axis] or pads[track.axis + rank_in]:
            return _not_understood(an, node)
        if mode in (b"constant", "constant"):
            value = np.where(value == 0, value, np.nan)
    if node.op_type == "Resize" and len(node.input) > 3 and node.input[3] and an.const_input(node, 3) is None:
        return _not_understood(an, node)
    if node.op_type == "AveragePool" and attribute(node, "count_include_pad", 0):
        value = np.where(value == 0, value, np.nan)
    # a constant channel stays that constant; one that varies over space becomes unknown
    value = _expand_rank(value, rank_in)
    if any(value.shape[a] > 1 for a in spatial):
        value = np.full(value.shape, np.nan, np.float32)
    value = value[tuple(slice(0, 1) if a in spatial else slice(None) for a in range(value.ndim))]
    elems = track.elems
    if rank_out is not None and rank_out < rank_in:  # keepdims=0
        keep_axes = [a for a in range(rank_in) if a not in spatial]
        elems = elems.reshape([elems.shape[a] for a in keep_axes])
        value = value.reshape([value.shape[a] for a in keep_axes])
        axis = keep_axes.index(track.axis)
    else:
        axis = track.axis
    an.set_track(node.output[0], elems, value, axis)


def _shape_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Shape of a tracked tensor: fine while only the batch size is read from it."""
    for user in an.users.get(node.output[0], []):
        index = an.const_input(user, 1)
        if not (user.op_type == "Gather" and index is not None and np.all(np.atleast_1d(index) == 0)):
            return _not_understood(an, node)
    if attribute(node, "start", 0) not in (0, None):
        return _not_understood(an, node)


def _transpose_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    track = an.tracks[node.input[0]]
    perm = attribute(node, "perm", None) or list(reversed(range(track.elems.ndim)))
    value = _expand_rank(track.value, track.elems.ndim)
    an.set_track(node.output[0], track.elems.transpose(perm), value.transpose(perm), list(perm).index(track.axis))


def _reshape_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Flatten / Reshape with static non-batch axes: a channel becomes a block (or a grid) of positions."""
    track = an.tracks[node.input[0]]
    shape_in, shape_out = an.full_shape(node.input[0]), an.full_shape(node.output[0])
    real_in, real_out = an.shapes.get(node.input[0]), an.shapes.get(node.output[0])
    batch_first = _batch_first_target(an, node, shape_in) if node.op_type == "Reshape" else None
    if batch_first is not None:
        shape_out = batch_first
    elif shape_in is None or shape_out is None or real_in[0] is None or real_in[0] != real_out[0]:
        return _not_understood(an, node)
    if node.op_type == "Flatten" and attribute(node, "axis", 1) != 1:
        return _not_understood(an, node)
    elems = np.broadcast_to(track.elems, shape_in).reshape(shape_out)
    value = np.broadcast_to(track.value, np.broadcast_shapes(track.value.shape, shape_in)).reshape(shape_out)
    elems, value = _compress(elems), _compress(value)
    if elems.size == 1:
        return _not_understood(an, node)
    if node.op_type == "Reshape":
        an.set_track(node.output[0], elems, value, 1)
        axis = an.tracks[node.output[0]].axis
        if _shape_piece(an, node.input[1], axis) is None:
            del an.tracks[node.output[0]]
            an.keep(track.elems, f"Reshape {node.name!r} takes its channel count from a computed shape")
        return
    an.set_track(node.output[0], elems, value, 1)


def _batch_first_target(an: _Analysis, node: onnx.NodeProto, shape_in: tuple[int, ...] | None
                        ) -> tuple[int, ...] | None:
    """The output shape (batch as 1) of a Reshape to a constant ``(-1, d1, d2, ...)`` of the input's per-sample size:
    the -1 is the batch. PyTorch's dynamo exporter writes ``view(-1, C)`` so, and shape inference cannot tell that
    -1 is the batch (it names the axis anew), so this is read from the constant."""
    target = an.consts.get(node.input[1])
    if shape_in is None or target is None or target.ndim != 1 or len(target) < 2 or target[0] != -1:
        return None
    rest = [int(d) for d in target[1:]]
    return (1, *rest) if min(rest) > 0 and math.prod(rest) == math.prod(shape_in[1:]) else None


def _shape_piece(an: _Analysis, shape_name: str, axis: int) -> tuple[str, int] | None:
    """The constant (name, index) that fixes output axis ``axis`` of a Reshape, if there is one."""
    if shape_name in an.consts:
        return (shape_name, axis) if an.consts[shape_name][axis] > 0 or an.consts[shape_name][axis] == -1 else None
    producer = next((n for n in an.model.graph.node if shape_name in n.output), None)
    if producer is None or producer.op_type != "Concat":
        return None
    offset = 0
    for piece in producer.input:
        shape = an.shapes.get(piece)
        if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return None
        if offset <= axis < offset + shape[0]:
            if piece in an.consts and (an.consts[piece][axis - offset] > 0 or an.consts[piece][axis - offset] == -1):
                return piece, axis - offset
            return None
        offset += shape[0]
    return None


def _squeeze_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    track = an.tracks[node.input[0]]
    axes = attribute(node, "axes", None)
    if axes is None:
        axes = an.const_input(node, 1)
    rank_out = an.rank(node.output[0])
    if axes is None or rank_out is None:
        return _not_understood(an, node)
    value = _expand_rank(track.value, track.elems.ndim)
    if node.op_type == "Squeeze":
        axes = sorted(int(a) % track.elems.ndim for a in np.atleast_1d(axes))
        if track.axis in axes:
            return _not_understood(an, node)
        axis = track.axis - sum(a < track.axis for a in axes)
        an.set_track(node.output[0], np.squeeze(track.elems, tuple(axes)),
                     np.squeeze(value, tuple(axes)), axis)
    else:
        axes = sorted(int(a) % rank_out for a in np.atleast_1d(axes))
        elems, value, axis = track.elems, value, track.axis
        for a in axes:
            elems, value = np.expand_dims(elems, a), np.expand_dims(value, a)
            axis += a <= axis
        an.set_track(node.output[0], elems, value, axis)


def _concat_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Concat: along the channel axis channels follow one another; along another axis they are united."""
    rank = an.rank(node.output[0])
    if rank is None:
        return _not_understood(an, node)
    axis = int(attribute(node, "axis")) % rank
    parts_e, parts_v, common = [], [], [1] * rank
    for name in node.input:
        if name in an.tracks:
            for a, d in enumerate(an.tracks[name].elems.shape):
                if a != axis and d > 1:
                    common[a] = d
    channel_axis = next(an.tracks[n].axis for n in node.input if n in an.tracks)
    for name in node.input:
        shape = an.shapes.get(name)
        if shape is None or not isinstance(shape[axis], int):
            return _not_understood(an, node)
        target = list(common)
        target[axis] = shape[axis]
        if name in an.tracks:
            track = an.tracks[name]
            parts_e.append(np.broadcast_to(track.elems, target))
            parts_v.append(np.broadcast_to(_expand_rank(track.value, rank), target) if all(
                v in (1, t) for v, t in zip(_expand_rank(track.value, rank).shape, target, strict=True))
                else np.full(target, np.nan, np.float32))
        else:
            reason = f"Concat {node.name!r} joins the channels with {name!r}, whose channels are not tracked"
            parts_e.append(an.opaque(int(np.prod(target)), reason).reshape(target))
            parts_v.append(np.full(target, np.nan, np.float32))
    an.set_track(node.output[0], np.concatenate(parts_e, axis), np.concatenate(parts_v, axis), channel_axis)


def _split_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    track = an.tracks[node.input[0]]
    rank = track.elems.ndim
    axis = int(attribute(node, "axis", 0)) % rank
    sizes = an.const_input(node, 1)
    if sizes is None:
        sizes = attribute(node, "split", None)
    shape = an.shapes.get(node.input[0])
    if sizes is None and shape is not None and isinstance(shape[axis], int):
        sizes = [shape[axis] // len(node.output)] * len(node.output)
    if sizes is None or (len(node.input) > 1 and node.input[1] and an.const_input(node, 1) is None):
        return _not_understood(an, node)
    value = _expand_rank(track.value, rank)
    start = 0
    for out, size in zip(node.output, np.atleast_1d(sizes).tolist(), strict=True):
        part = slice(start, start + size)
        pick = tuple(part if a == axis else slice(None) for a in range(rank))
        elems = track.elems[pick] if track.elems.shape[axis] > 1 else track.elems
        val = value[pick] if value.shape[axis] > 1 else value
        an.set_track(out, elems, val, track.axis)
        start += size


def _slice_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    track = an.tracks[node.input[0]]
    rank = track.elems.ndim
    starts, ends = an.const_input(node, 1), an.const_input(node, 2)
    if starts is None or ends is None:
        return _not_understood(an, node)
    axes = an.const_input(node, 3) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = an.const_input(node, 4) if len(node.input) > 4 and node.input[4] else None
    if axes is None or (len(node.input) > 4 and node.input[4] and steps is None):
        return _not_understood(an, node)
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    elems, value = track.elems, _expand_rank(track.value, rank)
    for start, end, a, step in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist(), strict=True):
        a = int(a) % rank
        if elems.shape[a] == 1:
            continue
        if step != 1:
            return _not_understood(an, node)
        pick = tuple(slice(start, end) if b == a else slice(None) for b in range(rank))
        elems = elems[pick]
        value = value[pick] if value.shape[a] > 1 else value
    an.set_track(node.output[0], elems, value, track.axis)


def _gather_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Gather of one position along an axis that carries no channels (e.g. a class token)."""
    track = an.tracks[node.input[0]]
    index = an.const_input(node, 1)
    rank = track.elems.ndim
    axis = int(attribute(node, "axis", 0)) % rank
    if index is None or index.ndim != 0 or axis == track.axis or \
            track.elems.shape[axis] > 1:
        return _not_understood(an, node)
    value = _expand_rank(track.value, rank)
    value = np.take(value, int(index) if value.shape[axis] > 1 else 0, axis=axis)
    an.set_track(node.output[0], np.take(track.elems, 0, axis=axis), value, track.axis - (axis < track.axis))


def _pass_rule(an: _Analysis, node: onnx.NodeProto) -> None:
    """Ops that leave values as they are (Dropout at inference, Cast between float types)."""
    if node.op_type == "Cast" and attribute(node, "to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return _not_understood(an, node)
    track = an.tracks[node.input[0]]
    an.tracks[node.output[0]] = Track(track.elems, track.value.copy(), track.axis)


RULES: dict[str, Callable[[_Analysis, onnx.NodeProto], None]] = {
    **{op: _elementwise_rule for op in UNARY | BINARY},
    **{op: _spatial_rule for op in SPATIAL},
    "Shape": _shape_rule,
    "Transpose": _transpose_rule,
    "Flatten": _reshape_rule,
    "Reshape": _reshape_rule,
    "Squeeze": _squeeze_rule,
    "Unsqueeze": _squeeze_rule,
    "Concat": _concat_rule,
    "Split": _split_rule,
    "Slice": _slice_rule,
    "Gather": _gather_rule,
    "Dropout": _pass_rule,
    "Cast": _pass_rule,
}


# -- small array helpers -------------------------------------------------------------------------------

def _expand_rank(array: np.ndarray, rank: int) -> np.ndarray:
    return array.reshape((1,) * (rank - array.ndim) + array.shape) if array.ndim < rank else array


def _dim(shape: list[int | str | None], axis: int, rank: int) -> int | str | None:
    position = axis - (rank - len(shape))
    return 1 if position < 0 else shape[position]


def _decided_by(roots: np.ndarray, axis: int) -> bool:
    moved = np.moveaxis(roots, axis, 0).reshape(roots.shape[axis], -1)
    return bool(np.all(moved == moved[:, :1]))


def _compress(array: np.ndarray) -> np.ndarray:
    """Shrink to size 1 every axis along which the array does not vary (NaN equal to NaN)."""
    for axis in range(array.ndim):
        if array.shape[axis] > 1:
            first = np.take(array, [0], axis=axis)
            same = (array == first) | (np.isnan(array) & np.isnan(first)) if array.dtype.kind == "f" else \
                array == first
            if np.all(same):
                array = first
    return np.ascontiguousarray(array)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Tensor shapes: an int per static axis, the symbol (e.g. 'batch') or None per dynamic one."""
    shapes = tensor_shapes(model.graph)
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes
