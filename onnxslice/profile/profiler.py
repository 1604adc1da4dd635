"""Profile a classifier: one pass over the data measures every neuron of every hidden layer per category.

The observed activations of the hidden neuron layers become extra graph outputs and onnxruntime reads
them batch by batch. Per layer and category the pass keeps running sums of the metrics' per-sample
values and the first ``max_per_class`` samples' activations (only their positions in the data when
those would not fit in ``KEPT_BYTES``: the model then runs again on each category's samples), from
which the CKA statistics H are computed at the end, one category at a time; nothing else is kept, so
memory does not grow with the number of samples. Once a batch holds none of those samples, metrics that
need only each neuron's spatial mean read just the means, which the graph also computes and outputs.
A PyTorch pass over the same batches (onnx2torch) runs only when a gradient metric is asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxslice.data import DataSource
from onnxslice.errors import InputError
from onnxslice.files import sha256_of
from onnxslice.graph import NeuronLayer, find_neuron_layers, load_model
from onnxslice.large import copy_model
from onnxslice.profile.artifact import Profile
from onnxslice.profile.gradients import GradientPass
from onnxslice.profile.metrics import LayerBatch, Metric, metrics_by_name
from onnxslice.runtime import Runner, scores_output
from onnxslice.slicing.cka import SimilarityStatistics, as_samples_neurons_positions, similarity_statistics

#: Samples per category for the CKA statistics: H costs about C·n²·S multiply-adds per layer and category.
DEFAULT_MAX_PER_CLASS = 128
DEFAULT_BATCH_SIZE = 64
DEFAULT_METRICS = ("avg", "var", "ens")
#: The CKA samples' activations are kept during the pass while they fit here (else recomputed per category).
KEPT_BYTES = 2 * 2**30


def with_observed_outputs(model: onnx.ModelProto, layers: Sequence[NeuronLayer]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs each layer's observed activation."""
    extended = copy_model(model)
    known = {info.name: info for info in [*extended.graph.value_info, *extended.graph.input]}
    present = {out.name for out in extended.graph.output}
    for layer in layers:
        if layer.output in present:
            continue
        info = known.get(layer.output) or onnx.helper.make_tensor_value_info(layer.output, onnx.TensorProto.FLOAT,
                                                                            None)
        extended.graph.output.append(info)
        present.add(layer.output)
    return extended


def with_spatial_means(model: onnx.ModelProto, layers: Sequence[NeuronLayer]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose graph also outputs each layer's spatial means, and their names: the observed
    activation averaged over every axis but the samples' and the neurons' (kept, of size 1).

    Conv channels first: GlobalAveragePool; other layouts: ReduceMean; an activation without positions, or one
    whose rank shape inference left unknown, is output whole.
    """
    extended = copy_model(model)
    graph = extended.graph
    tensors = {info.name: info.type.tensor_type for info in [*graph.value_info, *graph.output]}
    opset = next(o.version for o in extended.opset_import if o.domain in ("", "ai.onnx"))
    present = {out.name for out in graph.output}
    names = []
    for layer in layers:
        tensor = tensors.get(layer.output)
        rank = len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else 2
        axes = [axis for axis in range(1, rank) if axis != layer.channel_axis % rank]
        name = f"{layer.output}/onnxslice_spatial_mean" if axes else layer.output
        if axes and layer.channel_axis == 1:
            graph.node.append(onnx.helper.make_node("GlobalAveragePool", [layer.output], [name]))
        elif axes and opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), f"{name}/axes"))
            graph.node.append(onnx.helper.make_node("ReduceMean", [layer.output, f"{name}/axes"], [name]))
        elif axes:
            graph.node.append(onnx.helper.make_node("ReduceMean", [layer.output], [name], axes=axes))
        if name not in present:
            element = tensor.elem_type if tensor is not None else onnx.TensorProto.FLOAT
            graph.output.append(onnx.helper.make_tensor_value_info(name, element, None))
            present.add(name)
        names.append(name)
    return extended, names


class CategoryMeans:
    """Running float64 sums, per category, of per-sample values (n, C) named by (layer, value): memory
    independent of N."""

    def __init__(self, categories: int) -> None:
        self.counts = np.zeros(categories, np.int64)
        self.sums: dict[tuple[str, str], np.ndarray] = {}

    def add(self, rows: np.ndarray, values: dict[tuple[str, str], np.ndarray]) -> None:
        """Add a batch: the category row of each sample and the (layer, name) values of each sample."""
        one_hot = np.zeros((len(self.counts), len(rows)))
        one_hot[rows, np.arange(len(rows))] = 1.0
        self.counts += np.bincount(rows, minlength=len(self.counts))
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + one_hot @ value

    def means(self, layer: str) -> dict[str, np.ndarray]:
        """Per value of ``layer``: (categories + 1, C) averages, a row per category and the last over all samples."""
        counts = np.append(self.counts, self.counts.sum())[:, None]
        return {name: np.vstack([total, total.sum(axis=0)]) / counts
                for (of, name), total in self.sums.items() if of == layer}


class FirstSamples:
    """The first ``cap`` samples of each category, in data order: the samples of the CKA statistics.

    Their activations are kept as they stream past while all of them fit in ``budget`` bytes (judged on the
    first batch); beyond it only their positions in the data are kept and :meth:`activations` runs the model
    again on one category at a time, so that memory holds one category's activations, not all of them.
    """

    def __init__(self, layers: Sequence[str], categories: int, cap: int, budget: int) -> None:
        self.layers, self.cap, self.budget = layers, cap, budget
        self.counts = np.zeros(categories, np.int64)
        self.positions: list[list[np.ndarray]] = [[] for _ in range(categories)]
        self.kept: list[dict[str, list[np.ndarray]]] | None = None  # per category, per layer, while in memory

    def wants(self, rows: np.ndarray) -> bool:
        """Whether a batch of these category rows holds samples to keep."""
        return bool((self.counts[rows] < self.cap).any())

    def add(self, start: int, rows: np.ndarray, activations: Sequence[np.ndarray]) -> None:
        """Note a batch starting at sample ``start``: its category rows and its (n, C, S) activations per layer."""
        if not self.wants(rows):
            return
        if not self.counts.any():  # the first batch: judge whether the kept activations fit the budget
            per_sample = sum(a.nbytes for a in activations) / len(rows)
            if len(self.counts) * self.cap * per_sample <= self.budget:
                self.kept = [{layer: [] for layer in self.layers} for _ in self.counts]
        for row in np.unique(rows):
            taken = np.flatnonzero(rows == row)[:self.cap - self.counts[row]]
            self.positions[row].append(start + taken)
            self.counts[row] += len(taken)
            if self.kept is not None:
                for layer, activation in zip(self.layers, activations, strict=True):
                    self.kept[row][layer].append(activation[taken])  # a copy: the batch is not retained

    def activations(self, row: int, observe: Callable[[np.ndarray], list[np.ndarray]], data: DataSource,
                    batch_size: int) -> dict[str, np.ndarray]:
        """(n, C, S) activations of every layer on the kept samples of category ``row`` (then forgotten)."""
        if self.kept is not None:
            kept, self.kept[row] = self.kept[row], {}
            return {layer: np.concatenate(parts) for layer, parts in kept.items()}
        positions = np.concatenate(self.positions[row])
        batches = [observe(data.samples(positions[i:i + batch_size])) for i in range(0, len(positions), batch_size)]
        return {layer: np.concatenate(parts) for layer, parts in zip(self.layers, zip(*batches, strict=True),
                                                                      strict=True)}


def profile_model(
    model_path: str | Path,
    data: DataSource,
    metrics: Iterable[str] = DEFAULT_METRICS,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    loaded: onnx.ModelProto | None = None,
    kept_bytes: int = KEPT_BYTES,
) -> Profile:
    """Contributions (per metric) and CKA statistics (both forms) of every hidden neuron layer,
    per category of ``data`` and over all of it. ``loaded``: the canonical model of ``model_path`` when the
    caller has already loaded it (it is not loaded twice). ``kept_bytes``: see :class:`FirstSamples`."""
    chosen = metrics_by_name(metrics)
    if max_per_class < 1:
        raise InputError(f"--max-per-class must be at least 1, got {max_per_class}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    model = loaded if loaded is not None else load_model(model_path)
    model_sha256 = sha256_of(model_path)
    scores_output(model)  # a model without class scores fails here, before any layer is looked at
    layers = find_neuron_layers(model).hidden
    if not layers:
        raise InputError(f"{model_path}: no hidden neuron layers (Conv, or Gemm / MatMul with a constant weight) "
                         "to profile")
    reads_positions = any(metric.reads_positions for metric in chosen)
    extended, mean_outputs = with_observed_outputs(model, layers), []
    if not reads_positions:  # once a batch holds no CKA sample, its spatial means are all the metrics need
        extended, mean_outputs = with_spatial_means(extended, layers)
    runner = Runner.create(extended, device)
    data = runner.prepare(data)
    gradients = GradientPass(model, layers, device) if any(m.needs_gradients for m in chosen) else None
    categories = data.classes
    category_values = np.asarray(categories)
    averages = CategoryMeans(len(categories))
    first = FirstSamples([layer.name for layer in layers], len(categories), max_per_class, kept_bytes)
    observed = [layer.output for layer in layers]

    def observe(x: np.ndarray, spatial_means_only: bool = False) -> list[np.ndarray]:
        """(n, C, S) activations per layer, or only their (n, C, 1) spatial means."""
        outputs = runner.run(x, mean_outputs if spatial_means_only else observed)
        return [as_samples_neurons_positions(out, layer.channel_axis)
                for layer, out in zip(layers, outputs, strict=True)]

    show = progress and sys.stderr.isatty()
    start = 0
    # BLAS threads would fight onnxruntime's and PyTorch's own over the small per-batch products
    with threadpool_limits(1, user_api="blas"), \
            tqdm(total=len(data), desc="profile", unit="sample", file=sys.stderr, disable=not show) as bar:
        for x, labels in data.batches(batch_size):
            rows = np.searchsorted(category_values, labels)
            wanted = first.wants(rows)
            activations = observe(x, spatial_means_only=not (wanted or reads_positions))
            torch_batch = gradients.batch(x, labels) if gradients else None
            averages.add(rows, _sample_values(chosen, [LayerBatch(layer, activation, torch_batch)
                                                    for layer, activation in zip(layers, activations, strict=True)]))
            if wanted:
                first.add(start, rows, activations)
            start += len(labels)
            bar.update(len(labels))
    contributions = {metric.name: {layer.name: metric.combine(averages.means(layer.name)) for layer in layers}
                     for metric in chosen}
    similarity: dict[str, list[SimilarityStatistics]] = {layer.name: [] for layer in layers}
    # a layer per core: its many small products keep one core busier than BLAS threads sharing each product
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_usable_cores()) as pool:
        for row in tqdm(range(len(categories)), desc="CKA statistics", unit="category", file=sys.stderr,
                        disable=not show):
            kept = first.activations(row, observe, data, batch_size)
            for layer, statistics in zip(kept, pool.map(similarity_statistics, kept.values()), strict=True):
                similarity[layer].append(statistics)
    return Profile(
        model_sha256=model_sha256, data=data.name, metrics=[m.name for m in chosen], categories=categories,
        layer_sizes={layer.name: layer.size for layer in layers},
        samples={c: int(n) for c, n in zip(categories, averages.counts, strict=True)},
        contributions=contributions, similarity=similarity, max_per_class=max_per_class,
    )


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one, as on Linux)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sample_values(metrics: Sequence[Metric], batches: Sequence[LayerBatch]) -> dict[tuple[str, str], np.ndarray]:
    """The metrics' named per-sample values of every layer, by (layer, name): metrics naming the same value share it."""
    return {(batch.layer.name, name): value for batch in batches for metric in metrics
            for name, value in metric.sample_values(batch).items()}
