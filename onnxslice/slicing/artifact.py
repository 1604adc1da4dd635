"""The slice artifact (``slice.json``): which neurons of each layer are critical.

Format ``onnxslice.slice/1``::

    {"format": "onnxslice.slice/1", "model_sha256": "...", "metric": "taylor", "strategy": "semantic",
     "theta": 0.95, "ratio": null, "centered": true, "step": 1, "data": "digits:train", "round_to": 8,
     "target": {"metric": "macs", "fraction": 0.5} | null,
     "restructured": {"params": ..., "params_before": ..., "params_fraction": ..., "macs": ..., ...} | null,
     "layers": {"<node name>": {"size": 512, "kept": [0, 3, ...], "per_category": {"0": [...], ...},
                                "display": "layer1.0.conv1" | null}}}

``display`` is the source module's path where the exporter recorded it (:func:`onnxslice.graph.display_name`);
layers stay keyed by node name.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxslice.errors import InputError, one_line
from onnxslice.files import write_atomically
from onnxslice.graph import LayerScan

FORMAT = "onnxslice.slice/1"
_INDEX_LIST = re.compile(r"\[[\d,\s]*\]")


@dataclass
class LayerSlice:
    size: int
    kept: list[int]
    per_category: dict[str, list[int]] = field(default_factory=dict)
    display: str | None = None  #: the source module's path, when it differs from the node name


@dataclass
class Slice:
    model_sha256: str
    layers: dict[str, LayerSlice]
    metric: str | None = None
    strategy: str | None = None
    theta: float | None = None
    ratio: float | None = None
    centered: bool = True
    step: int = 1
    data: str | None = None
    representation: str | None = None  #: semantic: a conv neuron in CKA, its spatial "mean" or whole "map"
    round_to: int = 1  #: kept classes per coupled group are a multiple of this (or all)
    target: dict | None = None  #: the size budget it was made for: {"metric": "params" | "macs", "fraction": F}
    #: what restructure reaches: params, params_before, params_fraction, macs, macs_before, macs_fraction
    restructured: dict | None = None
    #: neuron layers the profile could not measure -> why (e.g. samples merged with tokens): restructure keeps them
    kept_whole: dict[str, str] = field(default_factory=dict)

    def kept(self) -> dict[str, list[int]]:
        """Kept neuron indices by layer name."""
        return {name: layer.kept for name, layer in self.layers.items()}

    def name_layers(self, scan: LayerScan) -> None:
        """Record each layer's display name (its module path) where it differs from the node name."""
        layers = scan.by_name()
        for name, layer in self.layers.items():
            found = layers.get(name)
            if found is not None and found.display and found.display != name:
                layer.display = found.display

    def check_against(self, model_sha256: str, scan: LayerScan, model_path: str | Path) -> None:
        """Fail with one line when the slice was made for another model or names unknown layers."""
        if self.model_sha256 != model_sha256:
            raise InputError(f"{model_path}: the slice was made for another model "
                             f"(sha256 {self.model_sha256[:12]}…, this file is {model_sha256[:12]}…)")
        layers = scan.by_name()
        for name, layer in self.layers.items():
            if name not in layers:
                raise InputError(f"slice names layer {name!r}, which is not a neuron layer of {model_path}")
            if layer.size != layers[name].size:
                raise InputError(f"slice layer {name!r} has size {layer.size}, the model's has {layers[name].size}")

    def to_json(self) -> dict:
        fields = asdict(self)
        return {"format": FORMAT, **{k: v for k, v in fields.items() if k != "layers"}, "layers": fields["layers"]}

    def save(self, path: str | Path) -> None:
        indented = json.dumps(self.to_json(), indent=1)
        text = _INDEX_LIST.sub(lambda m: json.dumps(json.loads(m.group())), indented)  # one line per index list
        write_atomically(path, lambda tmp: tmp.write_text(text + "\n"))

    @classmethod
    def load(cls, path: str | Path) -> Slice:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such slice file")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as exc:
            reason = one_line(str(exc) or type(exc).__name__, 120)
            raise InputError(f"{path}: not a JSON slice file ({reason})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"{path}: not an onnxslice slice (expected \"format\": \"{FORMAT}\")")
        try:
            layers = {name: _layer_from_json(name, value) for name, value in raw["layers"].items()}
            fields = {k: raw[k] for k in ("metric", "strategy", "theta", "ratio", "centered", "step", "data",
                                          "representation", "round_to", "target", "restructured") if k in raw}
            kept_whole = raw.get("kept_whole", {})
            if not isinstance(kept_whole, dict):
                raise ValueError("kept_whole must be an object {layer: reason}")
            fields["kept_whole"] = {str(k): str(v) for k, v in kept_whole.items()}
            return cls(model_sha256=str(raw["model_sha256"]), layers=layers, **fields)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path}: malformed slice file ({one_line(str(exc), 160)})") from None


def _layer_from_json(name: str, value: dict) -> LayerSlice:
    size = _whole(value["size"], f"layer {name!r}: size")
    if size < 1:
        raise ValueError(f"layer {name!r}: size must be at least 1")
    kept = sorted(_index(i, size, name) for i in value["kept"])
    if not kept:
        raise ValueError(f"layer {name!r} keeps no neuron (a layer keeps at least one)")
    if len(set(kept)) != len(kept):
        raise ValueError(f"layer {name!r}: kept indices must be distinct")
    per_category = {str(k): [_index(i, size, name) for i in v] for k, v in value.get("per_category", {}).items()}
    display = value.get("display")
    if display is not None and not isinstance(display, str):
        raise ValueError(f"layer {name!r}: display must be a string")
    return LayerSlice(size, kept, per_category, display)


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {one_line(repr(value), 40)}")
    return value


def _index(value: object, size: int, layer: str) -> int:
    index = _whole(value, f"layer {layer!r}: a neuron index")
    if not 0 <= index < size:
        raise ValueError(f"layer {layer!r}: neuron index {index} is outside [0, {size})")
    return index
