"""Re-adaptation (paper §4.2): train only the critical neurons on L = CE(x, y) + CE(adv(x), y).

The adversarial samples are generated once on the original model (the set the model is re-adapted against).
``eps="auto"`` (the default) calibrates the attack's strength on the training data
(:func:`onnxslice.maintain.attacks.calibrate_eps`: accuracy on the attacked samples at most 20% for FGSM, 5%
for PGD), so that every model is re-adapted against an attack as strong as the paper's. Reported, on the
evaluation data: clean accuracy before and after, the original's accuracy on its adversarial set, RA (the
re-adapted model's accuracy on that same set; ``ra_train`` on the adversarial set it was trained on), RAA (its
accuracy under a fresh attack generated on the re-adapted model), and TPR = trained parameters / all
parameters of the neuron layers (weights, biases and per-neuron tail constants of every Conv / Gemm / MatMul
layer). Hidden layers not named in the slice and the classifier layer count as wholly critical (trained).

The paper slices on the adversarial samples it re-adapts against (footnote 3): :func:`adversarial_set` generates
them once on the original model, so that the caller can profile and slice on them and pass the same set to
:func:`readapt`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch

from onnxslice.data import DataSource
from onnxslice.maintain.attacks import TARGET_ACCURACY, AttackSpec, adversarial, calibrate_eps
from onnxslice.maintain.roundtrip import FrozenGuard, Trainable, export, train_masked
from onnxslice.maintain.training import PROBE_SAMPLES, TrainingOptions, neuron_vectors, onnx_accuracy, prepared_arrays
from onnxslice.slicing.artifact import Slice

#: The ``eps`` value that asks for a calibrated attack strength.
AUTO = "auto"


@dataclass(frozen=True)
class AdversarialSet:
    """Training samples, their labels and their adversarial counterparts, generated on the original model."""

    spec: AttackSpec
    calibrated: bool  #: eps was calibrated (``eps="auto"``)
    x: np.ndarray
    y: np.ndarray
    adv: np.ndarray
    name: str  #: the clean data's name

    def source(self) -> DataSource:
        """The adversarial samples as a data set (labels: the clean samples' true labels)."""
        return DataSource.from_arrays(f"{self.name} under {self.spec.name} eps {self.spec.eps:.4g}", self.adv, self.y)

    def clean(self) -> DataSource:
        """The clean samples the adversarial ones were made from, as a data set."""
        return DataSource.from_arrays(self.name, self.x, self.y)


def adversarial_set(model: onnx.ModelProto, data: DataSource, attack: str = "fgsm", eps: float | str | None = AUTO,
                    clip: tuple[float, float] | None = None, seed: int = 0,
                    trainable: Trainable | None = None) -> AdversarialSet:
    """The adversarial counterparts of every sample of ``data`` on ``model`` (``eps`` as :func:`readapt` takes it;
    ``trainable``: the model already converted, when the caller has it)."""
    x, y = prepared_arrays(model, data)
    trainable = trainable or Trainable.from_onnx(model)
    calibrated = eps == AUTO
    spec = AttackSpec.create(attack, None if calibrated else eps, clip, x)  # type: ignore[arg-type]
    if calibrated:
        spec = replace(spec, eps=calibrate_eps(spec, trainable.scores, trainable.module, x, y, seed=seed))
    adv = adversarial(spec, trainable.scores, trainable.module, x, y, seed)
    return AdversarialSet(spec, calibrated, x, y, adv, data.name)


def trained_parameters(model: onnx.ModelProto, piece: Slice) -> tuple[int, int]:
    """The neuron-layer parameters re-adaptation trains for ``piece`` and all of them (TPR's numerator and
    denominator), counted without training."""
    trainable = Trainable.from_onnx(model)
    masks = trainable.masks(neuron_vectors(trainable.scan, piece.kept(), default=True))
    return sum(int(m.sum()) for m in masks.values()), trainable.layer_parameter_count()


def readapt(model: onnx.ModelProto, piece: Slice, data: DataSource, *, eval_data: DataSource | None = None,
            attack: str = "fgsm", eps: float | str | None = AUTO, clip: tuple[float, float] | None = None,
            options: TrainingOptions | None = None, train_all: bool = False,
            samples: AdversarialSet | None = None) -> tuple[onnx.ModelProto, dict]:
    """The re-adapted model and the report (``tpr``, ``ra``, ``raa``, ``clean_before``, ``clean_after``, ...).

    Evaluated on ``eval_data`` (default: ``data``); ``eps``: a number in input units, "auto" (calibrated on
    ``data``, see the module notes) or None (0.1 of the input range); ``clip`` defaults as
    :meth:`AttackSpec.create` says; ``options`` default to :class:`TrainingOptions`'s; ``train_all`` trains every
    neuron (the full-training baseline) instead of the slice's critical ones; ``samples``: the adversarial set of
    ``data`` made by :func:`adversarial_set` with these attack settings (generated here when None)."""
    options = options or TrainingOptions()
    trainable = Trainable.from_onnx(model)
    samples = samples or adversarial_set(model, data, attack, eps, clip, options.seed, trainable)
    x, y, adv, spec = samples.x, samples.y, samples.adv, samples.spec
    x_eval, y_eval = prepared_arrays(model, eval_data) if eval_data is not None else (x, y)
    adv_eval = adv if eval_data is None else adversarial(spec, trainable.scores, trainable.module, x_eval, y_eval,
                                                         options.seed)
    chosen = {} if train_all else piece.kept()
    guard = FrozenGuard(trainable.module, trainable.masks(neuron_vectors(trainable.scan, chosen, default=True)))
    start = time.perf_counter()
    train_masked(trainable, guard, [torch.from_numpy(x), torch.from_numpy(adv)], torch.from_numpy(y), options)
    seconds = time.perf_counter() - start
    adapted = export(trainable, x_eval[:PROBE_SAMPLES])
    fresh = adversarial(spec, trainable.scores, trainable.module, x_eval, y_eval, options.seed + 1)
    return adapted, {
        "tpr": guard.trained / trainable.layer_parameter_count(),
        "trained_params": guard.trained,
        "layer_params": trainable.layer_parameter_count(),
        "ra": onnx_accuracy(adapted, adv_eval, y_eval),
        "ra_train": onnx_accuracy(adapted, adv, y),
        "raa": onnx_accuracy(adapted, fresh, y_eval),
        "clean_before": onnx_accuracy(model, x_eval, y_eval),
        "clean_after": onnx_accuracy(adapted, x_eval, y_eval),
        "adversarial_before": onnx_accuracy(model, adv_eval, y_eval),
        "seconds": seconds,
        "attack": spec.name, "eps": spec.eps, "clip": [spec.low, spec.high],
        "eps_calibrated_to": TARGET_ACCURACY[spec.name] if samples.calibrated else None,
        "train": "all" if train_all else "critical", "epochs": options.epochs,
        "samples": len(y), "eval_samples": len(y_eval),
    }
