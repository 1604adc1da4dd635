"""A profile measured in shards on a Ray cluster, equal to the one measured in one process.

Every statistic a profile keeps merges exactly: the contributions are per-category sums and counts of per-sample
values, and the CKA statistics H of a category come from its CKA samples, the first ``max_per_class`` of the
category in data order. The driver reads only the labels (to know those positions) and plans the shards:

- each category's CKA samples are read by one shard, whole, in the batches one process reads them in, so its H is
  the one a single process computes (bit for bit: the same samples through the same batches);
- the other samples, in data order, are cut into runs of whole blocks (the blocks one process reads them in), each
  run an index range of the data that one shard reads (skipping the CKA samples inside it);
- the categories are given to the shards with the fewest samples so far, so that shards read about as many
  samples each.

A shard opens the model (from Ray's object store) and the data (from its data argument) itself, with its own
onnxruntime session (and PyTorch twin for gradient metrics), and returns its sums, counts and H; the driver adds
them up. Sums added in another order differ from the one-process profile by rounding only (about 1e-16
relative). The profile exists only once every shard has reported; a shard whose worker dies is run again by Ray.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from onnxslice.cluster import Cluster, open_in_worker, worker_origin
from onnxslice.data import DataOrigin, DataSource
from onnxslice.graph import NeuronLayer
from onnxslice.profiling.artifact import Profile
from onnxslice.profiling.metrics import metrics_by_name
from onnxslice.profiling.profiler import (
    PartialProfile,
    assemble_profile,
    check_settings,
    cka_samples,
    measure_part,
    model_hash,
    prepare_profile,
    reads_means_only,
    rest_block,
)


@dataclass(frozen=True)
class Shard:
    """One task's part of a profile."""

    categories: tuple[int, ...]  #: positions of the categories whose CKA samples it reads
    start: int  #: the index range of the data whose other samples it reads
    stop: int
    samples: int  #: how many samples it reads in all


def plan_shards(first: Sequence[np.ndarray], rest: np.ndarray, block: int, count: int, total: int) -> list[Shard]:
    """At most ``count`` shards that together read every sample once: the CKA samples ``first`` (by category) and
    the ``rest`` (positions in data order, cut at multiples of ``block``) of a data set of ``total`` samples."""
    blocks = math.ceil(len(rest) / block)
    runs = [(int(run[0]) * block, min(int(run[-1] + 1) * block, len(rest))) if len(run) else (0, 0)
            for run in np.array_split(np.arange(blocks), count)]
    loads = [stop - start for start, stop in runs]
    categories: list[list[int]] = [[] for _ in runs]
    for category in sorted(range(len(first)), key=lambda k: -len(first[k])):
        least = int(np.argmin(loads))
        categories[least].append(category)
        loads[least] += len(first[category])
    shards = []
    for (start, stop), chosen, load in zip(runs, categories, loads, strict=True):
        if load:
            low = int(rest[start]) if stop > start else 0
            high = (int(rest[stop]) if stop < len(rest) else total) if stop > start else 0
            shards.append(Shard(tuple(sorted(chosen)), low, high, load))
    return shards


def profile_on_ray(cluster: Cluster, model: onnx.ModelProto, model_path: str | Path | None, data: DataSource,
                   metrics: Sequence[str], max_per_class: int, device: str, batch_size: int, progress: bool,
                   shards: int | None = None) -> Profile:
    """The profile :func:`~onnxslice.profiling.profiler.profile_model` makes, measured in ``shards`` tasks
    (default: as many as the cluster runs at once) on ``cluster``."""
    origin = worker_origin(data)
    chosen = metrics_by_name(metrics)
    check_settings(max_per_class, batch_size)
    model_sha256 = model_hash(model_path, model)
    # the layers and their batch axes are found here, once, on the CPU; every shard is told them
    setup = prepare_profile(model, data, chosen, "cpu", model_path or "the model")
    setup.runner = None
    first, rest = cka_samples(setup.data.labels, setup.categories, max_per_class)
    means_only = reads_means_only(len(rest), batch_size, chosen)
    block = rest_block(setup, batch_size, chosen, means_only)
    plan = plan_shards(first, rest, block, shards or cluster.slots, len(setup.data))
    model_ref = cluster.put(model.SerializeToString())
    calls = [(model_ref, origin, [m.name for m in chosen], max_per_class, shard, setup.layers, setup.excluded,
              means_only, batch_size, device) for shard in plan]
    show = progress and sys.stderr.isatty()
    with tqdm(total=len(setup.data), desc="profile", unit="sample", file=sys.stderr, disable=not show) as bar:
        parts = cluster.run(profile_shard, calls, bar, [shard.samples for shard in plan])
    return assemble_profile(setup, chosen, parts, model_sha256, max_per_class, model_path or "the model")


def profile_shard(model: bytes, origin: DataOrigin, metrics: list[str], max_per_class: int, shard: Shard,
                  layers: list[NeuronLayer], excluded: dict[str, str], means_only: bool, batch_size: int,
                  device: str) -> PartialProfile:
    """A Ray task: the statistics of one shard, read through this worker's own session(s)."""
    chosen = metrics_by_name(metrics)
    setup = prepare_profile(onnx.load_from_string(model), open_in_worker(origin), chosen, device, layers=layers,
                            excluded=excluded)
    _, rest = cka_samples(setup.data.labels, setup.categories, max_per_class)
    mine = rest[(rest >= shard.start) & (rest < shard.stop)]
    with tqdm(disable=True) as bar:
        return measure_part(setup, chosen, max_per_class, shard.categories, mine, means_only, batch_size, device, bar)
