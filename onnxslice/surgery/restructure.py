"""Physically remove the channels a slice drops: a smaller ONNX model that computes what the mask computes.

The channel groups (:mod:`onnxslice.surgery.groups`) decide which channels go; the editor
(:mod:`onnxslice.surgery.editor`) applies each op family's edit (:mod:`onnxslice.surgery.ops`): neuron layers
lose output rows and input columns (folding any constant a removed input leaves into the bias), element-wise
ops and BatchNormalization lose the matching entries of their constant operands, grouped convolutions change
``group``, Reshape / Split / Slice / Resize get their constant sizes recomputed, and a recognised multi-head
attention loses whole heads (:mod:`onnxslice.surgery.ops.attention`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from onnxslice.errors import InputError
from onnxslice.graph import NeuronLayer, export_graph, fold_constants
from onnxslice.graph_utils import node_named
from onnxslice.large import infer_shapes
from onnxslice.surgery.editor import Editor
from onnxslice.surgery.groups import ChannelGroups, channel_groups
from onnxslice.surgery.ops import LAYER, family_of


@dataclass
class RestructureReport:
    """What was removed and what was kept whole, and why."""

    channels: dict[str, tuple[int, int]]  #: hidden layer -> (channels before, after)
    dropped_by_slice: int  #: hidden channels the slice drops
    zeroed: int  #: dropped channels kept (zeroed) because a coupled layer keeps them or for a reason below
    kept_whole: list[dict] = field(default_factory=list)  #: {"layers", "channels", "reason"}
    #: per recognised multi-head attention: {"in_projection", "heads", "head_dim", "removed", "kept": {head: reason}}
    attention_heads: list[dict] = field(default_factory=list)

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
            "attention_heads": self.attention_heads,
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
    editor = Editor(groups, kept, LAYER, family_of)
    pruned = editor.run()
    channels = {}
    for layer in groups.scan.hidden:
        keep = editor.keep_of(layer_raw_output(groups, layer))
        channels[layer.name] = (layer.size, layer.size if keep is None else len(keep))
    dropped = sum(layers[name].size - len(indices) for name, indices in kept.items() if not layers[name].is_output)
    kept_whole = [{"layers": g["layers"], "channels": count, "of": g["channels"], "reason": reason}
                  for g in groups.groups() for reason, count in g["kept"].items()
                  if not reason.startswith("classifier output")]
    heads = [attention.summary(editor) for attention in groups.attention]
    return pruned, RestructureReport(channels, dropped, editor.zeroed, kept_whole, heads)


def layer_raw_output(groups: ChannelGroups, layer: NeuronLayer) -> str:
    return node_named(groups.model.graph, layer.name).output[0]
