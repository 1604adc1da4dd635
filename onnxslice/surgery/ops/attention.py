"""Multi-head attention between an in-projection and an out-projection: heads are removed as whole groups.

Recognised: what PyTorch's exporters (legacy and dynamo) write for ``nn.MultiheadAttention`` with packed,
sequence-first Q, K, V (T tokens, N samples, H heads of d channels, E = H·d):

    in-projection (T, N, 3E) -> Reshape (T, N, 3, E) -> Unsqueeze 0 -> Transpose (3, 1, 2, 0, 4) -> Squeeze 3
    -> Gather 0 / 1 / 2 on axis 0: Q, K, V (T, N, E); each -> Reshape (T, N·H, d) -> Transpose (1, 0, 2)
    -> Reshape (N, H, T, d); Softmax((Q·s) @ Kᵀ·s) @ V -> Transpose (2, 0, 1, 3) -> Reshape (T·N, E)
    -> out-projection,

where Kᵀ is a Transpose (0, 1, 3, 2) (legacy) or a Reshape to (N·H, T, d), Transpose (0, 2, 1), Reshape back to
(N, H, d, T) taking N and H from K's shape (dynamo). Every head count in a Reshape target is -1 (inferred), a
constant, or the constant factor H of a computed N·H; restructure rewrites the constants.

The rule, exact against the mask (:func:`onnxslice.surgery.mask.mask_model`): head h's output is
softmax(Q_h K_hᵀ s²) V_h, computed from head h's channels alone. When the slice drops every V channel of head h, the
masked V_h is zero, so head h's output is zero whatever Q_h and K_h hold, and the out-projection reads zero in head h's
columns. Removing head h (its Q, K and V rows of the in-projection, those columns of the out-projection, one head from
the head count of every Reshape) computes the same, and the other heads are untouched (their d and the scale s stay).
So a head is one class: its V channels decide (all dropped: the head goes) and its Q and K channels follow it (they
go with it whether the slice drops them or not: they no longer matter). A head with any V channel kept stays whole,
the channels the slice drops in it zeroed as the mask zeroes them. A Q or K channel is never removed alone, even
where dropping Q_j or K_j of a head would make q_j·k_j zero: the packed Reshape to (3, E) needs Q, K and V of one
width, and every head the same d. One head of every attention stays even when all their V channels are dropped (a
Reshape reads a head count of 0 as "copy the input's"); it is zeroed. Anything else (another exporter's pattern, a
bias added to the scores) is not recognised: the Reshape rule keeps the channels whole, as for any Reshape it cannot
follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxslice.graph import NeuronLayer
from onnxslice.graph_utils import attribute, concat_piece, vector_length
from onnxslice.surgery.analysis import Analysis
from onnxslice.surgery.editor import Editor


@dataclass(frozen=True)
class HeadCount:
    """A constant that holds the head count times ``per_head``: input ``input`` of node ``node``, at ``index``
    (None: a scalar)."""

    node: str
    input: int
    index: int | None
    per_head: int


@dataclass
class Attention:
    """One recognised multi-head attention: its heads' V elements and the constants that hold the head count."""

    in_projection: str  #: the in-projection layer
    values: np.ndarray  #: (H, d) element ids of each head's V channels (the head's class)
    counts: list[HeadCount]

    def edit(self, editor: Editor) -> None:
        """Write the number of heads that stay into every constant that holds the head count."""
        gone = editor.removed[self.values[:, 0]]
        if not gone.any():
            return
        heads = int(np.sum(~gone))
        nodes = {node.name: node for node in editor.graph.nodes}
        for count in self.counts:
            node = nodes[count.node]
            array = editor.value(node, count.input)
            array[() if count.index is None else count.index] = heads * count.per_head
            editor.set_value(node, count.input, array)

    def summary(self, editor: Editor) -> dict:
        """The heads removed, and why each head the slice drops channels of stays."""
        heads, head_dim = self.values.shape
        roots = editor.groups.roots[self.values[:, 0]]
        gone = editor.removed[self.values[:, 0]]
        dropped = np.ones(3 * heads * head_dim, bool)
        dropped[list(editor.kept.get(self.in_projection, range(dropped.size)))] = False
        dropped = dropped.reshape(3, heads, head_dim)
        kept = {}
        for h in np.flatnonzero(dropped.any(axis=(0, 2)) & ~gone).tolist():
            if int(roots[h]) in editor.groups.kept_reason:
                kept[h] = editor.groups.kept_reason[int(roots[h])]
            elif dropped[2, h].all():
                kept[h] = "one head stays (a Reshape reads a head count of 0 as 'copy'); its channels are zeroed"
            else:
                kept[h] = "the slice keeps some of its V channels; the channels it drops are zeroed"
        return {"in_projection": self.in_projection, "heads": heads, "head_dim": head_dim,
                "removed": np.flatnonzero(gone).tolist(), "kept": kept}


class _NotAttention(Exception):
    """The graph around a Reshape is not the recognised pattern."""


def heads_rule(an: Analysis, reshape: onnx.NodeProto) -> bool:
    """Where ``reshape`` starts a recognised attention: unite each head's channels, track the out-projection's input
    by heads and record the head-count constants. False (nothing changed) where it does not."""
    try:
        in_projection, heads, head_dim, counts, out_input = _match(an, reshape)
    except (_NotAttention, KeyError, IndexError, TypeError, ValueError):
        return False
    queries, keys, values = an.tracks[reshape.input[0]].along_axis().reshape(3, heads, head_dim)
    for h in range(heads):
        an.uf.unite(values[h][:1], np.concatenate([queries[h], keys[h], values[h]]))
    an.followers.update(queries.ravel().tolist() + keys.ravel().tolist())
    an.attention.append(Attention(in_projection, values, counts))
    width = heads * head_dim
    an.set_track(out_input, values.reshape(1, width), np.zeros((1, width), np.float32), 1)
    return True


def _match(an: Analysis, reshape: onnx.NodeProto) -> tuple[str, int, int, list[HeadCount], str]:
    """The attention that ``reshape`` starts: its in-projection, H, d, the head-count constants and the
    out-projection's input tensor (raises _NotAttention)."""
    packed = reshape.input[0]
    layer = an.mask_points.get(packed)
    _require(layer is not None and not layer.is_output)
    tokens, _, channels = an.shapes[packed]
    _require(isinstance(tokens, int) and isinstance(channels, int) and channels % 3 == 0)
    width = channels // 3
    _require(_only_reads_shape(an, packed, reshape) and _single_chain(an, layer))
    _require(_static(an.shapes[reshape.output[0]], (tokens, None, 3, width)))
    node = _next(an, reshape, "Unsqueeze")
    _require(_axes(an, node, 5) == [0])
    node = _next(an, node, "Transpose")
    _require(attribute(node, "perm", None) == [3, 1, 2, 0, 4])
    node = _next(an, node, "Squeeze")
    _require(_axes(an, node, 5) == [3])
    gathers = an.users[node.output[0]]
    _require(len(gathers) == 3 and all(g.op_type == "Gather" and attribute(g, "axis", 0) == 0 for g in gathers))
    by_index = {int(an.const_input(g, 1)): g for g in gathers}
    _require(sorted(by_index) == [0, 1, 2])
    counts: list[HeadCount | None] = []
    split = []
    for gather in (by_index[0], by_index[1], by_index[2]):
        merged = _next(an, gather, "Reshape")
        node = _next(an, merged, "Transpose")
        _require(attribute(node, "perm", None) == [1, 0, 2])
        per_head = _next(an, node, "Reshape")
        _, heads, _, head_dim = an.shapes[per_head.output[0]]
        _require(isinstance(heads, int) and isinstance(head_dim, int) and heads * head_dim == width)
        _require(_static(an.shapes[merged.output[0]], (tokens, None, head_dim)))
        _require(_static(an.shapes[per_head.output[0]], (None, heads, tokens, head_dim)))
        counts += [_head_count(an, merged, 1, heads, 1), _head_count(an, per_head, 1, heads, 1)]
        split.append(per_head)
    counts.append(_head_count(an, reshape, 3, heads, head_dim))
    query, key, value = split
    scaled_query = _next(an, query, "Mul")
    scaled_key = _next(an, _transposed_key(an, key, tokens, heads, head_dim, counts), "Mul")
    _require(_is_scalar(an, scaled_query) and _is_scalar(an, scaled_key))
    scores = _next(an, scaled_query, "MatMul")
    _require(list(scores.input) == [scaled_query.output[0], scaled_key.output[0]])
    softmax = _next(an, scores, "Softmax")
    _require(attribute(softmax, "axis", -1) in (-1, 3))
    mixed = _next(an, softmax, "MatMul")
    _require(list(mixed.input) == [softmax.output[0], value.output[0]])
    node = _next(an, mixed, "Transpose")
    _require(attribute(node, "perm", None) == [2, 0, 1, 3])
    flat = _next(an, node, "Reshape")
    _require(_static(an.shapes[flat.output[0]], (None, width)))
    count = _head_count(an, flat, 1, heads, head_dim)  # written by the Reshape family's edit (a tracked Reshape)
    _require(count is None or an.nodes[count.node].op_type in ("Reshape", "Concat"))
    users = an.users[flat.output[0]]
    _require(len(users) == 1 and users[0].name in an.layers and users[0].input[0] == flat.output[0])
    return layer.name, heads, head_dim, [count for count in counts if count is not None], flat.output[0]


def _transposed_key(an: Analysis, key: onnx.NodeProto, tokens: int, heads: int, head_dim: int,
                    counts: list[HeadCount | None]) -> onnx.NodeProto:
    """The node that writes Kᵀ (N, H, d, T) from the per-head K (N, H, T, d): a Transpose (0, 1, 3, 2) (legacy
    export), or a Reshape to (N·H, T, d), a Transpose (0, 2, 1) and a Reshape back whose target takes N and H from
    K's own shape (dynamo export). Head-count constants on the way are added to ``counts``."""
    users = an.users[key.output[0]]
    if len(users) == 1 and users[0].op_type == "Transpose":
        _require(attribute(users[0], "perm", None) == [0, 1, 3, 2])
        return users[0]
    shapes = [user for user in users if user.op_type == "Shape"]
    merge = [user for user in users if user.op_type != "Shape"]
    _require(len(merge) == 1 and merge[0].op_type == "Reshape")
    merge = merge[0]
    _require(_static(an.shapes[merge.output[0]], (None, tokens, head_dim)))
    counts.append(_head_count(an, merge, 0, heads, 1))
    node = _next(an, merge, "Transpose")
    _require(attribute(node, "perm", None) == [0, 2, 1])
    unmerge = _next(an, node, "Reshape")
    _require(_static(an.shapes[unmerge.output[0]], (None, heads, head_dim, tokens)))
    concat = _producer(an, unmerge.input[1])
    _require(concat.op_type == "Concat" and len(concat.input) == 3 and len(shapes) == 1)
    leading, *rest = concat.input
    _require([an.consts[name].tolist() for name in rest] == [[head_dim], [tokens]])
    read = _producer(an, leading)
    _require(read.op_type == "Slice" and read.input[0] == shapes[0].output[0] and len(read.input) == 3)
    _require(an.users[shapes[0].output[0]] == [read] and an.users[leading] == [concat])
    _require(list(range(4))[slice(int(an.consts[read.input[1]][0]), int(an.consts[read.input[2]][0]))] == [0, 1])
    return unmerge


def _require(condition: bool) -> None:
    if not condition:
        raise _NotAttention


def _next(an: Analysis, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto:
    """The only consumer of ``node``'s output, of type ``op_type``."""
    users = an.users.get(node.output[0], [])
    _require(len(node.output) == 1 and len(users) == 1 and users[0].op_type == op_type)
    return users[0]


def _axes(an: Analysis, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """A Squeeze's or Unsqueeze's axes (attribute, or constant input from opset 13), each in 0..rank-1."""
    found = attribute(node, "axes", None)
    if found is None:
        found = an.const_input(node, 1)
    return None if found is None else sorted(int(v) % rank for v in np.atleast_1d(found))


def _static(shape: list | None, expected: tuple[int | None, ...]) -> bool:
    """Whether ``shape`` has the expected static entries (None: any)."""
    return shape is not None and len(shape) == len(expected) and all(
        want is None or have == want for have, want in zip(shape, expected, strict=True))


def _is_scalar(an: Analysis, node: onnx.NodeProto) -> bool:
    """A Mul by one constant number (the attention scale)."""
    constant = an.const_input(node, 1)
    return constant is not None and constant.size == 1


def _only_reads_shape(an: Analysis, packed: str, reshape: onnx.NodeProto) -> bool:
    """Nothing but ``reshape`` and Shape nodes (whose reads the Shape rule checks) reads the in-projection."""
    return all(user is reshape or user.op_type == "Shape" for user in an.users[packed])


def _single_chain(an: Analysis, layer: NeuronLayer) -> bool:
    """The in-projection's node and its tail form a chain: no tensor before its output is read elsewhere."""
    names = [layer.name, *layer.tail][:-1]
    return all(len(an.users[an.nodes[name].output[0]]) == 1 for name in names)


def _head_count(an: Analysis, reshape: onnx.NodeProto, axis: int, heads: int, per_head: int) -> HeadCount | None:
    """The constant that sets entry ``axis`` of a Reshape's target shape to ``heads``·``per_head`` (or to N·H
    through ``Mul(N, H)``): the target itself, a constant piece of the Concat that builds it, or the constant factor
    of the Mul that a computed piece comes from. None where the entry is -1 (the Reshape infers it)."""
    target = reshape.input[1]
    if target in an.consts:
        entry = an.consts[target][axis]
        _require(entry in (-1, heads * per_head))
        return None if entry == -1 else HeadCount(reshape.name, 1, axis, per_head)
    concat = _producer(an, target)
    _require(concat.op_type == "Concat")
    lengths = [vector_length(an.shapes.get(piece)) for piece in concat.input]
    found = concat_piece(lengths, axis)
    _require(found is not None)
    index, entry = found
    piece = concat.input[index]
    if piece in an.consts:
        value = an.consts[piece][entry]
        _require(value in (-1, heads * per_head))
        return None if value == -1 else HeadCount(concat.name, index, entry, per_head)
    unsqueeze = _producer(an, piece)
    _require(unsqueeze.op_type == "Unsqueeze" and lengths[index] == 1 and per_head == 1)
    mul = _producer(an, unsqueeze.input[0])
    _require(mul.op_type == "Mul")
    factor = next(i for i, name in enumerate(mul.input) if name in an.consts)
    _require(an.consts[mul.input[factor]].size == 1 and an.consts[mul.input[factor]].item() == heads)
    return HeadCount(mul.name, factor, None if an.consts[mul.input[factor]].ndim == 0 else 0, 1)


def _producer(an: Analysis, tensor: str) -> onnx.NodeProto:
    found = next((node for node in an.model.graph.node if tensor in node.output), None)
    _require(found is not None)
    return found
