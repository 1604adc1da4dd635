"""Profile a classifier: one pass over the data measures every neuron of every hidden layer per category.

The observed activations of the hidden neuron layers become extra graph outputs and onnxruntime reads
them batch by batch; per layer and category the pass keeps running sums of the metrics' per-sample values.
It reads the CKA samples first (the first ``max_per_class`` samples of each category), one category at a
time: their whole activations give that category's CKA statistics H, and are then forgotten, so memory holds
one category's activations and does not grow with the number of samples. Metrics that need only each
neuron's spatial mean then read the other samples through a second session whose graph outputs just the
means (onnxruntime computes every output of a graph, asked for or not), when they are enough to pay for
creating it; those samples are read into reused arrays and added a block of batches at a time. Every sample
runs once. A PyTorch pass over the same batches (onnx2torch) runs only when a gradient metric is asked for.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from hashlib import sha256
from pathlib import Path

import numpy as np
import onnx
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxslice.data import DataSource
from onnxslice.errors import InputError
from onnxslice.files import sha256_of
from onnxslice.graph import NeuronLayer, find_neuron_layers, load_model
from onnxslice.graph_utils import opset_version
from onnxslice.large import copy_model
from onnxslice.profiling.artifact import Profile
from onnxslice.profiling.batch import find_batch_axes
from onnxslice.profiling.metrics import LayerBatch, Metric, metrics_by_name
from onnxslice.profiling.similarity import SimilarityStatistics, as_samples_neurons_positions, similarity_statistics
from onnxslice.runtime import ReusedOutputs, Runner, scores_output, static_batch

#: Samples per category for the CKA statistics: H costs about C·n²·S multiply-adds per layer and category.
DEFAULT_MAX_PER_CLASS = 128
DEFAULT_BATCH_SIZE = 64
DEFAULT_METRICS = ("avg", "var", "ens")
#: The samples after the CKA ones go through a session that outputs only spatial means when they make at least
#: this many batches: creating it takes as long as 5–8 batches and saves 8–15 % of each (digits CNN, resnet18
#: 32×32 on 2 cores), so it pays for itself from about 40–90 batches on.
MEANS_SESSION_BATCHES = 100
#: Those samples' means are gathered into blocks of about this many bytes (as float64) before the metrics add them:
#: batch by batch, that Python work took about a fifth of the time of profiling the digits CNN; blocks larger than
#: this gained nothing more.
MEANS_BLOCK_BYTES = 2**20


def with_observed_outputs(model: onnx.ModelProto, layers: Sequence[NeuronLayer]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs each layer's observed activation."""
    return with_outputs(model, [layer.output for layer in layers])


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs each of ``tensors``."""
    extended = copy_model(model)
    known = {info.name: info for info in [*extended.graph.value_info, *extended.graph.input]}
    present = {out.name for out in extended.graph.output}
    for tensor in tensors:
        if tensor in present:
            continue
        info = known.get(tensor) or onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
        extended.graph.output.append(info)
        present.add(tensor)
    return extended


def with_spatial_means(model: onnx.ModelProto, layers: Sequence[NeuronLayer]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose graph also outputs each layer's spatial means, and their names: the observed
    activation averaged over every axis but the samples' (``layer.batch_axis``) and the neurons' (kept, of size 1).

    Conv channels first: GlobalAveragePool; other layouts: ReduceMean; an activation without positions, or one
    whose rank shape inference left unknown, is output whole.
    """
    extended = copy_model(model)
    graph = extended.graph
    tensors = {info.name: info.type.tensor_type for info in [*graph.value_info, *graph.output]}
    opset = opset_version(extended, onnx.defs.onnx_opset_version())
    present = {out.name for out in graph.output}
    names = []
    for layer in layers:
        tensor = tensors.get(layer.output)
        rank = len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else 2
        axes = [axis for axis in range(rank) if axis not in (layer.channel_axis % rank, layer.batch_axis % rank)]
        name = f"{layer.output}/onnxslice_spatial_mean" if axes else layer.output
        if axes and layer.channel_axis == 1 and layer.batch_axis == 0:
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


def cka_samples(labels: np.ndarray, categories: Sequence[int], cap: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Positions of the samples of the CKA statistics, the first ``cap`` of each category in data order (a list
    by category), and of all the other samples (in data order)."""
    first = [np.flatnonzero(labels == category)[:cap] for category in categories]
    others = np.ones(len(labels), bool)
    others[np.concatenate(first)] = False
    return first, np.flatnonzero(others)


def profile_model(
    model_path: str | Path | None,
    data: DataSource,
    metrics: Iterable[str] = DEFAULT_METRICS,
    max_per_class: int = DEFAULT_MAX_PER_CLASS,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    loaded: onnx.ModelProto | None = None,
) -> Profile:
    """Contributions (per metric) and CKA statistics (both forms, of whole maps and of spatial means) of every
    hidden neuron layer,
    per category of ``data`` and over all of it. ``loaded``: the canonical model of ``model_path`` when the
    caller has already loaded it (it is not loaded twice), or a model made in memory (``model_path`` None: the
    profile records the hash of the file it would be saved as)."""
    chosen = metrics_by_name(metrics)
    if max_per_class < 1:
        raise InputError(f"--max-per-class must be at least 1, got {max_per_class}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    model = loaded if loaded is not None else load_model(model_path)
    model_sha256 = sha256_of(model_path) if model_path is not None else sha256(model.SerializeToString()).hexdigest()
    model_path = model_path or "the model"
    scores_output(model)  # a model without class scores fails here, before any layer is looked at
    layers = find_neuron_layers(model).hidden
    if not layers:
        raise InputError(f"{model_path}: no hidden neuron layers (Conv, or Gemm / MatMul with a constant weight) "
                         "to profile")
    runner = Runner.create(with_observed_outputs(model, layers), device)
    data = runner.prepare(data)
    if len(data):  # where each layer's samples lie, found once (an empty data set fails below, with its reason)
        found = find_batch_axes(layers, lambda x, names: runner.run(x, outputs=names), data.samples(np.arange(1)),
                                static_batch(runner.session))
        layers, excluded = found.layers, found.excluded
        strict = [m.name for m in chosen if m.needs_batch_first]
        for layer in layers if strict else []:
            if layer.batch_axis != 0:
                excluded[layer.name] = (f"its samples lie on axis {layer.batch_axis} and {', '.join(strict)} reads "
                                        "them on axis 0 only; profile without it to measure this layer")
        layers = [layer for layer in layers if layer.name not in excluded]
        if not layers:
            raise InputError(f"{model_path}: no hidden neuron layer can be profiled: "
                             + "; ".join(f"{name}: {reason}" for name, reason in excluded.items()))
    else:
        excluded = {}
    gradients = None
    if any(m.needs_gradients for m in chosen):
        from onnxslice.profiling.gradients import GradientPass  # PyTorch: imported only when a metric needs it

        gradients = GradientPass(model, layers, device)
    categories = data.classes
    category_values = np.asarray(categories)
    averages = CategoryMeans(len(categories))
    similarity: dict[str, list[SimilarityStatistics]] = {layer.name: [] for layer in layers}
    mean_similarity: dict[str, list[SimilarityStatistics]] = {}
    first, rest = cka_samples(data.labels, categories, max_per_class)

    def measure(read: Callable[[np.ndarray], list[np.ndarray]], positions: np.ndarray,
                block: int) -> Iterator[list[np.ndarray]]:
        """Run the samples at ``positions`` through ``read`` in batches, gathered into blocks of ``block`` samples
        (one batch when the PyTorch pass runs: it takes a batch at a time); add each block's metric values and
        yield its outputs per layer as (n, C, S): whole activations, or spatial means (S = 1). A block of one batch
        is what ``read`` returned; a larger one, new arrays."""
        block = batch_size if gradients else block
        for start in range(0, len(positions), block):
            samples, outputs = positions[start:start + block], []
            for offset in range(0, len(samples), batch_size):
                x = data.samples(samples[offset:offset + batch_size])
                if len(x) == len(samples):
                    outputs = read(x)
                else:
                    read_now = read(x)
                    outputs = outputs or [np.empty(_resized(out.shape, layer.batch_axis, len(samples)), out.dtype)
                                          for layer, out in zip(layers, read_now, strict=True)]
                    for layer, whole, out in zip(layers, outputs, read_now, strict=True):  # along the batch axis
                        np.moveaxis(whole, layer.batch_axis, 0)[offset:offset + len(x)] = \
                            np.moveaxis(out, layer.batch_axis, 0)
                bar.update(len(x))
            labels = data.labels[samples]
            activations = [as_samples_neurons_positions(out, layer.channel_axis, layer.batch_axis)
                           for layer, out in zip(layers, outputs, strict=True)]
            torch_batch = gradients.batch(x, labels) if gradients else None  # x: the block's one batch
            averages.add(np.searchsorted(category_values, labels),
                         _sample_values(chosen, [LayerBatch(layer, activation, torch_batch)
                                                 for layer, activation in zip(layers, activations, strict=True)]))
            yield activations

    show = progress and sys.stderr.isatty()
    # BLAS threads would fight onnxruntime's and PyTorch's own over the small per-batch products; H runs a layer
    # per core instead: its many small products keep one core busier than BLAS threads sharing each product
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_usable_cores()) as pool, \
            tqdm(total=len(data), desc="profile", unit="sample", file=sys.stderr, disable=not show) as bar:
        names = [layer.output for layer in layers]  # the graph outputs read
        for positions in first:  # one category's CKA samples: their H from the whole activations, then forgotten
            kept = [np.concatenate(parts) if len(parts) > 1 else parts[0]  # new arrays from every run
                    for parts in zip(*measure(partial(runner.run, outputs=names), positions, len(positions)),
                                     strict=True)]
            for layer, statistics in zip(layers, pool.map(similarity_statistics, kept), strict=True):
                similarity[layer.name].append(statistics)
            spread = [(layer, acts) for layer, acts in zip(layers, kept, strict=True) if acts.shape[2] > 1]
            means = pool.map(similarity_statistics, [acts.mean(axis=2, keepdims=True) for _, acts in spread])
            for (layer, _), statistics in zip(spread, means, strict=True):
                mean_similarity.setdefault(layer.name, []).append(statistics)
            del kept, spread
        block = batch_size
        if math.ceil(len(rest) / batch_size) >= MEANS_SESSION_BATCHES and not any(m.reads_positions for m in chosen):
            del runner  # one session at a time: each holds the weights
            means_model, names = with_spatial_means(model, layers)
            runner = Runner.create(means_model, device)
            block *= max(1, MEANS_BLOCK_BYTES // (batch_size * 8 * sum(layer.size for layer in layers)))
        for _ in measure(ReusedOutputs(runner, names), rest, block):  # a block's values are added before the next
            pass
    contributions = {metric.name: {layer.name: metric.combine(averages.means(layer.name)) for layer in layers}
                     for metric in chosen}
    profile = Profile(
        model_sha256=model_sha256, data=data.name, metrics=[m.name for m in chosen], categories=categories,
        layer_sizes={layer.name: layer.size for layer in layers},
        samples={c: int(n) for c, n in zip(categories, averages.counts, strict=True)},
        contributions=contributions, similarity=similarity, max_per_class=max_per_class,
        mean_similarity=mean_similarity, excluded=excluded,
    )
    problem = profile.problem()
    if problem:  # e.g. activations that overflow: a slice from them would be silently wrong
        raise InputError(f"{model_path} on {data.name}: the profile's {problem}")
    return profile


def _resized(shape: tuple[int, ...], axis: int, size: int) -> tuple[int, ...]:
    """``shape`` with ``size`` entries along ``axis``."""
    return tuple(size if a == axis % len(shape) else d for a, d in enumerate(shape))


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one, as on Linux)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sample_values(metrics: Sequence[Metric], batches: Sequence[LayerBatch]) -> dict[tuple[str, str], np.ndarray]:
    """The metrics' named per-sample values of every layer, by (layer, name): metrics naming the same value share it."""
    return {(batch.layer.name, name): value for batch in batches for metric in metrics
            for name, value in metric.sample_values(batch).items()}
