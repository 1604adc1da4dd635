"""What re-adaptation and incremental development share: settings, data as arrays, accuracy through ONNX."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxslice.data import DataSource
from onnxslice.graph import LayerScan
from onnxslice.measure.evaluate import accuracy
from onnxslice.runtime import Runner

#: Probe samples on which the written model is checked against the trained PyTorch module.
PROBE_SAMPLES = 16


@dataclass(frozen=True)
class TrainingOptions:
    """Adam settings. lr 1e-4 does not damage a trained model (5e-3, which benchmarks/rq_maintenance.py passes
    explicitly for the digits MLP, took a trained resnet18 from 96.3% to 17%); see onnxslice.maintain.finetune."""

    epochs: int = 30
    lr: float = 1e-4
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = False  #: a bar on stderr, one step per epoch, when stderr is a terminal


def prepared_arrays(model: onnx.ModelProto, data: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """All samples shaped for the model and their labels; labels the model cannot output are an InputError."""
    x, y = Runner.create(model, "cpu").prepare(data).arrays()
    return np.ascontiguousarray(x, np.float32), y.astype(np.int64)


def onnx_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                  classes: Sequence[int] | None = None) -> float:
    """Fraction of samples whose highest class score (onnxruntime, CPU) is the label; ``classes``: only these
    classes' scores compete."""
    return accuracy(model, DataSource.from_arrays("arrays", x, y), "cpu", batch_size, classes)["accuracy"]


def neuron_vectors(scan: LayerScan, chosen: dict[str, list[int]], default: bool) -> dict[str, np.ndarray]:
    """Per layer a boolean vector over its neurons: True for the ``chosen`` indices; layers not named get
    ``default`` for every neuron."""
    vectors = {}
    for layer in scan.layers:
        vector = np.full(layer.size, default if layer.name not in chosen else False)
        vector[list(chosen.get(layer.name, []))] = True
        vectors[layer.name] = vector
    return vectors
