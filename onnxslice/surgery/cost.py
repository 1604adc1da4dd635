"""Parameters and multiply-accumulates a restructured model will have, without restructuring it.

Restructure scales every constant it edits along the channel axes it removes: a layer's weight loses output
rows and input columns, its bias and its tail's per-channel constants lose entries. So each such constant, and
each layer's multiply-accumulates, is a *term*: its original size times, per axis that shrinks, the fraction of
that axis' channels that stay. Evaluating all terms for a set of removed channels costs a few array sums, which
is what lets a size budget be met by bisection without running or rewriting the model. The terms mirror the
edits of :mod:`onnxslice.surgery.ops` (one place per layer kind there, one here); the tests compare both
on every torchvision family. Not counted: the offsets restructure adds after a tail that maps zero elsewhere,
which only a slice that drops part of a class needs (a group-aware slice never does; one such constant of the
layer's kept channel count per layer).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslice.graph import NeuronLayer
from onnxslice.graph_utils import attribute
from onnxslice.large import FLOAT_TYPES
from onnxslice.measure.stats import count_params, macs_by_node
from onnxslice.surgery.analysis import ChannelGroups, Track
from onnxslice.surgery.ops import family_of


@dataclass
class Term:
    """``base`` scaled by the fraction of kept entries of each factor (element ids along one shrinking axis)."""

    base: int
    factors: tuple[np.ndarray, ...] = ()

    def size(self, kept: np.ndarray) -> float:
        value = float(self.base)
        for factor in self.factors:
            value *= float(np.count_nonzero(kept[factor])) / len(factor)
        return value

    @property
    def can_shrink(self) -> bool:
        return bool(self.factors)


@dataclass
class RestructureCost:
    """The size terms of a model's constants (by initializer) and of its layers' multiply-accumulates."""

    params: int  #: parameters of the analysed model
    macs: int  #: multiply-accumulates of the analysed model
    constants: dict[str, list[Term]] = field(default_factory=dict)  #: initializer -> one term per reading node
    layer_macs: list[Term] = field(default_factory=list)
    #: layers without a bias that get one when an input channel with a non-zero constant value goes (folded):
    #: (output elements, elements of those input channels)
    new_biases: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def evaluate(self, removed: np.ndarray) -> dict[str, float]:
        """``params`` and ``macs`` of the model restructured with these elements removed, and their fractions."""
        kept = ~removed
        params = self.params
        for terms in self.constants.values():
            sizes = [term.size(kept) for term in terms]
            changed = [size for term, size in zip(terms, sizes, strict=True) if size != term.base]
            if changed:  # a constant that some reader leaves unchanged stays shared; every edit is a copy
                params += sum(changed) - (terms[0].base if len(changed) == len(terms) else 0)
        for out, constant_inputs in self.new_biases:
            if not kept[constant_inputs].all():
                params += np.count_nonzero(kept[out])
        macs = self.macs + sum(term.size(kept) - term.base for term in self.layer_macs)
        params, macs = round(params), round(macs)
        return {"params": params, "params_before": self.params, "params_fraction": params / max(self.params, 1),
                "macs": macs, "macs_before": self.macs, "macs_fraction": macs / max(self.macs, 1)}


def restructure_cost(groups: ChannelGroups) -> RestructureCost:
    """The size terms of ``groups.model`` (the model restructure edits)."""
    model = groups.model
    node_macs = macs_by_node(model)
    inits = {init.name: init for init in model.graph.initializer if init.data_type in FLOAT_TYPES}
    readers: dict[str, list[Term]] = defaultdict(list)
    layers = groups.scan.by_name()
    layer_macs, new_biases = [], []
    for node in model.graph.node:
        if node.name in layers:
            weight, bias, macs = _layer_terms(groups, node, layers[node.name], inits, node_macs.get(node.name, 0))
            layer_macs.append(macs)
            readers[node.input[1]].append(weight)
            if len(node.input) > 2 and node.input[2] in inits:
                readers[node.input[2]].append(bias)
            elif node.op_type != "MatMul" and len(weight.factors) == 2 and node.input[0] in groups.tracks:
                value = groups.tracks[node.input[0]].value_along_axis()
                constant = np.isfinite(value) & (value != 0)
                if constant.any():
                    new_biases.append((weight.factors[0], groups.tracks[node.input[0]].along_axis()[constant]))
            continue
        track = groups.tracks.get(node.output[0]) if node.output else None
        for index, name in enumerate(node.input):
            if name in inits:
                readers[name].append(_constant_term(node, index, inits[name], track))
    constants = {name: terms for name, terms in readers.items() if any(t.can_shrink for t in terms)}
    return RestructureCost(count_params(model), sum(node_macs.values()), constants, layer_macs, new_biases)


def _layer_terms(groups: ChannelGroups, node: onnx.NodeProto, layer: NeuronLayer, inits: dict,
                 macs: int) -> tuple[Term, Term, Term]:
    """Weight, bias and multiply-accumulate terms of a layer: output rows times the input columns it reads."""
    out = groups.layer_elems[layer.name]
    weight_dims = list(inits[node.input[1]].dims)
    group = attribute(node, "group", 1) if node.op_type == "Conv" else 1
    by_position = node.name in groups.by_position
    track = groups.tracks.get(node.input[0])
    factors: tuple[np.ndarray, ...] = (out,)
    if track is not None and (group == 1 or by_position):
        columns = track.along_axis()
        if by_position:
            columns = columns[: weight_dims[1]]
        factors = (out, columns)
    bias_size = int(np.prod(inits[node.input[2]].dims)) if len(node.input) > 2 and node.input[2] in inits else 0
    bias = Term(bias_size, (out,) if bias_size == layer.size else ())
    return Term(int(np.prod(weight_dims)), factors), bias, Term(macs, factors)


def _constant_term(node: onnx.NodeProto, index: int, init: onnx.TensorProto, track: Track | None) -> Term:
    """A constant operand of an element-wise op: sliced along the channel axis when it spans it."""
    size, dims = int(np.prod(init.dims)), list(init.dims)
    if track is None or not family_of(node.op_type).slices_constants:
        return Term(size)
    channels = track.along_axis()
    if node.op_type == "BatchNormalization":
        return Term(size, (channels,) if index > 0 else ())
    axis = track.axis - (track.elems.ndim - len(dims))
    if 0 <= axis < len(dims) and dims[axis] == len(channels) and len(channels) > 1:
        return Term(size, (channels,))
    return Term(size)
