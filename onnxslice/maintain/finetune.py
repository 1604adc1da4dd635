"""Fine-tuning: plain cross-entropy training of every parameter through the PyTorch round trip.

ONNX → PyTorch (onnx2torch) → Adam on the cross entropy of all parameters → ONNX (the same verified export
as re-adaptation: the written model must reproduce the trained module on probe inputs). The validation
accuracy is measured before the first epoch (epoch 0, the unchanged model) and after every epoch; the best
epoch is kept, the earliest on ties, so fine-tuning never hands back a model worse on the validation data
than the one it was given. When the unchanged model is best, it is returned as given (no re-export).

BatchNormalization trains in eval mode by default (``batchnorm="eval"``): its running statistics are used
and kept, and only its scale and shift learn; eval mode also switches dropout off, which keeps runs
deterministic. Train mode normalises each batch by its own statistics, which stand in poorly for the running
statistics the weights were trained with when batches are small (the resnet18 collapse of issue 15), and
moves the running statistics towards them. Measured on digits:test after fine-tuning on digits:train
(lr 1e-4, batch 64, epochs 0 → 1 → 2 → 3): the bundled CNN exported with its BatchNorm nodes kept, eval
99.07 → 99.07 → 98.89 → 98.89%, train 99.07 → 99.26 → 99.07 → 99.26%; at batch 16, eval 99.07 → 98.89%,
train 99.07 → 99.07%; the JAX CNN (a BatchNormalization node), eval 98.33 → 98.52%, train 98.33 → 98.70%.
On these small models the two modes differ by one or two of 540 samples; eval mode is the default because
it cannot be hurt by small batches and a pruned model's channels keep their own statistics. Pass
``batchnorm="train"`` for a model whose statistics are themselves damaged.

Two learning rates. ``lr`` 3e-5 (the default) does not damage a trained model: resnet18 trained on digits
32×32 went 98.52 → 98.89 → 99.07% on digits32:test over two epochs at 3e-5, but fell to 97.22% after the first
epoch at 1e-4 (its BatchNorm is folded into the convolutions, which Adam then moves directly); the bundled MLP
and CNN keep or gain accuracy at both. :data:`REPAIR_LR` 1e-4 is for a model that pruning has damaged, which
:func:`onnxslice.pipeline.prune` uses: two epochs at 1e-4 take resnet18 pruned to half its MACs from 12–30% to
96.9–98.2% (benchmarks/deploy.py), and repair a damaged layer of the MLP within three epochs (81.3 → 95.4%).
5e-3 took a trained resnet18 from 96.3% to 17% in one epoch.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn
from tqdm import tqdm

from onnxslice.data import DataSource
from onnxslice.errors import InputError
from onnxslice.maintain.roundtrip import FrozenGuard, Trainable, export
from onnxslice.maintain.training import PROBE_SAMPLES, onnx_accuracy, prepared_arrays

log = logging.getLogger("onnxslice.finetune")

BATCHNORM_MODES = ("eval", "train")
#: The learning rate for repairing a model that pruning has damaged (see the module notes).
REPAIR_LR = 1e-4


@dataclass(frozen=True)
class FinetuneOptions:
    """Adam settings of :func:`finetune`; the defaults do not damage a trained model (see the module notes)."""

    epochs: int = 3
    lr: float = 3e-5
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.1  #: held out of the training data when no validation data is given
    batchnorm: str = "eval"  #: "eval" (running statistics, kept) or "train" (batch statistics, updated)
    keep_zeros: bool = False  #: parameter entries that are zero stay zero (fine-tuning a pruned model)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise InputError(f"--epochs must be at least 0, got {self.epochs}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise InputError(f"--batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {self.batchnorm}")


@dataclass
class FinetuneResult:
    model: onnx.ModelProto  #: the best epoch's model (verified export), or the given model when epoch 0 is best
    history: list[dict] = field(default_factory=list)  #: per epoch (0 = before training): train_loss, val_accuracy
    best_epoch: int = 0
    accuracy_before: float | None = None  #: on the validation data (onnxruntime), None without validation data
    accuracy_after: float | None = None
    train_samples: int = 0
    val_samples: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch, "accuracy_before": self.accuracy_before,
                "accuracy_after": self.accuracy_after, "train_samples": self.train_samples,
                "val_samples": self.val_samples, "seconds": self.seconds}


def split_holdout(data: DataSource, fraction: float, seed: int = 0) -> tuple[DataSource, DataSource | None]:
    """A stratified random ``fraction`` of ``data`` held out (at least one sample of every class that has two
    or more) and the rest; ``fraction`` 0 holds nothing out."""
    if fraction <= 0:
        return data, None
    rng = np.random.default_rng(seed)
    held = []
    for c in data.classes:
        members = np.flatnonzero(data.labels == c)
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        held.append(rng.choice(members, size=count, replace=False))
    held_out = np.sort(np.concatenate(held))
    if len(held_out) == 0:
        raise InputError(f"{data.name}: too few samples to hold out a validation fraction (give --val-data)")
    rest = np.setdiff1d(np.arange(len(data)), held_out)
    return data.subset(rest, f"{data.name} (train part)"), data.subset(held_out, f"{data.name} (held out)")


def finetune(model: onnx.ModelProto, data: DataSource, options: FinetuneOptions | None = None,
             val: DataSource | None = None, progress: bool = False) -> FinetuneResult:
    """Train every parameter of ``model`` on ``data`` (Adam, cross entropy) and keep the best epoch by accuracy
    on ``val`` (default: ``options.val_fraction`` of ``data`` held out; with fraction 0 and no ``val``, the
    last epoch is kept). Seeded: the same inputs give the same model."""
    options = options or FinetuneOptions()
    start = time.perf_counter()
    train_data = data
    if val is None:
        train_data, val = split_holdout(data, options.val_fraction, options.seed)
    x, y = prepared_arrays(model, train_data)
    x_val, y_val = prepared_arrays(model, val) if val is not None else (None, None)
    trainable = Trainable.from_onnx(model)
    module = trainable.module
    torch.manual_seed(options.seed)
    for param in module.parameters():
        param.requires_grad_(True)
    guard = FrozenGuard(module, {path: param != 0 for path, param in module.named_parameters()}) \
        if options.keep_zeros else None

    def val_accuracy() -> float | None:
        if x_val is None:
            return None
        module.eval()
        with torch.no_grad():
            hits = sum(int((trainable.scores(torch.from_numpy(x_val[i:i + 256])).argmax(1).numpy()
                            == y_val[i:i + 256]).sum()) for i in range(0, len(y_val), 256))
        return hits / len(y_val)

    history = [{"epoch": 0, "train_loss": None, "val_accuracy": val_accuracy()}]
    best_epoch, best_state = 0, None
    if options.epochs and len(y):
        parameters = guard.parameters if guard is not None else list(module.parameters())
        optimizer = torch.optim.Adam(parameters, lr=options.lr, weight_decay=options.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(options.seed)
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        batches = -(-len(y) // options.batch_size)
        show = progress and sys.stderr.isatty()
        with tqdm(total=options.epochs * batches, desc="finetune", unit="batch", file=sys.stderr,
                  disable=not show) as bar:
            for epoch in range(1, options.epochs + 1):
                module.train(options.batchnorm == "train")
                total = 0.0
                for batch in torch.randperm(len(y), generator=generator).split(options.batch_size):
                    optimizer.zero_grad()
                    loss = loss_fn(trainable.scores(inputs[batch]), labels[batch])
                    loss.backward()
                    optimizer.step()
                    if guard is not None:
                        guard.restore()
                    total += loss.item() * len(batch)
                    bar.update(1)
                accuracy = val_accuracy()
                history.append({"epoch": epoch, "train_loss": total / len(y), "val_accuracy": accuracy})
                bar.set_postfix(loss=f"{total / len(y):.4f}",
                                val=f"{accuracy:.4f}" if accuracy is not None else "-")
                log.info("epoch %d: train loss %.4f, val accuracy %s", epoch, total / len(y), accuracy)
                if accuracy is None or accuracy > history[best_epoch]["val_accuracy"]:
                    best_epoch, best_state = epoch, copy.deepcopy(module.state_dict())
    result = FinetuneResult(model, history, best_epoch, train_samples=len(y),
                            val_samples=0 if y_val is None else len(y_val))
    if best_state is not None:
        module.load_state_dict(best_state)
        module.eval()
        probe = (x_val if x_val is not None else x)[:PROBE_SAMPLES]
        result.model = export(trainable, probe)
    if x_val is not None:
        result.accuracy_before = onnx_accuracy(model, x_val, y_val)
        result.accuracy_after = (result.accuracy_before if result.model is model
                                 else onnx_accuracy(result.model, x_val, y_val))
    result.seconds = time.perf_counter() - start
    return result
