"""Contribution metrics: how much each neuron of a layer matters, per category (paper §2.3).

Every metric is one small class behind one interface, found by name in :data:`METRICS`:

- :meth:`Metric.sample_values` turns one batch of one layer into named per-sample, per-neuron values
  (n × C). The profiler averages every named value per category and over all samples, in one pass,
  so memory does not grow with the data. Metrics that name the same value share it.
- :meth:`Metric.combine` turns those averages (one row per category, then one over all samples)
  into the contributions.

Adding a metric is one subclass decorated with :func:`register`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from onnxslice.errors import InputError
from onnxslice.graph import NeuronLayer

if TYPE_CHECKING:
    from onnxslice.profiling.gradients import GradientBatch


@dataclass
class LayerBatch:
    """One batch seen by one neuron layer."""

    layer: NeuronLayer
    activation: np.ndarray  #: (n, C, S) observed activation, read through onnxruntime (see Metric.reads_positions)
    gradients: GradientBatch | None  #: the PyTorch pass over the same batch, when a metric needs gradients

    @cached_property
    def spatial_mean(self) -> np.ndarray:
        """(n, C) each neuron's activation averaged over its positions (a conv channel's spatial mean)."""
        n, neurons, positions = self.activation.shape
        if positions == 1:
            return self.activation[:, :, 0].astype(np.float64)
        weights = np.full(positions, 1.0 / positions, self.activation.dtype)
        # a float32 BLAS product: about 1e-7 relative error, a third of the time of numpy's float64 mean
        return (self.activation.reshape(n * neurons, positions) @ weights).reshape(n, neurons).astype(np.float64)

    @cached_property
    def spatial_mean_squared(self) -> np.ndarray:
        return self.spatial_mean**2

    def torch_values(self) -> GradientBatch:
        if self.gradients is None:
            raise RuntimeError("a gradient metric was given a batch without its PyTorch pass")
        return self.gradients


class Metric(ABC):
    """A neuron contribution metric, computed per category from per-sample values averaged in one pass."""

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = False
    #: Whether :meth:`sample_values` reads ``batch.activation`` position by position. A metric that needs only
    #: each neuron's spatial mean (or only gradients) says False: once the CKA samples are taken, the profiler
    #: then reads just the spatial means from onnxruntime, and ``batch.activation`` holds them as one position.
    reads_positions: ClassVar[bool] = True
    #: Whether it can read only layers whose samples lie on axis 0 (others are then not profiled, with the reason).
    needs_batch_first: ClassVar[bool] = False

    @abstractmethod
    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        """Named (n, C) per-sample values whose averages :meth:`combine` needs."""

    @abstractmethod
    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        """Contributions (rows, C) from the per-row averages (rows, C) of the named values."""


METRICS: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    METRICS[cls.name] = cls
    return cls


def metrics_by_name(names: Iterable[str]) -> list[Metric]:
    """The metric objects for ``names`` (duplicates dropped, order kept); an unknown name is an InputError."""
    chosen: list[Metric] = []
    for name in dict.fromkeys(names):
        if name not in METRICS:
            raise InputError(f"--metric {name}: unknown metric (choose from {', '.join(METRICS)})")
        chosen.append(METRICS[name]())
    if not chosen:
        raise InputError("--metric: give at least one metric")
    return chosen


def min_max(rows: np.ndarray) -> np.ndarray:
    """Scale each row to [0, 1]; a constant row becomes zeros."""
    low = rows.min(axis=-1, keepdims=True)
    span = rows.max(axis=-1, keepdims=True) - low
    return np.divide(rows - low, span, out=np.zeros_like(rows, dtype=np.float64), where=span > 0)


@register
class Avg(Metric):
    """Mean activation of each neuron (of its spatial mean, for a conv channel)."""

    name = "avg"
    reads_positions = False

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        return {"mean": batch.spatial_mean}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return means["mean"]


@register
class Var(Metric):
    """Population variance over samples of each neuron's activation (of its spatial mean, for a conv channel)."""

    name = "var"
    reads_positions = False

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        return {"mean": batch.spatial_mean, "square": batch.spatial_mean_squared}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.maximum(means["square"] - means["mean"] ** 2, 0.0)


@register
class Ens(Metric):
    """Avg and Var, each min-max normalised to [0, 1] within the layer, summed."""

    name = "ens"
    reads_positions = False

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        return {**Avg().sample_values(batch), **Var().sample_values(batch)}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return min_max(Avg().combine(means)) + min_max(Var().combine(means))


@register
class Taylor(Metric):
    """First-order Taylor estimate of the change of the category's logit when the neuron is zeroed
    (Molchanov et al.): |Σ_positions activation · ∂logit/∂activation| per sample, averaged over samples."""

    name = "taylor"
    reads_positions = False
    needs_gradients = True

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        activation, gradient = batch.torch_values().activation_and_gradient(batch.layer)
        return {"taylor": np.abs((activation * gradient).sum(axis=2, dtype=np.float64))}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return means["taylor"]


@register
class DeepLift(Metric):
    """captum's LayerDeepLift with a zero baseline and the category's logit as target, summed over positions.

    Taken as a magnitude per sample, like Taylor: a neuron that pushes the logit strongly down matters
    as much to the decision as one that pushes it up; the signed average would let them cancel.
    """

    name = "deeplift"
    reads_positions = False
    needs_gradients = True
    needs_batch_first = True  # captum runs inputs and baselines as one batch, split again along axis 0 of the layer

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        from captum.attr import LayerDeepLift

        torch_batch = batch.torch_values()
        explainer = LayerDeepLift(torch_batch.model, torch_batch.module(batch.layer))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # captum warns about the hooks it sets on every call
            attribution = explainer.attribute(torch_batch.inputs, baselines=0.0, target=torch_batch.targets)
        per_position = torch_batch.as_numpy(attribution, batch.layer)
        return {"deeplift": np.abs(per_position.sum(axis=2, dtype=np.float64))}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return means["deeplift"]
