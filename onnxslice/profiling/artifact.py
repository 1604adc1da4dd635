"""The profile artifact (``profile.npz``): everything slicing needs, so that slicing runs no model.

Per hidden neuron layer: contributions per metric and category (plus one row over the whole data set,
for global slicing), and the CKA statistics H per category, centred and uncentred, stored as
:class:`~onnxslice.profiling.similarity.SimilarityStatistics` (float32 C × C centred H, its rank-(n+1) uncentred
correction and a float64 scale), in both representations of a neuron with positions (a conv channel):
``map``, its whole feature map, and ``mean``, its spatial mean (a scalar per sample, as the paper's metrics
and NPC / DeepXplore treat a neuron). For a layer without positions the two are the same, stored once.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxslice.errors import InputError, one_line
from onnxslice.files import write_atomically
from onnxslice.profiling.similarity import SimilarityStatistics

FORMAT = "onnxslice.profile/3"
REPRESENTATIONS = ("mean", "map")


@dataclass
class Profile:
    model_sha256: str
    data: str
    metrics: list[str]
    categories: list[int]
    layer_sizes: dict[str, int]  #: hidden neuron layers in graph order -> number of neurons
    samples: dict[int, int]  #: samples seen per category
    #: metric -> layer -> (len(categories) + 1, C): one row per category, the last over all samples
    contributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    #: layer -> the CKA statistics per category, in the order of ``categories``
    similarity: dict[str, list[SimilarityStatistics]] = field(default_factory=dict)
    max_per_class: int | None = None
    #: layer with positions -> the CKA statistics of its spatial means per category (others: ``similarity``)
    mean_similarity: dict[str, list[SimilarityStatistics]] = field(default_factory=dict)
    #: neuron layers not profiled -> why (e.g. samples merged with tokens): a slice keeps them whole
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_sizes)

    def contribution(self, metric: str, layer: str, category: int | None = None) -> np.ndarray:
        """Contribution of each neuron of ``layer`` for one category, or over all data (``None``)."""
        if metric not in self.contributions:
            raise InputError(f"--metric {metric}: not in the profile (it has {', '.join(self.metrics)})")
        rows = self.contributions[metric][layer]
        return rows[-1] if category is None else rows[self.categories.index(category)]

    def similarity_matrix(self, layer: str, category: int, centered: bool = True,
                          representation: str = "map") -> np.ndarray:
        """The CKA statistics H (C × C, float64) of ``layer`` on the samples of ``category``, a neuron represented
        by its whole map or its spatial mean (``representation``)."""
        if representation not in REPRESENTATIONS:
            raise InputError(f"--cka-representation {representation}: choose from {', '.join(REPRESENTATIONS)}")
        statistics = self.mean_similarity.get(layer) if representation == "mean" else None
        return (statistics or self.similarity[layer])[self.categories.index(category)].matrix(centered)

    def check_against(self, model_sha256: str, profile_path: str | Path, model_path: str | Path) -> None:
        if self.model_sha256 != model_sha256:
            raise InputError(f"{profile_path}: the profile was made for another model than {model_path} "
                             f"(sha256 {self.model_sha256[:12]}…, the model is {model_sha256[:12]}…)")

    def save(self, path: str | Path) -> None:
        meta = {
            "format": FORMAT, "model_sha256": self.model_sha256, "data": self.data, "metrics": self.metrics,
            "categories": self.categories, "layers": list(self.layer_sizes.items()),
            "samples": [[c, n] for c, n in self.samples.items()], "max_per_class": self.max_per_class,
            "excluded": [[name, reason] for name, reason in self.excluded.items()],
        }
        arrays = {"meta": np.array(json.dumps(meta))}
        for index, layer in enumerate(self.layer_sizes):
            for metric in self.metrics:
                arrays[f"contrib/{metric}/{index}"] = self.contributions[metric][layer]
            arrays.update(_similarity_arrays(self.similarity[layer], f"sim/{index}"))
            if layer in self.mean_similarity:
                arrays.update(_similarity_arrays(self.mean_similarity[layer], f"meansim/{index}"))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomically(path, write)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such profile file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                if not isinstance(meta, dict):
                    raise InputError(f"{path}: not an onnxslice profile (its metadata is not a JSON object)")
                if meta.get("format") != FORMAT:
                    if str(meta.get("format")).startswith(FORMAT.split("/")[0]):
                        raise InputError(f"{path}: profile format {meta['format']} is not the {FORMAT} this "
                                         "onnxslice reads; run onnxslice profile again")
                    raise InputError(f"{path}: not an onnxslice profile (expected format {FORMAT})")
                layer_sizes = {name: int(size) for name, size in meta["layers"]}
                contributions = {m: {} for m in meta["metrics"]}
                similarity: dict[str, list[SimilarityStatistics]] = {}
                mean_similarity: dict[str, list[SimilarityStatistics]] = {}
                for index, layer in enumerate(layer_sizes):
                    for metric in meta["metrics"]:
                        contributions[metric][layer] = archive[f"contrib/{metric}/{index}"]
                    similarity[layer] = _similarity_from(archive, f"sim/{index}")
                    if f"meansim/{index}/centred" in archive:
                        mean_similarity[layer] = _similarity_from(archive, f"meansim/{index}")
            profile = cls(str(meta["model_sha256"]), str(meta["data"]), list(meta["metrics"]),
                          [int(c) for c in meta["categories"]], layer_sizes,
                          {int(c): int(n) for c, n in meta["samples"]}, contributions, similarity,
                          meta.get("max_per_class"), mean_similarity,
                          {str(name): str(reason) for name, reason in meta.get("excluded", [])})
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
                RecursionError, OverflowError) as exc:
            raise InputError(f"{path}: not a readable profile ({one_line(str(exc) or type(exc).__name__, 120)})"
                             ) from None
        problem = profile.problem()
        if problem:
            raise InputError(f"{path}: {problem}; run onnxslice profile again")
        return profile

    def problem(self) -> str | None:
        """What makes this profile unusable (arrays that do not fit the layers, NaN or infinite values), or None."""
        rows = len(self.categories) + 1
        for layer, size in self.layer_sizes.items():
            if size < 1:
                return f"layer {layer!r} has {size} neurons"
            for metric in self.metrics:
                values = self.contributions[metric][layer]
                if values.shape != (rows, size):
                    return (f"contributions of layer {layer!r} ({metric}) have shape {list(values.shape)}, "
                            f"expected {[rows, size]}")
                if not _finite(values):
                    return f"contributions of layer {layer!r} ({metric}) hold NaN, infinite or non-numeric values"
            for statistics in (self.similarity[layer], self.mean_similarity.get(layer)):
                problem = _statistics_problem(layer, size, statistics, len(self.categories))
                if problem:
                    return problem
        return None


def _statistics_problem(layer: str, size: int, statistics: list[SimilarityStatistics] | None,
                        categories: int) -> str | None:
    """What is wrong with one layer's CKA statistics (one per category, C x C), or None."""
    if statistics is None:
        return None
    if len(statistics) != categories:
        return f"layer {layer!r} has CKA statistics for {len(statistics)} of {categories} categories"
    for stats in statistics:
        if stats.centred.shape != (size, size) or stats.correction.ndim != 2 or stats.correction.shape[1] != size:
            return f"the CKA statistics of layer {layer!r} do not fit its {size} neurons"
        if not (_finite(stats.centred) and _finite(stats.correction) and _finite(stats.factor)):
            return f"the CKA statistics of layer {layer!r} hold NaN, infinite or non-numeric values"
    return None


def _finite(values: object) -> bool:
    array = np.asarray(values)
    return array.dtype.kind in "fiu" and bool(np.all(np.isfinite(array)))


def _similarity_from(archive: np.lib.npyio.NpzFile, prefix: str) -> list[SimilarityStatistics]:
    return [SimilarityStatistics(*stats) for stats in zip(archive[f"{prefix}/centred"], archive[f"{prefix}/correction"],
                                                          archive[f"{prefix}/factor"].tolist(), strict=True)]


def _similarity_arrays(statistics: list[SimilarityStatistics], prefix: str) -> dict[str, np.ndarray]:
    """One layer's statistics as three stacked arrays; corrections padded with zero rows (they add nothing)."""
    rows = max(len(s.correction) for s in statistics)
    correction = np.zeros((len(statistics), rows, statistics[0].correction.shape[1]), np.float32)
    for k, s in enumerate(statistics):
        correction[k, :len(s.correction)] = s.correction
    return {f"{prefix}/centred": np.stack([s.centred for s in statistics]).astype(np.float32, copy=False),
            f"{prefix}/correction": correction,
            f"{prefix}/factor": np.array([s.factor for s in statistics], np.float64)}
