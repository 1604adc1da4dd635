"""Pruning in one call: profile → slice to a size budget → restructure (verified) → fine-tune → evaluate.

The call a deployment pipeline makes. Each step is the library's own (:func:`profile_model`,
:func:`slice_to_budget`, :func:`restructure` and :func:`verify`, :func:`finetune`, :func:`accuracy`,
:func:`latency`); this module only chains them and judges the result as a user does: the pruned model must
not be slower than the original (by more than :data:`MAX_SLOWDOWN`) nor much less accurate (by more than
:data:`MAX_ACCURACY_DROP`). :meth:`PruneResult.problems` says which rule a result breaks, in words.

Data: the training data is split into a part that is profiled and trained on and a held-out part
(``FinetuneOptions.val_fraction``, unless validation data is given) on which fine-tuning chooses its best
epoch; accuracies are reported on ``eval_data`` (default: the validation data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnxslice.data import DataSource
from onnxslice.maintain.finetune import REPAIR_LR, FinetuneOptions, FinetuneResult, finetune, split_holdout
from onnxslice.measure.evaluate import accuracy
from onnxslice.measure.stats import DEFAULT_LATENCY_SECONDS, count_macs, count_params, latency
from onnxslice.profiling.profiler import DEFAULT_MAX_PER_CLASS, profile_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, budget_kind, slice_to_budget
from onnxslice.slicing.summary import neuron_fraction
from onnxslice.surgery.restructure import restructure
from onnxslice.surgery.verify import Verification, probe_samples, verify

log = logging.getLogger("onnxslice.pipeline")

DEFAULT_STRATEGY = "global"
#: Fine-tuning after pruning: the repair rate (the pruned model is damaged; see onnxslice.maintain.finetune).
PRUNE_FINETUNING = FinetuneOptions(lr=REPAIR_LR)
DEFAULT_METRIC = "taylor"
#: The pruned model may be at most this much slower than the original (latency ratio 1.05).
MAX_SLOWDOWN = 0.05
#: ... and at most this much less accurate (an absolute fraction: 2 points).
MAX_ACCURACY_DROP = 0.02


@dataclass
class PruneResult:
    model: onnx.ModelProto  #: the pruned, fine-tuned model
    slice: Slice
    verification: Verification  #: the restructured model against the masked original
    finetuned: FinetuneResult
    before: dict  #: the original: params, macs, accuracy, latency_ms
    after: dict  #: the written model: the same figures
    accuracy_pruned: float  #: the restructured model before fine-tuning
    eval_data: str
    latency_batch: int
    restructure_report: dict = field(default_factory=dict)

    @property
    def latency_ratio(self) -> float | None:
        if self.before["latency_ms"] is None or self.after["latency_ms"] is None:
            return None
        return self.after["latency_ms"] / self.before["latency_ms"]

    def problems(self) -> list[str]:
        """The rules the pruned model breaks, one sentence each: more than 5% slower, more than 2 points less
        accurate than the original (the latency rule is not checked when latency was not measured)."""
        found = []
        ratio = self.latency_ratio
        if ratio is not None and ratio > 1.0 + MAX_SLOWDOWN:
            found.append(f"the pruned model is {ratio - 1:.1%} slower than the original "
                         f"({self.after['latency_ms']:.3f} vs {self.before['latency_ms']:.3f} ms per batch of "
                         f"{self.latency_batch})")
        drop = self.before["accuracy"] - self.after["accuracy"]
        if drop > MAX_ACCURACY_DROP:
            found.append(f"the pruned model is {100 * drop:.1f} points less accurate than the original "
                         f"({self.after['accuracy']:.2%} vs {self.before['accuracy']:.2%} on {self.eval_data})")
        return found

    @property
    def acceptable(self) -> bool:
        return not self.problems()

    def to_json(self) -> dict:
        ratio = self.latency_ratio
        piece = self.slice
        return {
            **{f"{key}_before": value for key, value in self.before.items()},
            **{f"{key}_after": value for key, value in self.after.items()},
            "params_fraction": self.after["params"] / self.before["params"],
            "macs_fraction": self.after["macs"] / self.before["macs"] if self.before["macs"] else None,
            "latency_ratio": ratio, "latency_batch": self.latency_batch,
            "accuracy_pruned": self.accuracy_pruned, "eval_data": self.eval_data,
            "target": piece.target, "strategy": piece.strategy, "metric": piece.metric, "theta": piece.theta,
            "ratio": piece.ratio, "round_to": piece.round_to, "neuron_fraction": neuron_fraction(piece),
            "max_abs_diff": self.verification.max_abs_diff, "probes": self.verification.probes,
            "finetune": self.finetuned.to_json(), "best_epoch": self.finetuned.best_epoch,
            "problems": self.problems(), "acceptable": self.acceptable, **self.restructure_report,
        }


def prune(model: onnx.ModelProto, data: DataSource, *, target_macs: float | None = None,
          target_params: float | None = None, strategy: str = DEFAULT_STRATEGY, metric: str = DEFAULT_METRIC,
          round_to: int = DEFAULT_ROUND_TO, options: FinetuneOptions | None = None,
          val_data: DataSource | None = None, eval_data: DataSource | None = None, device: str = "auto",
          max_per_class: int = DEFAULT_MAX_PER_CLASS, latency_batch: int = 32,
          latency_seconds: float = DEFAULT_LATENCY_SECONDS, model_path: str | Path | None = None,
          progress: bool = False) -> PruneResult:
    """Prune the canonical ``model`` to ``target_macs`` or ``target_params`` (a fraction of the original's,
    reached within ±2%) and fine-tune it on ``data``; see the module notes for the data and the rules.
    ``model_path``: the file ``model`` was loaded from (the profile records its hash); ``latency_seconds`` 0
    skips the latency measurement."""
    kind, target = budget_kind(target_params, target_macs)  # a bad budget fails before any work
    options = options or PRUNE_FINETUNING
    train, val = (data, val_data) if val_data is not None else split_holdout(data, options.val_fraction,
                                                                             options.seed)
    judged = eval_data or val or data
    profile = profile_model(model_path, train, [metric], max_per_class, device, progress=progress, loaded=model)
    piece = slice_to_budget(model, profile, metric, strategy, round_to=round_to, **{f"target_{kind}": target})
    kept = piece.kept()
    pruned, report = restructure(model, kept)
    check = verify(model, pruned, kept, "cpu", samples=probe_samples(train, model))
    accuracy_pruned = accuracy(pruned, judged, device)["accuracy"]
    tuned = finetune(pruned, train, options, val=val, progress=progress)
    before = {"params": count_params(model), "macs": count_macs(model),
              "accuracy": accuracy(model, judged, device)["accuracy"]}
    after = {"params": count_params(tuned.model), "macs": count_macs(tuned.model),
             "accuracy": accuracy(tuned.model, judged, device)["accuracy"]}
    before["latency_ms"], after["latency_ms"] = _latencies(model, tuned.model, latency_batch, latency_seconds, device)
    log.info("pruned to %s %.3f of the original: accuracy %.4f -> %.4f (before fine-tuning %.4f)", kind,
             after[kind] / before[kind], before["accuracy"], after["accuracy"], accuracy_pruned)
    return PruneResult(tuned.model, piece, check, tuned, before, after, accuracy_pruned, judged.name, latency_batch,
                       report.to_json())


def _latencies(original: onnx.ModelProto, pruned: onnx.ModelProto, batch: int, seconds: float,
               device: str) -> tuple[float | None, float | None]:
    """Milliseconds per batch of both models (None, None when ``seconds`` is 0). A pruned model measured slower
    is measured again, both models, and the quicker of each pair kept: on a shared machine one measurement
    can catch a busy neighbour."""
    if seconds == 0:
        return None, None
    half = seconds / 2

    def measure() -> tuple[float, float]:
        return (latency(original, batch, device=device, max_seconds=half).ms,
                latency(pruned, batch, device=device, max_seconds=half).ms)

    before, after = measure()
    if after > before * (1.0 + MAX_SLOWDOWN):
        again = measure()
        before, after = min(before, again[0]), min(after, again[1])
    return before, after
