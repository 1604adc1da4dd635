"""The channel groups a slice decides on: the classes of channels that restructure removes together.

Computed once per model, as data, from the same dependency analysis restructure runs
(:func:`onnxslice.surgery.groups.channel_groups` on :func:`onnxslice.surgery.restructure.prepare`), so a slice
keeps or drops whole classes and what it drops is what restructure removes. Terms:

- a *class*: output channels of one or more layers that go together (a residual stream's channel, the two
  ends of a depthwise pair, position j of every group of a grouped convolution);
- a *forced* class: one restructure can never remove (it reaches the output, is read by something not
  understood, ...); a slice always keeps it;
- a *coupled group*: layers that share classes, with all their classes (a residual stream and every layer
  that writes into it). Ratios and ``round_to`` apply per coupled group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslice.surgery.cost import RestructureCost, restructure_cost
from onnxslice.surgery.groups import UnionFind, channel_groups


@dataclass
class SelectionGroups:
    layer_classes: dict[str, np.ndarray]  #: layer -> class index of each output channel
    forced: np.ndarray  #: per class: restructure can never remove it
    coupled: np.ndarray  #: per class: index of its coupled group
    element_class: np.ndarray | None = None  #: per element of the analysis: its class index, -1 if none
    cost: RestructureCost | None = None  #: sizes restructure reaches; None without a model
    #: layer -> per output channel: it goes with its class whether kept or not (an attention head's Q and K)
    followers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.forced)

    @classmethod
    def of_model(cls, model: onnx.ModelProto) -> SelectionGroups:
        """The groups of a canonical model (see :func:`onnxslice.graph.load_model`)."""
        from onnxslice.surgery.restructure import prepare

        groups = channel_groups(prepare(model))
        roots = groups.roots
        layer_roots = np.unique(np.concatenate([roots[e] for e in groups.layer_elems.values()]))
        index = np.full(len(roots), -1, np.int64)
        index[layer_roots] = np.arange(len(layer_roots))
        element_class = index[roots]
        forced = np.zeros(len(layer_roots), bool)
        for root in groups.kept_reason:
            if index[root] >= 0:
                forced[index[root]] = True
        layer_classes = {name: element_class[elems] for name, elems in groups.layer_elems.items()}
        followers = {name: groups.followers[elems] for name, elems in groups.layer_elems.items()
                     if groups.followers[elems].any()}
        return cls(layer_classes, forced, _coupled(layer_classes, len(layer_roots)), element_class,
                   restructure_cost(groups), followers)

    @classmethod
    def independent(cls, layer_sizes: dict[str, int]) -> SelectionGroups:
        """Every channel its own class (the paper's per-layer view; no sizes): for profiles without a model."""
        starts = np.cumsum([0, *layer_sizes.values()])
        layer_classes = {name: np.arange(start, start + size) for (name, size), start in
                         zip(layer_sizes.items(), starts, strict=False)}
        coupled = np.repeat(np.arange(len(layer_sizes)), list(layer_sizes.values()))
        return cls(layer_classes, np.zeros(int(starts[-1]), bool), coupled)

    def layer_kept(self, keep: np.ndarray, layers: list[str]) -> dict[str, list[int]]:
        """Kept channel indices of each of ``layers`` when the classes ``keep`` (boolean per class) stay."""
        return {name: np.flatnonzero(keep[self.layer_classes[name]]).tolist() for name in layers}

    def combine(self, per_layer: dict[str, np.ndarray]) -> np.ndarray:
        """Per class, the mean of its member channels' values (layers not given add nothing; NaN: no member)."""
        total, count = np.zeros(self.count), np.zeros(self.count)
        for name, values in per_layer.items():
            np.add.at(total, self.layer_classes[name], values)
            np.add.at(count, self.layer_classes[name], 1)
        return np.divide(total, count, out=np.full(self.count, np.nan), where=count > 0)

    def size(self, keep: np.ndarray) -> dict[str, float]:
        """Parameters and MACs of the model restructured keeping the classes ``keep`` (boolean per class)."""
        if self.cost is None or self.element_class is None:
            raise ValueError("sizes need the groups of a model (SelectionGroups.of_model)")
        keep_element = np.ones(len(self.element_class), bool)
        member = self.element_class >= 0
        keep_element[member] = (keep | self.forced)[self.element_class[member]]
        return self.cost.evaluate(~keep_element)

    def size_of_slice(self, kept: dict[str, list[int]]) -> dict[str, float]:
        """Parameters and MACs restructure reaches for any slice: a class goes when no member channel is kept
        (followers do not count)."""
        keep = np.zeros(self.count, bool)
        for name, classes in self.layer_classes.items():
            indices = kept.get(name)
            chosen = np.zeros(len(classes), bool)
            chosen[slice(None) if indices is None else list(indices)] = True
            keep[classes[chosen & ~self.followers.get(name, np.zeros(len(classes), bool))]] = True
        return self.size(keep)


def _coupled(layer_classes: dict[str, np.ndarray], count: int) -> np.ndarray:
    """Coupled group of every class: classes that share a layer are in one group."""
    union = UnionFind()
    union.make(count)
    for classes in layer_classes.values():
        if len(classes):
            union.unite(classes[:1], classes)
    roots = union.roots()
    return np.unique(roots, return_inverse=True)[1]
