"""The profile artifact (``profile.npz``): everything slicing needs, so that slicing runs no model.

Per hidden neuron layer: contributions per metric and category (plus one row over the whole data set,
for global slicing), and the C × C CKA statistics H per category, centred and uncentred
(see :mod:`onnxslice.slicing.cka`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxslice.errors import InputError
from onnxslice.files import write_atomically

FORMAT = "onnxslice.profile/1"


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
    #: centred? -> layer -> (len(categories), C, C) CKA statistics H per category
    similarity: dict[bool, dict[str, np.ndarray]] = field(default_factory=dict)
    max_per_class: int | None = None

    @property
    def layers(self) -> list[str]:
        return list(self.layer_sizes)

    def contribution(self, metric: str, layer: str, category: int | None = None) -> np.ndarray:
        """Contribution of each neuron of ``layer`` for one category, or over all data (``None``)."""
        if metric not in self.contributions:
            raise InputError(f"--metric {metric}: not in the profile (it has {', '.join(self.metrics)})")
        rows = self.contributions[metric][layer]
        return rows[-1] if category is None else rows[self.categories.index(category)]

    def similarity_matrix(self, layer: str, category: int, centered: bool = True) -> np.ndarray:
        """The CKA statistics H (C × C) of ``layer`` on the samples of ``category``."""
        return self.similarity[centered][layer][self.categories.index(category)]

    def check_against(self, model_sha256: str, profile_path: str | Path, model_path: str | Path) -> None:
        if self.model_sha256 != model_sha256:
            raise InputError(f"{profile_path}: the profile was made for another model than {model_path} "
                             f"(sha256 {self.model_sha256[:12]}…, the model is {model_sha256[:12]}…)")

    def save(self, path: str | Path) -> None:
        meta = {
            "format": FORMAT, "model_sha256": self.model_sha256, "data": self.data, "metrics": self.metrics,
            "categories": self.categories, "layers": list(self.layer_sizes.items()),
            "samples": [[c, n] for c, n in self.samples.items()], "max_per_class": self.max_per_class,
        }
        arrays = {"meta": np.array(json.dumps(meta))}
        for index, layer in enumerate(self.layer_sizes):
            for metric in self.metrics:
                arrays[f"contrib/{metric}/{index}"] = self.contributions[metric][layer]
            for centered, per_layer in self.similarity.items():
                arrays[f"sim/{int(centered)}/{index}"] = per_layer[layer]

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
                if meta.get("format") != FORMAT:
                    raise InputError(f"{path}: not an onnxslice profile (expected format {FORMAT})")
                layer_sizes = {name: int(size) for name, size in meta["layers"]}
                contributions = {m: {} for m in meta["metrics"]}
                similarity: dict[bool, dict[str, np.ndarray]] = {}
                for index, layer in enumerate(layer_sizes):
                    for metric in meta["metrics"]:
                        contributions[metric][layer] = archive[f"contrib/{metric}/{index}"]
                    for centered in (True, False):
                        key = f"sim/{int(centered)}/{index}"
                        if key in archive:
                            similarity.setdefault(centered, {})[layer] = archive[key]
        except InputError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a readable profile ({exc})") from None
        return cls(meta["model_sha256"], meta["data"], list(meta["metrics"]), [int(c) for c in meta["categories"]],
                   layer_sizes, {int(c): int(n) for c, n in meta["samples"]}, contributions, similarity,
                   meta.get("max_per_class"))
