"""Incremental development (paper §4.3): freeze the old task's critical neurons, train the rest on a new task.

Frozen: the slice's kept neurons of every sliced layer (hidden layers the slice does not name count as wholly
critical) and the classifier rows of the old task's categories. Everything else is trained on the new data,
optionally mixed with a stratified fraction of old data (replay baselines); ``train_all`` is plain
retraining (nothing frozen).

Task A is reported two ways. ``task_a``: the old-task model, served by the frozen parameters alone (paper: "we
exclusively utilize the frozen parameters associated with task A for inference on task A").
``task_a_task_known``: the new model with the task known, i.e. the prediction is the highest of the old
classes' scores only (task-incremental scoring); ``task_a_new_model``: the new model over every class. When
nothing is frozen (plain retraining, replay baselines) the new model serves both tasks; otherwise the old-task
model is the trained model with the slice's mask applied at every sliced layer, and with the classifier rows
of the non-old categories as they were in the original. Why it answers exactly like ``mask_model(original,
slice)``: a kept neuron's incoming row is frozen, and its inputs from non-kept neurons are zeroed by the mask
at the layer before, so each kept activation is computed from frozen values and kept activations only; the
classifier rows read only those.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import torch

from onnxslice.data import DataSource
from onnxslice.graph import find_neuron_layers
from onnxslice.maintain.roundtrip import FrozenGuard, Trainable, export, match_layers, train_masked
from onnxslice.maintain.training import PROBE_SAMPLES, TrainingOptions, onnx_accuracy, prepared_arrays
from onnxslice.slicing.artifact import Slice
from onnxslice.surgery.mask import mask_model


def old_categories(piece: Slice) -> list[int]:
    """The categories the slice was made for: the keys of its per-category selections."""
    return sorted({int(c) for layer in piece.layers.values() for c in layer.per_category})


def trainable_neurons(trainable: Trainable, piece: Slice, old_classes: list[int],
                      train_all: bool) -> dict[str, np.ndarray]:
    """Per layer, True for the neurons that learn the new task."""
    kept = piece.kept()
    vectors = {}
    for layer in trainable.scan.layers:
        vector = np.ones(layer.size, bool)
        if not train_all:
            if layer.is_output:
                vector[[c for c in old_classes if c < layer.size]] = False
            else:
                vector[:] = layer.name in kept
                vector[kept.get(layer.name, [])] = False
        vectors[layer.name] = vector
    return vectors


def incremental(model: onnx.ModelProto, piece: Slice, new_data: DataSource, *, replay: DataSource | None = None,
                old_eval: DataSource | None = None, new_eval: DataSource | None = None,
                old_classes: list[int] | None = None, options: TrainingOptions | None = None,
                train_all: bool = False) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    """The new model, the old-task model, and the report (``task_a``, ``task_b``, ``mean``, ...).

    ``replay``: old data mixed into the training data; ``old_eval`` / ``new_eval``: evaluation data of the old
    task (no task-A figures without it) and the new one (default: ``new_data``); ``old_classes``: the old task's
    categories (default: :func:`old_categories` of the slice); ``train_all``: plain retraining, nothing frozen."""
    old_classes = old_categories(piece) if old_classes is None else old_classes
    options = options or TrainingOptions()
    x, y = prepared_arrays(model, new_data)
    if replay is not None:
        x_old, y_old = prepared_arrays(model, replay)
        x, y = np.concatenate([x, x_old]), np.concatenate([y, y_old])
    trainable = Trainable.from_onnx(model)
    original = {name: value.detach().clone() for name, value in trainable.module.named_parameters()}
    masks = trainable.masks(trainable_neurons(trainable, piece, old_classes, train_all))
    guard = FrozenGuard(trainable.module, masks)
    start = time.perf_counter()
    train_masked(trainable, guard, [torch.from_numpy(x)], torch.from_numpy(y), options)
    seconds = time.perf_counter() - start
    probe = x[:PROBE_SAMPLES]
    new_model = export(trainable, probe)
    nothing_frozen = guard.trained == trainable.layer_parameter_count()
    old_model = new_model if nothing_frozen else old_task_model(trainable, piece, original, masks, probe)

    x_new, y_new = prepared_arrays(model, new_eval) if new_eval is not None else prepared_arrays(model, new_data)
    report = {"task_a": None, "task_b": onnx_accuracy(new_model, x_new, y_new), "mean": None,
              "task_a_task_known": None, "mean_task_known": None, "task_a_new_model": None,
              "task_b_before": onnx_accuracy(model, x_new, y_new), "task_a_before": None,
              "trained_params": guard.trained, "layer_params": trainable.layer_parameter_count(),
              "tpr": guard.trained / trainable.layer_parameter_count(), "old_classes": old_classes,
              "train": "all" if train_all else "non-critical", "epochs": options.epochs, "samples": len(y),
              "replay_samples": len(replay) if replay is not None else 0, "seconds": seconds}
    if old_eval is not None:
        x_a, y_a = prepared_arrays(model, old_eval)
        report.update(task_a=onnx_accuracy(old_model, x_a, y_a), task_a_new_model=onnx_accuracy(new_model, x_a, y_a),
                      task_a_before=onnx_accuracy(model, x_a, y_a))
        report["mean"] = (report["task_a"] + report["task_b"]) / 2
        if old_classes:
            report["task_a_task_known"] = onnx_accuracy(new_model, x_a, y_a, classes=old_classes)
            report["mean_task_known"] = (report["task_a_task_known"] + report["task_b"]) / 2
    return new_model, old_model, report


def old_task_model(trainable: Trainable, piece: Slice, original: dict[str, torch.Tensor],
                   masks: dict[str, torch.Tensor], probe: np.ndarray) -> onnx.ModelProto:
    """The trained model's frozen parameters with the slice's mask; the classifier rows of the non-old categories
    as in the original (see the module docstring). Leaves ``trainable`` as trained."""
    params = dict(trainable.module.named_parameters())
    outputs = {t.path for layer in trainable.scan.layers if layer.is_output for t in trainable.tensors[layer.name]}
    trained = {path: params[path].detach().clone() for path in outputs}
    with torch.no_grad():
        for path in outputs:
            params[path].copy_(torch.where(masks[path], original[path], params[path]))
    try:
        exported = export(trainable, probe)
    finally:
        with torch.no_grad():
            for path, value in trained.items():
                params[path].copy_(value)
    names = match_layers(trainable.scan, find_neuron_layers(exported))
    return mask_model(exported, {names[name]: kept for name, kept in piece.kept().items()})
