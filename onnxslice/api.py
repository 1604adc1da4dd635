"""The Python API: one function per job, over a loaded :class:`Model` that derives its layers, groups and hash once.

Every function takes a :class:`Model` (or a path), data as a :class:`~onnxslice.data.DataSource` or a data spec
(``"digits:train"``, ``"data.npz:0-4"``, an image folder), and returns the artifacts the commands write: a
:class:`~onnxslice.profiling.Profile`, a :class:`~onnxslice.slicing.artifact.Slice`, a new :class:`Model`. The
commands are this API plus argument parsing and printing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from onnxslice.data import DataSource, load_data
from onnxslice.files import sha256_of
from onnxslice.graph import LayerScan, canonicalize, find_neuron_layers, load_model
from onnxslice.large import write_model
from onnxslice.profiling.artifact import Profile
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, slice_model
from onnxslice.slicing.groups import SelectionGroups

if TYPE_CHECKING:
    from onnxslice.compression.loop import CompressResult
    from onnxslice.maintain.finetune import FinetuneResult
    from onnxslice.pipeline import PruneResult
    from onnxslice.surgery.restructure import RestructureReport
    from onnxslice.surgery.verify import Verification


@dataclass(eq=False)
class Model:
    """A canonical ONNX model and what every stage derives from it, computed once on first use."""

    proto: onnx.ModelProto
    path: Path | None = None  #: the file it was loaded from (profiles record its hash)

    @cached_property
    def layers(self) -> LayerScan:
        """The neuron layers (Conv / Gemm / MatMul with constant weights) and the nodes skipped, with reasons."""
        return find_neuron_layers(self.proto)

    @cached_property
    def groups(self) -> SelectionGroups:
        """The channel groups restructure removes together, as slicing decides on them."""
        return SelectionGroups.of_model(self.proto)

    @cached_property
    def sha256(self) -> str | None:
        """The hash of the file it was loaded from (None for a model made in memory)."""
        return sha256_of(self.path) if self.path is not None else None

    def save(self, path: str | Path) -> Path:
        """Write the model atomically (weights past 2 GB as external data) and return the path."""
        write_model(self.proto, Path(path))
        return Path(path)


def load(path: str | Path) -> Model:
    """The model in ``path``, checked (one data input, a known opset) and brought to canonical form."""
    return Model(load_model(path), Path(path))


def _model(model: Model | str | Path) -> Model:
    return model if isinstance(model, Model) else load(model)


def _data(data: DataSource | str) -> DataSource:
    return data if isinstance(data, DataSource) else load_data(data)


def profile(model: Model | str | Path, data: DataSource | str, metrics: Sequence[str] = ("avg",),
            max_per_class: int | None = None, device: str = "auto", progress: bool = False) -> Profile:
    """Per-category contributions of every hidden neuron by each metric, and the CKA statistics (``profile``)."""
    from onnxslice.profiling.profiler import DEFAULT_MAX_PER_CLASS, profile_model

    model = _model(model)
    return profile_model(model.path, _data(data), metrics, max_per_class or DEFAULT_MAX_PER_CLASS, device,
                         progress=progress, loaded=model.proto)


def select(model: Model | str | Path, profile: Profile, metric: str, strategy: str = "semantic", *,
           theta: float | None = None, ratio: float | None = None, target_macs: float | None = None,
           target_params: float | None = None, round_to: int = DEFAULT_ROUND_TO) -> Slice:
    """The critical neurons at Θ (semantic) or a ratio (global, category), or to a size budget (``slice``)."""
    model = _model(model)
    return slice_model(model.proto, profile, metric, strategy, theta=theta, ratio=ratio, round_to=round_to,
                       target_macs=target_macs, target_params=target_params, groups=model.groups)


def mask(model: Model | str | Path, piece: Slice) -> Model:
    """The model with the neurons the slice drops multiplied by zero (``mask``): same shapes, their effect gone."""
    from onnxslice.surgery.mask import mask_model

    return Model(mask_model(_model(model).proto, piece.kept()))


@dataclass(frozen=True)
class Restructured:
    """A restructured model, what was removed per layer, and the check against the masked original."""

    model: Model
    report: RestructureReport
    verification: Verification | None  #: None when not verified


def restructure(model: Model | str | Path, piece: Slice, verify: bool = True,
                data: DataSource | str | None = None) -> Restructured:
    """The model with the dropped neurons physically removed (``restructure``); by default checked to equal the
    masked original on ``data`` samples (when given) and on scaled random probes, else VerificationError."""
    from onnxslice.surgery.restructure import restructure as remove
    from onnxslice.surgery.verify import probe_samples
    from onnxslice.surgery.verify import verify as check

    model = _model(model)
    kept = piece.kept()
    pruned, report = remove(model.proto, kept)
    samples = probe_samples(_data(data), model.proto) if data is not None else None
    verification = check(model.proto, pruned, kept, samples=samples) if verify else None
    return Restructured(Model(pruned), report, verification)


def evaluate(model: Model | str | Path, data: DataSource | str, device: str = "auto") -> dict:
    """Accuracy (overall and per class), parameters, MACs and latency per batch of 32 (``evaluate``)."""
    from onnxslice.measure.evaluate import evaluate as measure

    return measure(_model(model).proto, _data(data), device)


def finetune(model: Model | str | Path, data: DataSource | str, val: DataSource | str | None = None,
             **options) -> FinetuneResult:
    """Plain fine-tuning of every parameter, best epoch on ``val`` or a held-out part of ``data`` (``finetune``).
    ``options``: fields of :class:`onnxslice.maintain.finetune.FinetuneOptions` (epochs, lr, batch_size, ...).
    Returns a FinetuneResult whose ``model`` is a :class:`Model`."""
    from onnxslice.maintain.finetune import FinetuneOptions
    from onnxslice.maintain.finetune import finetune as train

    result = train(_model(model).proto, _data(data), FinetuneOptions(**options),
                   val=_data(val) if val is not None else None)
    return replace(result, model=Model(canonicalize(result.model)))  # the export is new: canonical like the rest


def prune(model: Model | str | Path, data: DataSource | str, *, target_macs: float | None = None,
          target_params: float | None = None, eval_data: DataSource | str | None = None,
          **settings) -> PruneResult:
    """Profile → slice to the budget → restructure (verified) → fine-tune → evaluate (``prune``). ``settings``:
    keyword arguments of :func:`onnxslice.pipeline.prune` (strategy, metric, round_to, options, ...). The result's
    ``acceptable`` is False (and ``problems()`` says why) when the pruned model is slower or far less accurate;
    its ``model`` is a :class:`Model`."""
    from onnxslice.pipeline import prune as run

    model = _model(model)
    result = run(model.proto, _data(data), target_macs=target_macs, target_params=target_params,
                 eval_data=_data(eval_data) if eval_data is not None else None, model_path=model.path, **settings)
    return replace(result, model=Model(canonicalize(result.model)))


def readapt(model: Model | str | Path, piece: Slice, data: DataSource | str, eval_data: DataSource | str | None = None,
            attack: str = "fgsm", eps: float | None = None, clip: tuple[float, float] | None = None,
            train_all: bool = False, **options) -> tuple[Model, dict]:
    """Re-train only the critical neurons against adversarial samples (``readapt``); the model and the report
    (RA, RAA, TPR, clean accuracy). ``options``: fields of :class:`onnxslice.maintain.training.TrainingOptions`."""
    from onnxslice.maintain.readapt import readapt as run
    from onnxslice.maintain.training import TrainingOptions

    adapted, report = run(_model(model).proto, piece, _data(data), eval_data=_data(eval_data) if eval_data else None,
                          attack=attack, eps=eps, clip=clip, options=TrainingOptions(**options), train_all=train_all)
    return Model(adapted), report


def incremental(model: Model | str | Path, piece: Slice, new_data: DataSource | str,
                replay: DataSource | str | None = None, old_eval: DataSource | str | None = None,
                new_eval: DataSource | str | None = None, train_all: bool = False,
                **options) -> tuple[Model, Model, dict]:
    """Teach new classes with the critical neurons of the old ones frozen (``incremental``); the new model, the
    old-task model and the report (task A, task B, mean)."""
    from onnxslice.maintain.incremental import incremental as run
    from onnxslice.maintain.training import TrainingOptions

    def optional(data: DataSource | str | None) -> DataSource | None:
        return _data(data) if data is not None else None

    new, old, report = run(_model(model).proto, piece, _data(new_data), replay=optional(replay),
                           old_eval=optional(old_eval), new_eval=optional(new_eval), options=TrainingOptions(**options),
                           train_all=train_all)
    return Model(new), Model(old), report


def compress(model: Model | str | Path, data: DataSource | str, method: str = "lamp", piece: Slice | None = None,
             **settings) -> CompressResult:
    """Restructure by the slice (when given), then prune weights by ``method`` at rising sparsity while the
    accuracy stays within ``max_drop`` (``compress``). ``settings``: step, max_drop, device, max_iterations."""
    from onnxslice.compression.loop import compress as run
    from onnxslice.compression.methods import make_method

    return run(_model(model).proto, _data(data), make_method(method), piece.kept() if piece else None, **settings)


def sweep(model: Model | str | Path, profile: Profile | None, data: DataSource | str,
          strategies: Sequence[str] = ("semantic", "global"), thetas: Sequence[float] = (),
          ratios: Sequence[float] = (), **settings) -> list[dict]:
    """Accuracy against compression for each strategy × metric × Θ / ratio / budget (``sweep``); one dict per
    point. ``settings``: targets, target_kind, round_to, device, deeparc_data, deeparc_threshold."""
    from onnxslice.compression.sweep import sweep as run

    return run(_model(model).proto, profile, _data(data), strategies, thetas, ratios, **settings)
