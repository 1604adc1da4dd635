"""Unstructured magnitude pruning: which weights of each layer stay, for a target overall sparsity.

Each method is one small class behind :class:`PruningMethod`, chosen by name in :data:`METHODS`. A
method sees the prunable weights of a model (the constant weights of its Conv / Gemm / MatMul layers,
in graph order) and a target sparsity S: the fraction of all their entries to set to zero. It returns
one boolean keep mask per weight. Layer allocations follow the reference implementation of Lee et al.
(github.com/jaeho-lee/layer-adaptive-sparsity, ``tools/pruners.py``):

- ``global`` (Global magnitude): one threshold on |w| over all layers.
- ``lamp`` (Lee et al. 2020, "Layer-adaptive sparsity for the magnitude-based pruning"): one threshold
  on the LAMP score, score(u) = w_u² / Σ_{v ≥ u} w_v² with a layer's weights sorted by ascending magnitude.
- ``uniform`` (Uniform+, Gale et al. 2019): the same sparsity in every layer, except that a first layer
  that is a convolution stays dense and the last layer keeps at least 20% of its weights.
- ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020): layer density ∝ (n_in + n_out + k_h + k_w) /
  (n_in · n_out · k_h · k_w) (the sum over the weight's dimensions over their product), scaled so that
  the total matches; a layer whose density would exceed 1 is kept dense and the rest rescaled.

Ties at a threshold are broken by position (a stable sort), so exactly round((1 - S) · N) weights stay
(per layer for the layer-wise methods).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from onnxslice.errors import InputError, SparsityUnreachable

#: Uniform+: the last layer keeps at least this fraction of its weights (Gale et al. 2019).
LAST_LAYER_MIN_DENSITY = 0.2


@dataclass(frozen=True)
class Prunable:
    """One prunable weight of the model."""

    name: str  #: initializer name
    values: np.ndarray
    op_type: str  #: Conv, Gemm or MatMul of the (first) layer that reads it


class PruningMethod(ABC):
    """Chooses the weights that stay for a target overall sparsity."""

    name: ClassVar[str]

    @abstractmethod
    def keep_masks(self, weights: Sequence[Prunable], sparsity: float) -> list[np.ndarray]:
        """One boolean mask per weight (True = keep) with about ``sparsity`` of all entries pruned."""


def keep_largest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` entries with the largest score (ties: the later position wins)."""
    flat = scores.reshape(-1)
    keep = np.zeros(flat.size, bool)
    if count > 0:
        keep[np.argsort(flat, kind="stable")[flat.size - count:]] = True
    return keep.reshape(scores.shape)


def survivors(total: int, sparsity: float) -> int:
    return int(np.clip(round((1.0 - sparsity) * total), 0, total))


def threshold_globally(scores: Sequence[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """Keep the entries with the largest scores over all layers together."""
    flat = np.concatenate([s.reshape(-1) for s in scores])
    keep = keep_largest(flat, survivors(flat.size, sparsity))
    bounds = np.cumsum([0, *(s.size for s in scores)])
    return [keep[a:b].reshape(s.shape) for a, b, s in zip(bounds[:-1], bounds[1:], scores, strict=True)]


def by_magnitude(weights: Sequence[Prunable], densities: Sequence[float]) -> list[np.ndarray]:
    """Per layer, keep the ``round(density · n)`` weights of largest magnitude."""
    return [keep_largest(np.abs(w.values), survivors(w.values.size, 1.0 - d))
            for w, d in zip(weights, densities, strict=True)]


def lamp_scores(weight: np.ndarray) -> np.ndarray:
    """LAMP score of every entry: w_u² / Σ_{v ≥ u} w_v², v running over the entries at least as large
    (in the ascending-magnitude order)."""
    squares = np.square(weight.astype(np.float64)).reshape(-1)
    order = np.argsort(squares, kind="stable")
    ordered = squares[order]
    tails = np.cumsum(ordered[::-1])[::-1]  # Σ of the entry and all after it in ascending order
    scores = np.zeros_like(squares)
    scores[order] = np.divide(ordered, tails, out=np.zeros_like(ordered), where=tails > 0)
    return scores.reshape(weight.shape)


def erk_densities(shapes: Sequence[tuple[int, ...]], density: float) -> list[float]:
    """Per-layer densities of ERK for an overall ``density``: d_l = ε · Σ dims / Π dims, capped at 1 by
    keeping the layer with the largest excess dense and solving for ε again over the others."""
    sizes = np.array([float(np.prod(s)) for s in shapes])
    raw = np.array([sum(s) / np.prod(s, dtype=np.float64) for s in shapes])
    dense = np.zeros(len(shapes), bool)
    while True:
        budget = density * sizes.sum() - sizes[dense].sum()
        epsilon = budget / (raw[~dense] * sizes[~dense]).sum() if (~dense).any() else 0.0
        wanted = np.where(dense, 1.0, epsilon * raw)
        if wanted.max() <= 1.0 + 1e-12:
            return [float(min(d, 1.0)) for d in wanted]
        dense[np.argmax(np.where(dense, -np.inf, wanted))] = True


class GlobalMagnitude(PruningMethod):
    name: ClassVar[str] = "global"

    def keep_masks(self, weights: Sequence[Prunable], sparsity: float) -> list[np.ndarray]:
        return threshold_globally([np.abs(w.values) for w in weights], sparsity)


class Lamp(PruningMethod):
    name: ClassVar[str] = "lamp"

    def keep_masks(self, weights: Sequence[Prunable], sparsity: float) -> list[np.ndarray]:
        return threshold_globally([lamp_scores(w.values) for w in weights], sparsity)


class UniformPlus(PruningMethod):
    name: ClassVar[str] = "uniform"

    def keep_masks(self, weights: Sequence[Prunable], sparsity: float) -> list[np.ndarray]:
        return by_magnitude(weights, self.densities(weights, sparsity))

    @staticmethod
    def densities(weights: Sequence[Prunable], sparsity: float) -> list[float]:
        """One shared sparsity for the pruned layers; a first Conv stays dense, the last keeps ≥ 20%."""
        sizes = np.array([w.values.size for w in weights], dtype=np.float64)
        pruned = np.ones(len(weights), bool)
        if weights[0].op_type == "Conv" and len(weights) > 1:
            pruned[0] = False
        to_prune = sparsity * sizes.sum()
        shared = to_prune / sizes[pruned].sum()
        last_cap = 1.0 - LAST_LAYER_MIN_DENSITY
        densities = np.where(pruned, 1.0 - shared, 1.0)
        if len(weights) > 1 and shared > last_cap:
            middle = pruned.copy()
            middle[-1] = False
            shared = (to_prune - last_cap * sizes[-1]) / sizes[middle].sum() if middle.any() else 1.0
            densities = np.where(middle, 1.0 - shared, densities)
            densities[-1] = LAST_LAYER_MIN_DENSITY
        if shared > 1.0 + 1e-12:
            raise SparsityUnreachable(f"Uniform+ cannot reach sparsity {sparsity:.3f}: the first layer stays "
                                      f"dense and the last keeps {LAST_LAYER_MIN_DENSITY:.0%}")
        return [float(np.clip(d, 0.0, 1.0)) for d in densities]


class Erk(PruningMethod):
    name: ClassVar[str] = "erk"

    def keep_masks(self, weights: Sequence[Prunable], sparsity: float) -> list[np.ndarray]:
        return by_magnitude(weights, erk_densities([w.values.shape for w in weights], 1.0 - sparsity))


METHODS: dict[str, type[PruningMethod]] = {cls.name: cls for cls in (Lamp, GlobalMagnitude, UniformPlus, Erk)}


def make_method(name: str) -> PruningMethod:
    if name not in METHODS:
        raise InputError(f"--method {name}: unknown pruning method (choose from {', '.join(METHODS)})")
    return METHODS[name]()
