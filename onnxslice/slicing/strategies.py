"""Neuron selection strategies: which neurons of each layer are critical, from a Profile alone.

Each strategy is one small class behind :class:`Strategy`, chosen by name in :data:`STRATEGIES`:

- ``global`` (paper §3.1): the top ``ceil(R·C)`` neurons of each layer by contribution over all data.
- ``category`` (paper §3.1): the top ``ceil(R·C)`` per category, then the union over categories.
- ``semantic`` (paper §3.3, Algorithm 1): per category, neurons by decreasing contribution, the
  smallest prefix whose linear CKA with the whole layer exceeds Θ (exact prefix scan of
  :mod:`onnxslice.slicing.cka`), then the union over categories.

Ordering: decreasing contribution, ties by increasing neuron index (a stable sort); a NaN contribution
ranks last. The semantic scan only walks the neurons with a non-zero row in H: a neuron that is
constant on a category cannot raise the CKA, so it is never selected for that category. Every layer
keeps at least one neuron (the one with the highest contribution over all data).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from onnxslice.errors import InputError
from onnxslice.profile.artifact import Profile
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.cka import live_neurons, smallest_prefix

DEFAULT_THETA = 0.95
DEFAULT_RATIO = 0.5


def ranking(contribution: np.ndarray) -> np.ndarray:
    """Neuron indices by decreasing contribution; ties keep index order, NaN ranks last."""
    values = np.nan_to_num(np.asarray(contribution, dtype=np.float64), nan=-np.inf)
    return np.argsort(-values, kind="stable")


def top(contribution: np.ndarray, ratio: float) -> list[int]:
    """The ``ceil(ratio · C)`` neurons with the highest contribution, sorted by index."""
    count = max(1, math.ceil(ratio * len(contribution) - 1e-9))
    return sorted(int(i) for i in ranking(contribution)[:count])


class Strategy(ABC):
    """Selects the critical neurons of one layer from a profile and a contribution metric."""

    name: ClassVar[str]

    @abstractmethod
    def per_category(self, profile: Profile, metric: str, layer: str) -> dict[int, list[int]]:
        """Critical neurons of ``layer`` per category; empty for a strategy that ignores categories."""

    def select_layer(self, profile: Profile, metric: str, layer: str) -> LayerSlice:
        """The layer's slice: the union over categories (never empty)."""
        chosen = self.per_category(profile, metric, layer)
        kept = sorted(set().union(*chosen.values())) if chosen else []
        if not kept:
            kept = [int(ranking(profile.contribution(metric, layer))[0])]
        return LayerSlice(profile.layer_sizes[layer], kept, {str(c): v for c, v in chosen.items()})

    def settings(self) -> dict:
        """The fields recorded in the slice (theta, ratio, centered, step)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class GlobalStrategy(Strategy):
    """Top ``ratio`` of each layer by contribution over the whole data set."""

    ratio: float
    name: ClassVar[str] = "global"

    def per_category(self, profile: Profile, metric: str, layer: str) -> dict[int, list[int]]:
        return {}

    def select_layer(self, profile: Profile, metric: str, layer: str) -> LayerSlice:
        return LayerSlice(profile.layer_sizes[layer], top(profile.contribution(metric, layer), self.ratio))


@dataclass
class CategoryStrategy(Strategy):
    """Top ``ratio`` of each layer per category, then the union."""

    ratio: float
    name: ClassVar[str] = "category"

    def per_category(self, profile: Profile, metric: str, layer: str) -> dict[int, list[int]]:
        return {c: top(profile.contribution(metric, layer, c), self.ratio) for c in profile.categories}


@dataclass
class SemanticStrategy(Strategy):
    """Per category the smallest contribution-ordered prefix with CKA > ``theta``, then the union."""

    theta: float
    step: int = 1
    centered: bool = True
    name: ClassVar[str] = "semantic"

    def per_category(self, profile: Profile, metric: str, layer: str) -> dict[int, list[int]]:
        if layer not in profile.similarity:
            raise InputError(f"the profile has no CKA statistics for layer {layer!r}")
        return {c: self.critical(profile.similarity_matrix(layer, c, self.centered),
                                 profile.contribution(metric, layer, c)) for c in profile.categories}

    def critical(self, h: np.ndarray, contribution: np.ndarray) -> list[int]:
        """The smallest prefix of the live neurons, by contribution, whose CKA exceeds Θ; sorted by index."""
        order = ranking(contribution)
        order = order[live_neurons(h)[order]]
        return sorted(int(i) for i in order[:smallest_prefix(h, order, self.theta, self.step)])


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SemanticStrategy, GlobalStrategy, CategoryStrategy)}


def make_strategy(name: str, theta: float | None = None, ratio: float | None = None, step: int = 1,
                  centered: bool = True) -> Strategy:
    """The strategy ``name`` with its parameter; a parameter that does not belong to it is an InputError."""
    if name not in STRATEGIES:
        raise InputError(f"--strategy {name}: unknown strategy (choose from {', '.join(STRATEGIES)})")
    if name == "semantic":
        if ratio is not None:
            raise InputError("--ratio applies to the global and category strategies; semantic slicing takes --theta")
        theta = DEFAULT_THETA if theta is None else theta
        if not 0.0 <= theta <= 1.0:
            raise InputError(f"--theta must be in [0, 1], got {theta}")
        if step < 1:
            raise InputError(f"--step must be at least 1, got {step}")
        return SemanticStrategy(theta, step, centered)
    if theta is not None:
        raise InputError(f"--theta applies to semantic slicing; --strategy {name} takes --ratio")
    if step != 1 or not centered:
        option = "--step" if step != 1 else "--uncentered"
        raise InputError(f"{option} applies to semantic slicing only, not to --strategy {name}")
    ratio = DEFAULT_RATIO if ratio is None else ratio
    if not 0.0 < ratio <= 1.0:
        raise InputError(f"--ratio must be in (0, 1], got {ratio}")
    return STRATEGIES[name](ratio)  # type: ignore[call-arg]


def select(profile: Profile, metric: str, strategy: Strategy) -> Slice:
    """Slice every layer of the profile with ``strategy`` and contribution ``metric``."""
    if metric not in profile.metrics:
        raise InputError(f"--metric {metric}: not in the profile (it has {', '.join(profile.metrics)})")
    layers = {layer: strategy.select_layer(profile, metric, layer) for layer in profile.layers}
    settings = {"theta": None, "ratio": None, "centered": True, "step": 1, **strategy.settings()}
    return Slice(model_sha256=profile.model_sha256, layers=layers, metric=metric, strategy=strategy.name,
                 data=profile.data, **settings)
