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
from dataclasses import dataclass
from functools import partial
from hashlib import sha256
from pathlib import Path

import numpy as np
import onnx
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxslice import runtime
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
    independent of N. Sums of disjoint parts of the data add up (:meth:`merge`), so parts can be measured apart."""

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

    def merge(self, other: CategoryMeans) -> None:
        """Add the sums and counts of ``other``, measured on samples disjoint from this one's."""
        self.counts += other.counts
        for key, total in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + total

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


@dataclass
class ProfileSetup:
    """What every part of a profile reads, decided once: the model with its layers' activations as outputs (and
    the session running it, which a part may replace), the data shaped for it, the profiled layers (their batch
    axes found) and the layers kept whole, with the reason."""

    model: onnx.ModelProto
    runner: Runner | None
    data: DataSource
    layers: list[NeuronLayer]
    excluded: dict[str, str]

    @property
    def categories(self) -> list[int]:
        return self.data.classes


def prepare_profile(model: onnx.ModelProto, data: DataSource, metrics: Sequence[Metric], device: str,
                    model_path: str | Path = "the model", layers: Sequence[NeuronLayer] | None = None,
                    excluded: dict[str, str] | None = None) -> ProfileSetup:
    """Check that ``model`` can be profiled on ``data`` and find where each hidden layer's samples lie (by
    running the model on one sample). ``layers`` and ``excluded``: what an earlier setup of the same model and
    data found (a Ray worker is given the driver's), so that nothing is looked for again."""
    scores_output(model)  # a model without class scores fails here, before any layer is looked at
    hidden = find_neuron_layers(model).hidden
    if not hidden:
        raise InputError(f"{model_path}: no hidden neuron layers (Conv, or Gemm / MatMul with a constant weight) "
                         "to profile")
    runner = Runner.create(with_observed_outputs(model, hidden), device)
    data = runner.prepare(data)
    if layers is not None:
        return ProfileSetup(model, runner, data, list(layers), dict(excluded or {}))
    excluded = {}
    if len(data):  # where each layer's samples lie, found once (an empty data set fails later, with its reason)
        found = find_batch_axes(hidden, lambda x, names: runner.run(x, outputs=names), data.samples(np.arange(1)),
                                static_batch(runner.session))
        hidden, excluded = found.layers, found.excluded
        strict = [m.name for m in metrics if m.needs_batch_first]
        for layer in hidden if strict else []:
            if layer.batch_axis != 0:
                excluded[layer.name] = (f"its samples lie on axis {layer.batch_axis} and {', '.join(strict)} reads "
                                        "them on axis 0 only; profile without it to measure this layer")
        hidden = [layer for layer in hidden if layer.name not in excluded]
        if not hidden:
            raise InputError(f"{model_path}: no hidden neuron layer can be profiled: "
                             + "; ".join(f"{name}: {reason}" for name, reason in excluded.items()))
    return ProfileSetup(model, runner, data, hidden, excluded)


def reads_means_only(rest: int, batch_size: int, metrics: Sequence[Metric]) -> bool:
    """Whether the ``rest`` samples after the CKA ones go through a session that outputs only spatial means: when
    no metric reads positions and they make enough batches to pay for creating it. Decided for the whole data
    set, so that a part of it measures its samples exactly as the whole would."""
    return math.ceil(rest / batch_size) >= MEANS_SESSION_BATCHES and not any(m.reads_positions for m in metrics)


def rest_block(setup: ProfileSetup, batch_size: int, metrics: Sequence[Metric], means_only: bool) -> int:
    """Samples per block of the samples after the CKA ones: a batch, or many batches of spatial means (not with
    gradients: the PyTorch pass takes a batch at a time)."""
    if not means_only or any(m.needs_gradients for m in metrics):
        return batch_size
    return batch_size * max(1, MEANS_BLOCK_BYTES // (batch_size * 8 * sum(layer.size for layer in setup.layers)))


@dataclass
class PartialProfile:
    """The statistics of part of the data: per-category sums and counts of the metrics' values, and the CKA
    statistics of the categories whose CKA samples the part read (by position in the categories)."""

    averages: CategoryMeans
    #: category position -> layer -> CKA statistics (of whole maps; of spatial means for layers with positions)
    similarity: dict[int, dict[str, SimilarityStatistics]]
    mean_similarity: dict[int, dict[str, SimilarityStatistics]]


def measure_part(setup: ProfileSetup, metrics: Sequence[Metric], max_per_class: int, cka_categories: Sequence[int],
                 rest: np.ndarray, means_only: bool, batch_size: int, device: str, bar: tqdm) -> PartialProfile:
    """Measure part of the data: the CKA samples of the categories at positions ``cka_categories`` (the first
    ``max_per_class`` of each, whole activations, one category at a time) and the samples at positions ``rest``
    (in blocks of :func:`rest_block`; ``means_only``: through a session that outputs only spatial means, which
    replaces ``setup.runner``). Each sample runs in the batches the whole profile runs it in, when ``rest`` starts
    at a block of the whole."""
    layers, data = setup.layers, setup.data
    gradients = None
    if any(m.needs_gradients for m in metrics):
        from onnxslice.profiling.gradients import GradientPass  # PyTorch: imported only when a metric needs it

        gradients = GradientPass(setup.model, layers, device)
    category_values = np.asarray(setup.categories)
    averages = CategoryMeans(len(category_values))
    similarity: dict[int, dict[str, SimilarityStatistics]] = {}
    mean_similarity: dict[int, dict[str, SimilarityStatistics]] = {}

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
                         _sample_values(metrics, [LayerBatch(layer, activation, torch_batch)
                                                  for layer, activation in zip(layers, activations, strict=True)]))
            yield activations

    first, _ = cka_samples(data.labels, setup.categories, max_per_class)
    # BLAS threads would fight onnxruntime's and PyTorch's own over the small per-batch products; H runs a layer
    # per core instead: its many small products keep one core busier than BLAS threads sharing each product
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(_usable_cores()) as pool:
        names = [layer.output for layer in layers]  # the graph outputs read
        for category in cka_categories:  # one category's CKA samples: their H from the whole activations, forgotten
            positions = first[category]
            kept = [np.concatenate(parts) if len(parts) > 1 else parts[0]  # new arrays from every run
                    for parts in zip(*measure(partial(setup.runner.run, outputs=names), positions, len(positions)),
                                     strict=True)]
            similarity[category] = dict(zip([layer.name for layer in layers], pool.map(similarity_statistics, kept),
                                             strict=True))
            spread = [(layer, acts) for layer, acts in zip(layers, kept, strict=True) if acts.shape[2] > 1]
            means = pool.map(similarity_statistics, [acts.mean(axis=2, keepdims=True) for _, acts in spread])
            mean_similarity[category] = {layer.name: statistics
                                         for (layer, _), statistics in zip(spread, means, strict=True)}
            del kept, spread
        if len(rest) and means_only:
            setup.runner = None  # one session at a time: each holds the weights
            means_model, names = with_spatial_means(setup.model, layers)
            setup.runner = Runner.create(means_model, device)
        if len(rest):
            block = rest_block(setup, batch_size, metrics, means_only)
            for _ in measure(ReusedOutputs(setup.runner, names), rest, block):  # a block is added before the next
                pass
    return PartialProfile(averages, similarity, mean_similarity)


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
    hidden neuron layer, per category of ``data`` and over all of it, in this process. ``loaded``: the canonical
    model of ``model_path`` when the caller has already loaded it (it is not loaded twice), or a model made in
    memory (``model_path`` None: the profile records the hash of the file it would be saved as)."""
    chosen = metrics_by_name(metrics)
    check_settings(max_per_class, batch_size)
    model = loaded if loaded is not None else load_model(model_path)
    model_sha256 = model_hash(model_path, model)
    setup = prepare_profile(model, data, chosen, device, model_path or "the model")
    first, rest = cka_samples(setup.data.labels, setup.categories, max_per_class)
    show = progress and sys.stderr.isatty()
    with tqdm(total=len(setup.data), desc="profile", unit="sample", file=sys.stderr, disable=not show) as bar:
        part = measure_part(setup, chosen, max_per_class, range(len(first)), rest,
                            reads_means_only(len(rest), batch_size, chosen), batch_size, device, bar)
    return assemble_profile(setup, chosen, [part], model_sha256, max_per_class, model_path or "the model")


def check_settings(max_per_class: int, batch_size: int) -> None:
    if max_per_class < 1:
        raise InputError(f"--max-per-class must be at least 1, got {max_per_class}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")


def model_hash(model_path: str | Path | None, model: onnx.ModelProto) -> str:
    """The sha256 of the model's file, or of the file a model made in memory would be saved as."""
    return sha256_of(model_path) if model_path is not None else sha256(model.SerializeToString()).hexdigest()


def assemble_profile(setup: ProfileSetup, metrics: Sequence[Metric], parts: Sequence[PartialProfile],
                     model_sha256: str, max_per_class: int, model_path: str | Path) -> Profile:
    """The profile from the statistics of parts that together measured every sample once and read the CKA
    samples of every category once."""
    categories, layers = setup.categories, setup.layers
    averages = CategoryMeans(len(categories))
    similarity: dict[int, dict[str, SimilarityStatistics]] = {}
    mean_similarity: dict[int, dict[str, SimilarityStatistics]] = {}
    for part in parts:
        averages.merge(part.averages)
        similarity.update(part.similarity)
        mean_similarity.update(part.mean_similarity)
    contributions = {metric.name: {layer.name: metric.combine(averages.means(layer.name)) for layer in layers}
                     for metric in metrics}
    profile = Profile(
        model_sha256=model_sha256, data=setup.data.name, metrics=[m.name for m in metrics], categories=categories,
        layer_sizes={layer.name: layer.size for layer in layers},
        samples={c: int(n) for c, n in zip(categories, averages.counts, strict=True)},
        contributions=contributions,
        similarity={layer.name: [similarity[k][layer.name] for k in range(len(categories))] for layer in layers},
        max_per_class=max_per_class,
        mean_similarity={layer.name: [mean_similarity[k][layer.name] for k in range(len(categories))]
                         for layer in layers if categories and layer.name in mean_similarity[0]},
        excluded=setup.excluded,
    )
    problem = profile.problem()
    if problem:  # e.g. activations that overflow: a slice from them would be silently wrong
        raise InputError(f"{model_path} on {setup.data.name}: the profile's {problem}")
    return profile


def _resized(shape: tuple[int, ...], axis: int, size: int) -> tuple[int, ...]:
    """``shape`` with ``size`` entries along ``axis``."""
    return tuple(size if a == axis % len(shape) else d for a, d in enumerate(shape))


def _usable_cores() -> int:
    """The cores this process may keep busy: those its Ray task holds, else those it may run on (its CPU affinity
    where the system has one, as on Linux)."""
    if runtime.task_cpus:
        return runtime.task_cpus
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sample_values(metrics: Sequence[Metric], batches: Sequence[LayerBatch]) -> dict[tuple[str, str], np.ndarray]:
    """The metrics' named per-sample values of every layer, by (layer, name): metrics naming the same value share it."""
    return {(batch.layer.name, name): value for batch in batches for metric in metrics
            for name, value in metric.sample_values(batch).items()}
