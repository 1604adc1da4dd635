"""The state of the channel dependency analysis: element classes, per-tensor tracks and the walk over the graph.

Every output channel of every neuron layer is an *element*. Walking the graph in topological order,
each tensor that carries channels gets a :class:`Track`: an array of element ids that broadcasts to
the tensor (size 1 on the axes that do not carry channels), the axis along which channels would be
removed, and the value each position takes when its channel is removed (``NaN``: not a known
constant). Ops that combine tensors element-wise unite the elements they line up (a union-find), so
one *class* of elements is removed together or not at all. What each op does to the tracks it reads is
its family's rule (:mod:`onnxslice.surgery.ops`); anything without a rule keeps the channels it reads and
says why.

Removal semantics (the oracle is :func:`onnxslice.surgery.mask.mask_model`): a class can be removed
when every layer channel in it is dropped by the slice, nothing in it is kept for a static reason, and
every consumer reads either zero there or a constant it can fold into its bias. *Followers* (an attention
head's Q and K channels, :mod:`onnxslice.surgery.ops.attention`) do not decide: once the rest of their class
is dropped they no longer change the output, so they go with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxslice.graph import LayerScan, constant_values, consumers_of, find_neuron_layers
from onnxslice.graph_utils import tensor_shapes

if TYPE_CHECKING:
    from onnxslice.surgery.ops.attention import Attention
    from onnxslice.surgery.ops.base import OpFamily


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
    followers: np.ndarray  #: per element: it goes with its class whether the slice keeps it or not (a head's Q, K)
    attention: list[Attention]  #: recognised multi-head attentions (their head counts are edited)

    def removed(self, kept: Mapping[str, Sequence[int]]) -> np.ndarray:
        """Boolean per element: its class is removed under the slice ``kept`` (layers not named keep all).

        Followers do not decide; one head of every attention stays (a Reshape reads a head count of 0 as "copy").
        """
        drop_root = np.zeros(len(self.roots), dtype=bool)
        keep_root = np.zeros(len(self.roots), dtype=bool)
        for name, elems in self.layer_elems.items():
            dropped = np.ones(len(elems), dtype=bool)
            if name in kept:
                dropped[list(kept[name])] = False
            else:
                dropped[:] = False
            deciding = ~self.followers[elems]
            drop_root[self.roots[elems[dropped & deciding]]] = True
            keep_root[self.roots[elems[~dropped & deciding]]] = True
        for root in self.kept_reason:
            keep_root[root] = True
        removed = drop_root & ~keep_root
        for attention in self.attention:
            heads = self.roots[attention.values[:, 0]]
            if removed[heads].all():
                removed[heads[0]] = False
        return removed[self.roots]

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


class Analysis:
    """One walk over a canonical model: each node's family rule updates the tracks and the element classes."""

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
        self.followers: set[int] = set()
        self.attention: list[Attention] = []

    def run(self, layer_family: OpFamily, family_of: Callable[[str], OpFamily]) -> ChannelGroups:
        """Apply ``layer_family``'s rule to the neuron layers, ``family_of(op type)``'s to other nodes that read a
        track."""
        for node in self.model.graph.node:
            if node.name in self.layers:
                layer_family.rule(self, node)
            elif any(name in self.tracks for name in node.input):
                self.apply(family_of(node.op_type), node)
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
        followers = np.zeros(len(roots), dtype=bool)
        followers[list(self.followers)] = True
        return ChannelGroups(self.model, self.scan, self.tracks, roots, self.layer_elems, kept_reason,
                             self.by_position, followers, self.attention)

    def apply(self, family: OpFamily, node: onnx.NodeProto) -> None:
        """Run a family's rule; a pattern it trips over keeps the channels it reads rather than guessing."""
        try:
            family.rule(self, node)
        except (ValueError, IndexError, TypeError, KeyError) as exc:
            for out in node.output:
                self.tracks.pop(out, None)
            self.not_understood(node, f"{node.op_type} node {node.name!r}: pattern not handled ({exc})")

    # -- helpers used by the rules -------------------------------------------------------------------
    def not_understood(self, node: onnx.NodeProto, reason: str | None = None) -> None:
        """Keep every channel ``node`` reads, for ``reason``."""
        reason = reason or f"{node.op_type} node {node.name!r} is not understood"
        for name in node.input:
            if name in self.tracks:
                self.keep(self.tracks[name].elems, reason)

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


def expand_rank(array: np.ndarray, rank: int) -> np.ndarray:
    """``array`` with leading axes of size 1 up to ``rank`` (how ONNX broadcasts it)."""
    return array.reshape((1,) * (rank - array.ndim) + array.shape) if array.ndim < rank else array


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Tensor shapes: an int per static axis, the symbol (e.g. 'batch') or None per dynamic one."""
    shapes = tensor_shapes(model.graph)
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _decided_by(roots: np.ndarray, axis: int) -> bool:
    moved = np.moveaxis(roots, axis, 0).reshape(roots.shape[axis], -1)
    return bool(np.all(moved == moved[:, :1]))
