"""Compression with slicing (paper §4.1, §5.3): restructure with a slice, then prune unstructured inside it.

The loop raises the target sparsity of the prunable weights (Conv / Gemm / MatMul weights) step by step
on a geometric schedule, s_k = 1 − (1 − step)^k (each iteration prunes ``step`` of the weights still
left, as in Lee et al.'s iterative pruning and consistent with the paper's Table 4, where CR = 1 − 0.95^NI
for the baselines), and keeps the last model whose accuracy is at most ``max_drop`` below the original
model's. Each iteration prunes the last kept model further; with fine-tuning (``finetune_options``), the pruned
model is then fine-tuned on ``train_data`` with its zero weights held at zero, the best epoch (epoch 0, the pruned
model itself, included) chosen on the same data as the stopping point.

The stopping point and the best epochs are chosen on ``data`` (a validation set); the figures reported are
measured on ``eval_data`` (a test set) when it is given, so that no choice is made on the reported data.
Reported as defined in the paper: CR, the parameter reduction versus the original model (a zero weight
counts as removed); NI, the number of pruning iterations kept; MA, the final accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxslice.compression.methods import Prunable, PruningMethod
from onnxslice.data import DataSource
from onnxslice.errors import InputError, SparsityUnreachable
from onnxslice.graph import constant_values, find_neuron_layers
from onnxslice.large import copy_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.measure.stats import FLOAT_TYPES, count_params
from onnxslice.progress import progress_bar
from onnxslice.surgery.restructure import restructure
from onnxslice.surgery.verify import verify

if TYPE_CHECKING:
    from onnxslice.cluster import Cluster
    from onnxslice.maintain.finetune import FinetuneOptions

log = logging.getLogger(__name__)

DEFAULT_STEP = 0.05
DEFAULT_MAX_DROP = 0.01
DEFAULT_MAX_ITERATIONS = 100
#: Samples per evaluation batch.
ACCURACY_BATCH = 256
#: Bytes of one stored value and of one stored index in the sparse-format estimate (float32, int32).
VALUE_BYTES = INDEX_BYTES = 4


@dataclass
class CompressResult:
    model: onnx.ModelProto  #: the last model within the accuracy budget
    cr: float  #: 1 − non-zero parameters of ``model`` / parameters of the original
    ni: int  #: pruning iterations kept
    ma: float  #: accuracy of ``model`` on the evaluation data
    accuracy_original: float  #: on the evaluation data
    accuracy_start: float  #: after restructuring (= original without a slice), on the evaluation data
    val_data: str  #: the data the stopping point (and fine-tuning's best epochs) were chosen on
    eval_data: str  #: the data ``ma``, ``accuracy_original`` and ``accuracy_start`` are measured on
    val_ma: float  #: the same three accuracies on the validation data (what the loop compared)
    val_accuracy_original: float
    val_accuracy_start: float
    params_original: int
    params_dense: int  #: parameters stored by ``model`` (zeros included)
    params_nonzero: int
    sparsity: float  #: fraction of the prunable weights that are zero in ``model``
    history: list[dict] = field(default_factory=list)  #: every evaluated iteration (accuracy on the validation data)
    finetune_epochs: int = 0  #: fine-tuning epochs after each pruning step
    max_drop: float = DEFAULT_MAX_DROP  #: the accuracy budget the loop ran under
    stopped: str = ""  #: why the loop ended
    restructure: dict | None = None  #: the restructure report, with a slice

    @property
    def within_budget(self) -> bool:
        """Whether ``model`` is at most the budget (``max_drop``) below the original on the validation data: false
        only when the slice alone already costs more."""
        return self.val_ma >= self.val_accuracy_original - self.max_drop

    def to_json(self) -> dict:
        fields = {k: v for k, v in vars(self).items() if k != "model"}
        return {**fields, "evaluations": len(self.history), "storage": sparse_storage(prunable_weights(self.model))}


def sparsity_at(iteration: int, step: float) -> float:
    """Target sparsity of iteration k: 1 − (1 − step)^k."""
    return 1.0 - (1.0 - step) ** iteration


def prunable_weights(model: onnx.ModelProto) -> list[Prunable]:
    """The constant weights of the model's neuron layers, in graph order, each once."""
    constants = constant_values(model)
    weights: dict[str, Prunable] = {}
    for layer in find_neuron_layers(model).layers:
        if layer.weight not in weights and constants[layer.weight].dtype == np.float32:
            weights[layer.weight] = Prunable(layer.weight, constants[layer.weight], layer.op_type)
    return list(weights.values())


def with_weights(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose named initializers hold ``values``."""
    result = copy_model(model)
    for init in result.graph.initializer:
        if init.name in values:
            init.CopyFrom(onnx.numpy_helper.from_array(np.asarray(values[init.name], np.float32), init.name))
    return result


def nonzero_params(model: onnx.ModelProto) -> int:
    return sum(int(np.count_nonzero(onnx.numpy_helper.to_array(init))) for init in model.graph.initializer
               if init.data_type in FLOAT_TYPES)


def sparse_storage(weights: Sequence[Prunable]) -> dict:
    """Bytes of the prunable weights stored dense (as written) and in CSR (rows = the first axis: values,
    column indices, row pointers), the saving a sparse format would bring."""
    dense = sum(w.values.size * VALUE_BYTES for w in weights)
    csr = sum(int(np.count_nonzero(w.values)) * (VALUE_BYTES + INDEX_BYTES) + (w.values.shape[0] + 1) * INDEX_BYTES
              for w in weights)
    return {"dense_bytes": dense, "csr_bytes": csr, "csr_saving": 1.0 - csr / dense if dense else 0.0}


def prune(model: onnx.ModelProto, weights: Sequence[Prunable], method: PruningMethod,
          sparsity: float) -> onnx.ModelProto:
    """``model`` with ``weights`` pruned to the overall ``sparsity`` by ``method`` (pruned entries set to 0)."""
    masks = method.keep_masks(weights, sparsity)
    return with_weights(model, {w.name: np.where(m, w.values, 0.0) for w, m in zip(weights, masks, strict=True)})


def compress(
    model: onnx.ModelProto,
    data: DataSource,
    method: PruningMethod,
    kept: Mapping[str, Sequence[int]] | None = None,
    step: float = DEFAULT_STEP,
    max_drop: float = DEFAULT_MAX_DROP,
    device: str = "auto",
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    progress: bool = False,
    eval_data: DataSource | None = None,
    train_data: DataSource | None = None,
    finetune_options: FinetuneOptions | None = None,
    cluster: Cluster | None = None,
) -> CompressResult:
    """Restructure ``model`` with ``kept`` (when given), then prune it by ``method`` at rising sparsity until the
    accuracy on ``data`` (the validation data) would fall more than ``max_drop`` below the original's; report on
    ``eval_data`` (default: ``data``). With ``finetune_options`` of one epoch or more, fine-tune on ``train_data``
    after each pruning step. ``progress``: a bar on stderr (one step per sparsity iteration) when stderr is a
    terminal. ``cluster``: the models are evaluated there, several iterations at once (the same result)."""
    if not 0.0 < step < 1.0:
        raise InputError(f"--step must be in (0, 1), got {step}")
    if not 0.0 <= max_drop <= 1.0:
        raise InputError(f"--max-drop must be in [0, 1], got {max_drop}")
    epochs = finetune_options.epochs if finetune_options is not None else 0
    if epochs and train_data is None:
        raise InputError("fine-tuning between pruning steps needs training data")
    if epochs and cluster is not None:
        raise InputError("--ray with --finetune-epochs: each pruning step fine-tunes the model kept before it, a "
                         "chain that no cluster can run in parallel; run it without --ray")
    tuning = replace(finetune_options, keep_zeros=True) if epochs else None
    start, report = model, None
    if kept is not None:
        start, restructured = restructure(model, kept)
        verify(model, start, kept)
        report = restructured.to_json()
    if kept is None:
        baseline = start_accuracy = _accuracies([model], data, device, cluster)[0]
    else:
        baseline, start_accuracy = _accuracies([model, start], data, device, cluster)
    floor = baseline - max_drop
    best, best_accuracy, kept_iterations = start, start_accuracy, 0
    history: list[dict] = []
    stopped = f"reached {max_iterations} iterations"
    if start_accuracy < floor:
        stopped = f"the restructured model is already {baseline - start_accuracy:.4f} below the original"
    else:
        # each candidate is pruned from the one before, which the loop keeps as long as it goes on: on a cluster,
        # as many candidates as it runs at once are made ahead and evaluated together (the first below the floor
        # ends the loop, as it does one at a time)
        window = cluster.slots if cluster is not None else 1
        with progress_bar(max_iterations, "compress", "iteration", progress) as bar:
            iteration, going = 0, True
            while going and iteration < max_iterations:
                candidates, unreachable, previous = [], None, best
                for number in range(iteration + 1, min(iteration + window, max_iterations) + 1):
                    target = sparsity_at(number, step)
                    try:
                        previous = prune(previous, prunable_weights(previous), method, target)
                    except SparsityUnreachable as exc:
                        unreachable = str(exc)
                        break
                    if tuning is not None:
                        from onnxslice.maintain.finetune import finetune  # torch: imported only when fine-tuning

                        previous = finetune(previous, train_data, tuning, val=data).model
                    candidates.append((number, target, previous))
                scores = _accuracies([candidate for *_, candidate in candidates], data, device, cluster)
                for (number, target, candidate), score in zip(candidates, scores, strict=True):
                    history.append({"iteration": number, "sparsity": target, "accuracy": score})
                    log.info("iteration %d: sparsity %.4f accuracy %.4f", number, target, score)
                    bar.update(1)
                    bar.set_postfix(sparsity=f"{target:.3f}", accuracy=f"{score:.4f}")
                    if score < floor:
                        stopped = f"iteration {number} (sparsity {target:.4f}) drops accuracy to {score:.4f}"
                        going = False
                        break
                    best, best_accuracy, kept_iterations = candidate, score, number
                if going and unreachable is not None:
                    stopped, going = unreachable, False
                iteration += len(candidates)
    if eval_data is None:
        original, started, final_accuracy = baseline, start_accuracy, best_accuracy
    else:
        scores = _accuracies([model, best] if kept is None else [model, best, start], eval_data, device, cluster)
        original, final_accuracy = scores[:2]
        started = original if kept is None else scores[2]
    params = count_params(model)
    remaining = nonzero_params(best)
    final = prunable_weights(best)
    zeros = sum(w.values.size - int(np.count_nonzero(w.values)) for w in final)
    return CompressResult(
        model=best, cr=1.0 - remaining / params, ni=kept_iterations, ma=final_accuracy,
        accuracy_original=original, accuracy_start=started, val_data=data.name,
        eval_data=data.name if eval_data is None else eval_data.name, val_ma=best_accuracy,
        val_accuracy_original=baseline, val_accuracy_start=start_accuracy, params_original=params,
        params_dense=count_params(best),
        params_nonzero=remaining, sparsity=zeros / max(sum(w.values.size for w in final), 1), history=history,
        finetune_epochs=epochs, max_drop=max_drop, stopped=stopped, restructure=report,
    )


def _accuracies(models: Sequence[onnx.ModelProto], data: DataSource, device: str,
                cluster: Cluster | None) -> list[float]:
    """The accuracy of each model on ``data``: one after another here, or in parallel on ``cluster``."""
    if cluster is None:
        return [accuracy(model, data, device, ACCURACY_BATCH)["accuracy"] for model in models]
    return cluster.accuracies(models, data, device, ACCURACY_BATCH)
