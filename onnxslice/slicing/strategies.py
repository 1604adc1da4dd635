"""Neuron selection strategies: which channel classes of a model are critical, from a Profile and its groups.

A slice keeps or drops whole classes (:mod:`onnxslice.slicing.groups`: the channels restructure removes
together), so what it drops is what restructure removes. Each strategy is one small class behind
:class:`Strategy`, chosen by name in :data:`STRATEGIES`, with the same call: :meth:`Strategy.rank` turns the
profile into a :class:`Ranking` (a key per class, per category and merged, independent of the strategy's
parameter), and a class is kept at parameter value v when its key passes v — so one ranking serves every Θ or
ratio, and the kept sets grow with v (what a size budget bisects on).

- ``global`` (paper §3.1): per coupled group, the top ``ceil(R·n)`` of its n classes by contribution over all data.
- ``category`` (paper §3.1): the same per category, then the union over categories.
- ``semantic`` (paper §3.3, Algorithm 1): per layer and category, neurons by decreasing contribution, the
  smallest prefix whose linear CKA with the whole layer exceeds Θ (exact prefix scan of
  :mod:`onnxslice.profiling.similarity`); a class is critical for a category when any member layer needs one of its
  channels (the paper's union, over layers as over categories).
- ``shared`` (beyond the paper, :class:`SharedStrategy`): per layer one prefix of the neurons ordered by
  contribution over all data, the shortest whose CKA exceeds Θ for every category.

A class's contribution is the mean over its member channels of each layer's contribution divided by that
layer's mean (layers on different scales weigh alike). Ordering: decreasing contribution, ties by increasing
index (a stable sort); NaN ranks last. The semantic scan only walks the neurons with a non-zero row in H: a
neuron that is constant on a category cannot raise the CKA, so it is never selected for that category.
Forced classes (restructure can never remove them) are always kept and, for the ratios, fill the quota first.
Every layer keeps at least one neuron (its highest contribution over all data). ``round_to`` N then keeps a
multiple of N classes in every coupled group (or all of them), the extra ones by contribution.

Without groups (profiles with no model), every neuron is its own class and every layer its own coupled group:
the paper's per-layer selection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import numpy as np

from onnxslice.errors import InputError
from onnxslice.profiling.artifact import REPRESENTATIONS, Profile
from onnxslice.profiling.similarity import live_neurons, prefix_cka
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.groups import SelectionGroups

DEFAULT_THETA = 0.95
#: How a conv neuron enters CKA: its spatial mean or its whole map (see the README, "How it works").
DEFAULT_REPRESENTATION = "mean"
DEFAULT_RATIO = 0.5
#: A ratio keeps ceil(R·n) classes; this slack keeps R·n that should be an integer from rounding up.
RATIO_SLACK = 1e-9


def ranking(contribution: np.ndarray) -> np.ndarray:
    """Indices by decreasing contribution; ties keep index order, NaN ranks last."""
    values = np.nan_to_num(np.asarray(contribution, dtype=np.float64), nan=-np.inf)
    return np.argsort(-values, kind="stable")


@dataclass
class Ranking:
    """Per class, the key a parameter value must pass to keep it: one row per category, the last merged."""

    keys: np.ndarray  #: (categories + 1, classes); the merged row decides, the others give per_category
    score: np.ndarray  #: combined contribution over all data (orders round_to's extra classes)
    inclusive: bool  #: kept when key <= value (Θ) rather than key < value (ratio)
    categories: list[int] = field(default_factory=list)  #: labels of the per-category rows (none: global)
    layer_best: dict[str, int] = field(default_factory=dict)  #: layer -> its top neuron over all data

    def passes(self, value: float, row: int = -1) -> np.ndarray:
        keys = self.keys[row]
        return keys <= value if self.inclusive else keys < value


class Strategy(ABC):
    """Ranks the channel classes of a model from a profile and a contribution metric."""

    name: ClassVar[str]
    parameter: ClassVar[str]  #: "theta" or "ratio"

    @abstractmethod
    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        """The ranking of every class (parameter-free)."""

    @property
    def value(self) -> float:
        return getattr(self, self.parameter)

    def with_value(self, value: float) -> Strategy:
        return replace(self, **{self.parameter: value})  # type: ignore[type-var]

    def settings(self) -> dict:
        """The fields recorded in the slice (theta, ratio, centered, step)."""
        return asdict(self)  # type: ignore[call-overload]


def class_scores(profile: Profile, metric: str, groups: SelectionGroups, category: int | None) -> np.ndarray:
    """Per class, its members' contributions normalised by their layer's mean, averaged."""
    per_layer = {}
    for layer in profile.layers:
        values = np.asarray(profile.contribution(metric, layer, category), np.float64)
        scale = np.nanmean(np.abs(values)) if not np.all(np.isnan(values)) else 0.0
        per_layer[layer] = values / scale if scale > 0 else values
    return groups.combine(per_layer)


def _ratio_keys(score: np.ndarray, forced: np.ndarray, coupled: np.ndarray) -> np.ndarray:
    """Key (rank + slack) / n within the coupled group, forced classes first: kept at R iff key < R."""
    order = np.lexsort((np.nan_to_num(-score, nan=np.inf), ~forced, coupled))
    sizes = np.bincount(coupled)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order)) - starts[coupled[order]]
    return (position + RATIO_SLACK) / sizes[coupled]


def _layer_best(profile: Profile, metric: str) -> dict[str, int]:
    return {layer: int(ranking(profile.contribution(metric, layer))[0]) for layer in profile.layers}


@dataclass
class GlobalStrategy(Strategy):
    """Top ``ratio`` of each coupled group by contribution over the whole data set."""

    ratio: float
    name: ClassVar[str] = "global"
    parameter: ClassVar[str] = "ratio"

    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        score = class_scores(profile, metric, groups, None)
        keys = _ratio_keys(score, groups.forced, groups.coupled)[None, :]
        return Ranking(keys, score, False, [], _layer_best(profile, metric))


@dataclass
class CategoryStrategy(Strategy):
    """Top ``ratio`` of each coupled group per category, then the union."""

    ratio: float
    name: ClassVar[str] = "category"
    parameter: ClassVar[str] = "ratio"

    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        rows = [_ratio_keys(class_scores(profile, metric, groups, c), groups.forced, groups.coupled)
                for c in profile.categories]
        keys = np.vstack([*rows, np.min(rows, axis=0)])
        return Ranking(keys, class_scores(profile, metric, groups, None), False, list(profile.categories),
                       _layer_best(profile, metric))


@dataclass
class SemanticStrategy(Strategy):
    """Per layer and category the smallest contribution-ordered prefix with CKA > ``theta``; union over both."""

    theta: float
    step: int = 1
    centered: bool = True
    representation: str = DEFAULT_REPRESENTATION  #: a conv neuron in CKA: "mean" (spatial) or "map" (whole)
    name: ClassVar[str] = "semantic"
    parameter: ClassVar[str] = "theta"

    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        rows = [_class_minimum(groups, {layer: self.thresholds(self.similarity(profile, layer, category),
                                                               profile.contribution(metric, layer, category))
                                        for layer in profile.layers})
                for category in profile.categories]
        return self.ranking(profile, metric, groups, rows, np.min(rows, axis=0) if rows else None)

    def similarity(self, profile: Profile, layer: str, category: int) -> np.ndarray:
        """``layer``'s CKA statistics for ``category`` in this strategy's form (centring, representation)."""
        if layer not in profile.similarity:
            raise InputError(f"the profile has no CKA statistics for layer {layer!r}")
        return profile.similarity_matrix(layer, category, self.centered, self.representation)

    @staticmethod
    def ranking(profile: Profile, metric: str, groups: SelectionGroups, rows: list[np.ndarray],
                merged: np.ndarray | None) -> Ranking:
        """The Θ keys per category (``rows``) and merged over them, as a :class:`Ranking`."""
        keys = np.vstack([*rows, merged]) if rows else np.full((1, groups.count), np.inf)
        return Ranking(keys, class_scores(profile, metric, groups, None), True, list(profile.categories),
                       _layer_best(profile, metric))

    def thresholds(self, h: np.ndarray, contribution: np.ndarray) -> np.ndarray:
        """Per neuron, the smallest Θ at which it is in the layer's critical prefix (inf: never)."""
        order = ranking(contribution)
        order = order[live_neurons(h)[order]]
        return self.prefix_keys(prefix_cka(h, order), order, len(contribution))

    def prefix_keys(self, cka: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
        """Per neuron, the smallest Θ at which the scan along ``order`` (CKA of each prefix: ``cka``) keeps it;
        inf for neurons not in ``order``.

        Prefix sizes are the multiples of ``step`` (and the whole order); the scan keeps the smallest size
        s with CKA(s) > Θ, so the neuron at position p is in it iff no size s <= p passes: Θ >= max CKA(s).
        """
        result = np.full(size, np.inf)
        if len(order) == 0:
            return result
        sizes = np.arange(self.step, len(order) + self.step, self.step).clip(max=len(order))
        passing_at = np.full(len(order) + 1, -np.inf)  # index p: the largest CKA of a size s <= p
        passing_at[sizes] = cka[sizes - 1]
        result[order] = np.maximum.accumulate(passing_at)[: len(order)]
        return result


@dataclass
class SharedStrategy(SemanticStrategy):
    """Beyond the paper: per layer one prefix of the neurons ordered by contribution over all data, the shortest
    whose CKA exceeds ``theta`` for every category.

    The paper's union of per-category prefixes saturates narrow layers: each category's prefix is a different
    part of the layer, so their union is nearly all of it (the digits CNN, taylor, keeps 63 of the 64 units of
    its FC layer and every channel of its three deeper convs at every Θ in 0.90-0.99; this keeps 19, 37 and 56
    FC units at Θ 0.90, 0.95, 0.99). With one order per layer the categories' prefixes are nested, and the kept
    prefix still gives every category CKA > Θ (before coupling and rounding), the paper's per-category
    criterion; ``per_category`` is each category's own shortest prefix along that order.

    Measured with ``benchmarks/shared_strategy.py`` (masked, no fine-tuning, round-to 1, mean accuracy over
    parameter budgets 0.2-0.8), semantic vs shared. With taylor (the default metric) it wins on digits:val (MLP
    0.919 vs 0.945, CNN 0.632 vs 0.707) and holds on digits:test (0.893 vs 0.919, 0.609 vs 0.705). It depends
    on the metric: on digits:val it wins 5 of the 10 model x metric pairs and loses with avg on both models
    (MLP 0.921 vs 0.765, CNN 0.766 vs 0.540).
    """

    name: ClassVar[str] = "shared"

    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        per_category: list[dict[str, np.ndarray]] = [{} for _ in profile.categories]
        merged = {}
        for layer in profile.layers:
            size = profile.layer_sizes[layer]
            h = [self.similarity(profile, layer, c) for c in profile.categories]
            order = ranking(profile.contribution(metric, layer))
            order = order[np.any([live_neurons(one) for one in h], axis=0)[order]] if h else order[:0]
            curves = [prefix_cka(one, order) for one in h]
            for row, curve in zip(per_category, curves, strict=True):
                row[layer] = self.prefix_keys(curve, order, size)
            merged[layer] = self.prefix_keys(np.min(curves, axis=0), order, size) if curves else np.full(size, np.inf)
        rows = [_class_minimum(groups, row) for row in per_category]
        return self.ranking(profile, metric, groups, rows, _class_minimum(groups, merged))


def _class_minimum(groups: SelectionGroups, per_layer: dict[str, np.ndarray]) -> np.ndarray:
    """Per class, the smallest value over its member channels (inf: no member given)."""
    result = np.full(groups.count, np.inf)
    for layer, values in per_layer.items():
        np.minimum.at(result, groups.layer_classes[layer], values)
    return result


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SemanticStrategy, GlobalStrategy, CategoryStrategy,
                                                                   SharedStrategy)}


def make_strategy(name: str, theta: float | None = None, ratio: float | None = None, step: int = 1,
                  centered: bool = True, representation: str | None = None) -> Strategy:
    """The strategy ``name`` with its parameter; a parameter that does not belong to it is an InputError."""
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name}: unknown strategy (choose from {', '.join(STRATEGIES)})")
    if STRATEGIES[name].parameter == "theta":
        if ratio is not None:
            raise InputError(f"--ratio applies to the ratio strategies; --strategy {name} takes --theta")
        theta = DEFAULT_THETA if theta is None else theta
        if not 0.0 <= theta <= 1.0:
            raise InputError(f"--theta must be in [0, 1], got {theta}")
        if step < 1:
            raise InputError(f"--step must be at least 1, got {step}")
        if representation not in (None, *REPRESENTATIONS):
            raise InputError(f"--cka-representation {representation}: choose from {', '.join(REPRESENTATIONS)}")
        return STRATEGIES[name](theta, step, centered,  # type: ignore[call-arg]
                                representation or DEFAULT_REPRESENTATION)
    if theta is not None:
        raise InputError(f"--theta applies to the Θ strategies; --strategy {name} takes --ratio")
    if step != 1 or not centered or representation is not None:
        option = "--step" if step != 1 else "--uncentered" if not centered else "--cka-representation"
        raise InputError(f"{option} applies to the Θ strategies only, not to --strategy {name}")
    ratio = DEFAULT_RATIO if ratio is None else ratio
    if not 0.0 < ratio <= 1.0:
        raise InputError(f"--ratio must be in (0, 1], got {ratio}")
    return STRATEGIES[name](ratio)  # type: ignore[call-arg]


def choose(ranking: Ranking, value: float, groups: SelectionGroups, round_to: int = 1) -> np.ndarray:
    """The kept classes at parameter ``value``: passing or forced, one per layer at least, rounded per group;
    the layers the ranking does not cover keep every class."""
    keep = ranking.passes(value) | groups.forced
    for layer, classes in groups.layer_classes.items():
        if layer not in ranking.layer_best:  # not sliced (e.g. not in the profile): kept whole
            keep[classes] = True
    for layer, best in ranking.layer_best.items():
        classes = groups.layer_classes[layer]
        if not keep[classes].any():
            keep[classes[best]] = True
    if round_to > 1:
        keep = round_groups(keep, ranking.score, groups.coupled, round_to)
    return keep


def round_groups(keep: np.ndarray, score: np.ndarray, coupled: np.ndarray, round_to: int) -> np.ndarray:
    """Keep a multiple of ``round_to`` classes in every coupled group (or all), adding the best-scoring ones."""
    keep = keep.copy()
    counts, sizes = np.bincount(coupled, weights=keep, minlength=coupled.max() + 1), np.bincount(coupled)
    targets = np.minimum(sizes, np.ceil(counts / round_to - RATIO_SLACK) * round_to).astype(np.int64)
    missing = targets - counts.astype(np.int64)
    for group in np.flatnonzero(missing > 0):
        candidates = np.flatnonzero((coupled == group) & ~keep)
        keep[candidates[ranking(score[candidates])[: missing[group]]]] = True
    return keep


def select(profile: Profile, metric: str, strategy: Strategy, groups: SelectionGroups | None = None,
           round_to: int = 1) -> Slice:
    """Slice every layer of the profile with ``strategy`` and contribution ``metric``, deciding on ``groups``
    (default: every neuron its own group, the paper's per-layer view)."""
    if metric not in profile.metrics:
        raise InputError(f"--metric {metric}: not in the profile (it has {', '.join(profile.metrics)})")
    groups = groups or SelectionGroups.independent(profile.layer_sizes)
    return slice_from_ranking(profile, metric, strategy, groups, strategy.rank(profile, metric, groups), round_to)


def slice_from_ranking(profile: Profile, metric: str, strategy: Strategy, groups: SelectionGroups,
                       ranked: Ranking, round_to: int) -> Slice:
    """The Slice at ``strategy.value`` of an already computed ranking (with its restructured size when known)."""
    if round_to < 1:
        raise InputError(f"--round-to must be at least 1, got {round_to}")
    missing = [layer for layer in profile.layers if layer not in groups.layer_classes]
    if missing:
        raise InputError(f"the profile names layer {missing[0]!r}, which is not a neuron layer of the model")
    keep = choose(ranked, strategy.value, groups, round_to)
    kept = groups.layer_kept(keep, profile.layers)
    per_category = {}
    for row, category in enumerate(ranked.categories):
        passing = groups.layer_kept(ranked.passes(strategy.value, row), profile.layers)
        for layer in profile.layers:
            per_category.setdefault(layer, {})[str(category)] = passing[layer]
    layers = {layer: LayerSlice(profile.layer_sizes[layer], kept[layer], per_category.get(layer, {}))
              for layer in profile.layers}
    settings = {"theta": None, "ratio": None, "centered": True, "step": 1, "representation": None,
                **strategy.settings()}
    restructured = groups.size(keep) if groups.cost is not None else None
    return Slice(model_sha256=profile.model_sha256, layers=layers, metric=metric, strategy=strategy.name,
                 data=profile.data, round_to=round_to, restructured=restructured,
                 kept_whole=dict(profile.excluded), **settings)

