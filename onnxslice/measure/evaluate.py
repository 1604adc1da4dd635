"""Accuracy of a classifier on labelled data, with its size, cost and latency."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from onnxslice.data import DataSource
from onnxslice.errors import InputError
from onnxslice.measure.stats import count_macs, count_params, measure_latency
from onnxslice.runtime import Runner


def accuracy(model: onnx.ModelProto, data: DataSource, device: str = "auto", batch_size: int = 256,
             classes: Sequence[int] | None = None) -> dict:
    """Overall and per-class accuracy (class label -> fraction correct) of the model on ``data``. ``classes``: only
    these classes' scores compete for the prediction (the task is known, as in task-incremental scoring)."""
    runner = Runner.create(model, device)
    if runner.num_classes < 2:
        raise InputError(f"the model outputs {runner.num_classes} score per sample ({runner.output}): accuracy needs "
                         "a classifier with one score per class")
    data = runner.prepare(data)
    correct = np.zeros(runner.num_classes, np.int64)
    total = np.zeros(runner.num_classes, np.int64)
    competing = np.ones(runner.num_classes, bool) if classes is None else np.isin(np.arange(runner.num_classes),
                                                                                   classes)
    for scores, labels in runner.scores(data, batch_size):
        hits = np.where(competing, scores, -np.inf).argmax(axis=1) == labels
        np.add.at(total, labels, 1)
        np.add.at(correct, labels, hits.astype(np.int64))
    present = np.flatnonzero(total)
    return {
        "accuracy": float(correct.sum() / max(total.sum(), 1)),
        "per_class": {str(c): float(correct[c] / total[c]) for c in present},
        "samples": int(total.sum()),
    }


def evaluate(model: onnx.ModelProto, data: DataSource, device: str = "auto", batch_size: int = 256,
             latency_batch: int = 32) -> dict:
    """Accuracy plus parameters, MACs per sample and mean latency per batch of ``latency_batch``."""
    result = accuracy(model, data, device, batch_size)
    result.update(
        params=count_params(model),
        macs=count_macs(model),
        latency_ms=measure_latency(model, latency_batch, device=device),
        latency_batch=latency_batch,
        data=data.name,
    )
    return result
