"""The Python API: one function per job, over a loaded :class:`Model` that derives its layers, groups and hash once.

Every function takes a :class:`Model` (or a path), data as a :class:`~onnxslice.data.DataSource` or a data spec
(``"digits:train"``, ``"data.npz:0-4"``, an image folder), and returns the artifacts the commands write: a
:class:`~onnxslice.profiling.Profile`, a :class:`~onnxslice.slicing.artifact.Slice`, a new :class:`Model`. The
commands are this API plus argument parsing and printing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from onnxslice.data import DataSource, classes_in, load_data, parse_class_filter
from onnxslice.errors import InputError
from onnxslice.files import sha256_of, write_atomically
from onnxslice.graph import LayerScan, canonicalize, find_neuron_layers, load_model
from onnxslice.large import write_model
from onnxslice.measure.stats import count_macs, count_params
from onnxslice.profiling.artifact import Profile
from onnxslice.profiling.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, slice_model
from onnxslice.slicing.groups import SelectionGroups

if TYPE_CHECKING:
    from onnxslice.cluster import Cluster
    from onnxslice.compression.loop import CompressResult
    from onnxslice.maintain.finetune import FinetuneResult
    from onnxslice.pipeline import PruneResult
    from onnxslice.surgery.restructure import RestructureReport
    from onnxslice.surgery.verify import Verification

log = logging.getLogger("onnxslice")

#: The metric that orders the neurons when none is named (with a profile: when the profile has it).
DEFAULT_METRIC = "taylor"
#: Where readapt's slice comes from: the slice given, or a profile of the adversarial samples it trains on.
SLICE_ON = ("clean", "adversarial")
#: File types the slice plot of :func:`inspect` is written as.
PLOT_FORMATS = (".png", ".svg", ".pdf")


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

    @cached_property
    def params(self) -> int:
        """Floating-point constants: weights, biases, normalisation parameters."""
        return count_params(self.proto)

    @cached_property
    def macs(self) -> int:
        """Multiply-accumulates of one sample."""
        return count_macs(self.proto)

    def save(self, path: str | Path) -> str | None:
        """Write the model atomically; past 2 GB its weights go to ``<path>.data``, whose name is returned
        (None when the weights are in the file)."""
        return write_model(self.proto, Path(path))


def load(path: str | Path) -> Model:
    """The model in ``path``, checked (one data input, a known opset) and brought to canonical form."""
    return Model(load_model(path), Path(path))


def load_profile(path: str | Path, model: Model | str | Path, metrics: Sequence[str] = ()) -> Profile:
    """The profile in ``path``, checked to be of ``model`` (by its file's hash; a model made in memory has none)
    and to hold ``metrics``, else an InputError."""
    model = _model(model)
    profile = Profile.load(path)
    if model.sha256 is not None:
        profile.check_against(model.sha256, path, model.path)
    missing = [m for m in metrics if m not in profile.metrics]
    if missing:
        raise InputError(f"{path}: the profile has no {', '.join(missing)} (it has {', '.join(profile.metrics)})")
    return profile


def load_slice(path: str | Path, model: Model | str | Path | None = None) -> Slice:
    """The slice in ``path``; with ``model``, checked to be made for it (its file's hash and neuron layers), else
    an InputError."""
    piece = Slice.load(path)
    if model is not None:
        _check_slice(piece, _model(model))
    return piece


def _check_slice(piece: Slice, model: Model) -> None:
    """A slice made for another model (by its file's hash and its layers) is an InputError."""
    if model.sha256 is not None:
        piece.check_against(model.sha256, model.layers, model.path)


def _model(model: Model | str | Path) -> Model:
    return model if isinstance(model, Model) else load(model)


def _data(data: DataSource | str) -> DataSource:
    return data if isinstance(data, DataSource) else load_data(data)


def _optional(data: DataSource | str | None) -> DataSource | None:
    return _data(data) if data is not None else None


def profile(model: Model | str | Path, data: DataSource | str, metrics: Sequence[str] = ("avg",),
            max_per_class: int | None = None, device: str = "auto", progress: bool = False,
            batch_size: int = DEFAULT_BATCH_SIZE, ray: str | None = None, shards: int | None = None) -> Profile:
    """Per-category contributions of every hidden neuron by each metric, and the CKA statistics (``profile``).
    ``ray``: measure it in shards on Ray, a local one started for the call (``"local"``), the cluster this machine
    belongs to (``"auto"``) or one at an address; the same profile as in this process. ``shards``: how many (default:
    as many as the cluster runs at once). ``data`` must then be a data argument (or opened by :func:`load_data`):
    each worker opens it itself."""
    model = _model(model)
    with _cluster(ray, device) as cluster:
        return _profile(model, data, metrics, max_per_class, device, batch_size, progress, cluster, shards)


@contextmanager
def _cluster(ray: str | None, device: str) -> Iterator[Cluster | None]:
    """A Ray cluster connected for the duration (see :func:`onnxslice.cluster.connected`), or None without ``ray``."""
    if ray is None:
        yield None
        return
    from onnxslice.cluster import connected

    with connected(ray, device) as cluster:
        yield cluster


def _profile(model: Model, data: DataSource | str, metrics: Sequence[str], max_per_class: int | None,
             device: str, batch_size: int, progress: bool = False, cluster: Cluster | None = None,
             shards: int | None = None) -> Profile:
    if cluster is not None:
        from onnxslice.profiling.sharded import profile_on_ray

        return profile_on_ray(cluster, model.proto, model.path, _data(data), metrics,
                              max_per_class or DEFAULT_MAX_PER_CLASS, device, batch_size, progress, shards)
    from onnxslice.profiling.profiler import profile_model

    return profile_model(model.path, _data(data), metrics, max_per_class or DEFAULT_MAX_PER_CLASS, device,
                         batch_size, progress=progress, loaded=model.proto)


def select(model: Model | str | Path, profile: Profile | None, metric: str | None = None,
           strategy: str = "semantic", *, data: DataSource | str | None = None, theta: float | None = None,
           ratio: float | None = None, step: int = 1, centered: bool = True, representation: str | None = None,
           target_macs: float | None = None, target_params: float | None = None, round_to: int = DEFAULT_ROUND_TO,
           max_per_class: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
           progress: bool = False) -> Slice:
    """The critical neurons at Θ (semantic, shared) or a ratio (global, category), or to a size budget (``slice``).

    Without a ``profile``, the model is first profiled on ``data`` by ``metric`` alone. ``metric`` None: taylor,
    or the profile's first metric when it has no taylor. ``step``, ``centered``, ``representation``: the
    Θ strategies' prefix interval, CKA form and conv-neuron representation; ``progress``: a bar on stderr
    while profiling."""
    model = _model(model)
    if profile is None:
        if data is None:
            raise InputError("--data is required (or give --profile with a profile of the model)")
        metric = metric or DEFAULT_METRIC
        profile = _profile(model, data, [metric], max_per_class, device, batch_size, progress)
    elif metric is None:
        metric = DEFAULT_METRIC if DEFAULT_METRIC in profile.metrics else profile.metrics[0]
    return slice_model(model.proto, profile, metric, strategy, theta=theta, ratio=ratio, step=step,
                       centered=centered, representation=representation, round_to=round_to,
                       target_macs=target_macs, target_params=target_params, groups=model.groups)


def inspect(piece: Slice, model: Model | str | Path | None = None, plot: str | Path | None = None,
            name: str = "") -> dict:
    """What ``piece`` keeps (``inspect``): per layer and category, the neuron fraction, and the size restructure
    reaches (recomputed for ``model``, which the slice must be made for). With ``plot``, a bar chart of kept /
    total neurons per layer is written there (PNG, SVG or PDF by its suffix), titled with ``name`` (the
    model's file name when there is a model) and the slice's settings."""
    from onnxslice.slicing.summary import layer_table, neuron_fraction

    plot_path = Path(plot) if plot is not None else None
    if plot_path and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise InputError(f"--plot {plot}: give a file ending in {', '.join(PLOT_FORMATS)}")
    result = {"metric": piece.metric, "strategy": piece.strategy, "theta": piece.theta, "ratio": piece.ratio,
              "round_to": piece.round_to, "target": piece.target, "layers": layer_table(piece),
              "neuron_fraction": neuron_fraction(piece), **(piece.restructured or {})}
    if model is not None:
        model = _model(model)
        _check_slice(piece, model)
        piece.name_layers(model.layers)  # slices written before display names were recorded
        result["layers"] = layer_table(piece)
        result.update(model.groups.size_of_slice(piece.kept()))
        name = model.path.name if model.path is not None else name
    if plot_path:
        from onnxslice.slicing.plot import plot_layers, plot_title

        title = plot_title(result, name)
        write_atomically(plot_path, lambda tmp: plot_layers(result["layers"], tmp, plot_path.suffix, title))
        result["plot"] = str(plot_path)
    return result


def mask(model: Model | str | Path, piece: Slice, check: bool = True) -> Model:
    """The model with the neurons the slice drops multiplied by zero (``mask``): same shapes, their effect gone.
    ``check``: the masked model must pass the ONNX checker and run with the original's output shapes."""
    from onnxslice.large import check_model
    from onnxslice.surgery.mask import mask_model

    model = _model(model)
    masked = mask_model(model.proto, piece.kept())
    if check:
        check_model(masked)
        _check_runs(model.proto, masked)
    return Model(masked)


def _check_runs(original: onnx.ModelProto, masked: onnx.ModelProto) -> None:
    """Run the masked model in onnxruntime on a zero input of the model's own shape; its outputs must have the
    original's shapes. Skipped when that probe does not fit the original itself (e.g. dynamic image sizes)."""
    import numpy as np

    from onnxslice.measure.stats import fixed_input_shape
    from onnxslice.runtime import make_session, run_session

    probe = np.zeros(fixed_input_shape(original, batch=2), np.float32)
    try:
        expected = run_session(make_session(original, "cpu"), probe)
    except Exception:  # noqa: BLE001 - the probe shape does not fit this model: nothing to compare with
        log.debug("mask: the probe input does not fit %s; run check skipped", original.graph.name, exc_info=True)
        return
    shapes = [out.shape for out in run_session(make_session(masked, "cpu"), probe)]
    if shapes != [out.shape for out in expected]:
        raise RuntimeError(f"the masked model's output shapes {shapes} differ from the original's")


def kept_fraction(model: Model | str | Path, piece: Slice) -> dict:
    """How much of ``model`` the slice keeps: ``params`` / ``params_kept`` / ``fraction`` (the parameters the
    masked model still uses), ``neuron_fraction``, and ``zeroed``, the neurons it drops per layer."""
    from onnxslice.slicing.summary import neuron_fraction, parameter_fraction

    return {**parameter_fraction(_model(model).proto, piece), "neuron_fraction": neuron_fraction(piece),
            "zeroed": {name: layer.size - len(layer.kept) for name, layer in piece.layers.items()}}


@dataclass(frozen=True)
class Restructured:
    """A restructured model, what was removed per layer, and the check against the masked original."""

    model: Model
    report: RestructureReport
    verification: Verification | None  #: None when not verified
    #: params / MACs before and after, and ``latency_ms_before`` / ``latency_ms_after`` (None when not measured)
    sizes: dict

    def to_json(self) -> dict:
        """The sizes, the verification's figures and the report, as ``onnxslice restructure --json`` gives them."""
        check = self.verification
        verified = ({"max_abs_diff": check.max_abs_diff, "output_scale": check.output_scale, "probes": check.probes,
                     "verification_informative": check.informative} if check is not None else {})
        return {**self.sizes, **verified, **self.report.to_json()}


def restructure(model: Model | str | Path, piece: Slice, verify: bool = True, data: DataSource | str | None = None,
                device: str = "auto", latency_batch: int = 32, latency_seconds: float = 0.0) -> Restructured:
    """The model with the dropped neurons physically removed (``restructure``); by default checked to equal the
    masked original on ``data`` samples (when given) and on scaled random probes, else VerificationError.
    ``latency_seconds``: time to spend timing each model on batches of ``latency_batch`` (0: not timed)."""
    from onnxslice.surgery.restructure import restructure as remove
    from onnxslice.surgery.verify import probe_samples
    from onnxslice.surgery.verify import verify as check

    model = _model(model)
    kept = piece.kept()
    pruned, report = remove(model.proto, kept)
    samples = probe_samples(_data(data), model.proto) if data is not None else None
    verification = check(model.proto, pruned, kept, device, samples=samples) if verify else None
    if verification is not None and not verification.informative:
        log.warning("restructure: verification says little: the model's outputs hardly vary across %s "
                    "(output scale %.3g); give --data for real inputs", verification.probes,
                    verification.output_scale)
    smaller = Model(pruned)
    sizes = {"params_before": model.params, "params_after": smaller.params, "macs_before": model.macs,
             "macs_after": smaller.macs, **_latencies(model, smaller, latency_batch, latency_seconds, device)}
    return Restructured(smaller, report, verification, sizes)


def _latencies(original: Model, pruned: Model, batch: int, seconds: float, device: str) -> dict:
    """``latency_ms_before/after`` (None when ``seconds`` is 0: ``latency_skipped``), with the runs and seconds
    each measurement took."""
    from onnxslice.measure.stats import latency

    if seconds == 0:
        return {"latency_ms_before": None, "latency_ms_after": None, "latency_batch": batch,
                "latency_skipped": True}
    before = latency(original.proto, batch, device=device, max_seconds=seconds)
    after = latency(pruned.proto, batch, device=device, max_seconds=seconds)
    return {"latency_ms_before": before.ms, "latency_ms_after": after.ms, "latency_batch": batch,
            "latency_skipped": False, "latency_runs": [before.runs, after.runs],
            "latency_seconds": [before.seconds, after.seconds], "latency_max_seconds": seconds}


def evaluate(model: Model | str | Path, data: DataSource | str, device: str = "auto", batch_size: int = 256) -> dict:
    """Accuracy (overall and per class), parameters, MACs and latency per batch of 32 (``evaluate``)."""
    from onnxslice.measure.evaluate import evaluate as measure

    return measure(_model(model).proto, _data(data), device, batch_size)


def finetune(model: Model | str | Path, data: DataSource | str, val: DataSource | str | None = None,
             progress: bool = False, **options) -> FinetuneResult:
    """Plain fine-tuning of every parameter, best epoch on ``val`` or a held-out part of ``data`` (``finetune``).
    ``options``: fields of :class:`onnxslice.maintain.finetune.FinetuneOptions` (epochs, lr, batch_size, ...).
    Returns a FinetuneResult whose ``model`` is a :class:`Model`."""
    from onnxslice.maintain.finetune import FinetuneOptions
    from onnxslice.maintain.finetune import finetune as train

    result = train(_model(model).proto, _data(data), FinetuneOptions(**options), val=_optional(val),
                   progress=progress)
    return replace(result, model=Model(canonicalize(result.model)))  # the export is new: canonical like the rest


def prune(model: Model | str | Path, data: DataSource | str, *, target_macs: float | None = None,
          target_params: float | None = None, eval_data: DataSource | str | None = None,
          val_data: DataSource | str | None = None, **settings) -> PruneResult:
    """Profile → slice to the budget → restructure (verified) → fine-tune → evaluate (``prune``). ``settings``:
    keyword arguments of :func:`onnxslice.pipeline.prune` (strategy, metric, round_to, options, ...). The result's
    ``acceptable`` is False (and ``problems()`` says why) when the pruned model is slower or far less accurate;
    its ``model`` is a :class:`Model`."""
    from onnxslice.pipeline import prune as run

    model = _model(model)
    result = run(model.proto, _data(data), target_macs=target_macs, target_params=target_params,
                 eval_data=_optional(eval_data), val_data=_optional(val_data), model_path=model.path, **settings)
    return replace(result, model=Model(canonicalize(result.model)))


def readapt(model: Model | str | Path, piece: Slice | None, data: DataSource | str,
            eval_data: DataSource | str | None = None, attack: str = "fgsm", eps: float | str | None = "auto",
            clip: tuple[float, float] | None = None, train_all: bool = False, *, slice_on: str = "clean",
            slicing: dict | None = None, **options) -> tuple[Model, dict]:
    """Re-train only the critical neurons against adversarial samples (``readapt``); the model and the report
    (RA, RAA, TPR, clean accuracy, accuracy on the adversarial samples before, where the slice came from).
    ``eps``: "auto" calibrates the attack per model (at most 20% accuracy under FGSM, 5% under PGD on ``data``),
    None is 0.1 of the input range, a number is in input units. ``options``: fields of
    :class:`onnxslice.maintain.training.TrainingOptions`.

    ``slice_on``: "clean" trains ``piece``'s critical neurons; "adversarial" (the paper's footnote 3) slices anew
    on a profile of the adversarial samples of ``data`` (generated once, on the original model, and trained on),
    with ``piece``'s settings (metric, strategy, Θ / ratio, step, CKA form, representation, round_to; ``piece``
    may be None) overridden by ``slicing`` (keyword arguments of :func:`select`). The report then also gives the
    slice the same settings make on the clean samples, its TPR, and how many neurons the two differ in."""
    from onnxslice.maintain.readapt import adversarial_set, trained_parameters
    from onnxslice.maintain.readapt import readapt as run
    from onnxslice.maintain.training import TrainingOptions
    from onnxslice.slicing.summary import neuron_fraction

    if slice_on not in SLICE_ON:
        raise InputError(f"--slice-on {slice_on}: choose from {', '.join(SLICE_ON)}")
    model, data, training = _model(model), _data(data), TrainingOptions(**options)
    settings = {k: v for k, v in (slicing or {}).items() if v is not None}
    if slice_on == "clean":
        if piece is None:
            raise InputError("--slice is required (or --slice-on adversarial to slice on the adversarial samples)")
        if settings:
            raise InputError(f"--{next(iter(settings)).replace('_', '-')}: only with --slice-on adversarial (the "
                             "clean slice is the one given)")
        samples = None
    else:
        samples = adversarial_set(model.proto, data, attack, eps, clip, training.seed)
        settings = _slice_settings(piece, settings)
        piece = select(model, None, data=samples.source(), **settings)
        clean = select(model, None, data=samples.clean(), **settings)
    adapted, report = run(model.proto, piece, data, eval_data=_optional(eval_data), attack=attack, eps=eps,
                          clip=clip, options=training, train_all=train_all, samples=samples)
    report.update(slice_on=slice_on, slice_data=piece.data, slice_strategy=piece.strategy, slice_metric=piece.metric,
                  slice_theta=piece.theta, slice_ratio=piece.ratio, slice_neuron_fraction=neuron_fraction(piece))
    if samples is not None:
        trained, total = trained_parameters(model.proto, clean)
        report.update(clean_slice_data=clean.data, clean_slice_neuron_fraction=neuron_fraction(clean),
                      clean_slice_tpr=trained / total,
                      slice_changed_neurons=sum(len(set(layer.kept) ^ set(clean.layers[name].kept))
                                                for name, layer in piece.layers.items()))
        report["slice_differs_from_clean"] = report["slice_changed_neurons"] > 0
    return Model(adapted), report


def _slice_settings(piece: Slice | None, overrides: dict) -> dict:
    """Keyword arguments of :func:`select`: the settings ``piece`` was made with (none for None), ``overrides``
    on top; under another strategy only its metric and round_to carry over."""
    if piece is None:
        return overrides
    settings = {"metric": piece.metric, "strategy": piece.strategy, "theta": piece.theta, "ratio": piece.ratio,
                "step": piece.step, "centered": piece.centered, "representation": piece.representation,
                "round_to": piece.round_to}
    if overrides.get("strategy", piece.strategy) != piece.strategy:
        settings = {"metric": piece.metric, "round_to": piece.round_to}
    return {**{k: v for k, v in settings.items() if v is not None}, **overrides}


def incremental(model: Model | str | Path, piece: Slice, new_data: DataSource | str,
                replay: DataSource | str | None = None, old_eval: DataSource | str | None = None,
                new_eval: DataSource | str | None = None, train_all: bool = False,
                old_classes: str | Sequence[int] | None = None, replay_fraction: float = 1.0,
                **options) -> tuple[Model, Model, dict]:
    """Teach new classes with the critical neurons of the old ones frozen (``incremental``); the new model, the
    old-task model and the report (task A, task B, mean). ``old_classes``: the old task's categories, whose
    classifier rows are frozen (a list or text such as "0-4"; default: the slice's per-category keys);
    ``replay_fraction``: the stratified part of ``replay`` trained on. ``options``: fields of
    :class:`onnxslice.maintain.training.TrainingOptions`."""
    from onnxslice.maintain.incremental import incremental as run
    from onnxslice.maintain.incremental import old_categories
    from onnxslice.maintain.training import TrainingOptions
    from onnxslice.runtime import scores_output

    model = _model(model)
    training = TrainingOptions(**options)
    if isinstance(old_classes, str):
        old_classes = classes_in(parse_class_filter(old_classes), scores_output(model.proto)[1])
    classes = list(old_classes) if old_classes is not None else old_categories(piece)
    if not classes and not train_all:
        log.warning("incremental: no old-task categories known (slice has no per-category lists, no --old-classes); "
                    "every classifier row is trained")
    replayed = _data(replay).fraction(replay_fraction, training.seed) if replay is not None else None
    new, old, report = run(model.proto, piece, _data(new_data), replay=replayed, old_eval=_optional(old_eval),
                           new_eval=_optional(new_eval), old_classes=classes, options=training, train_all=train_all)
    return Model(new), Model(old), report


def compress(model: Model | str | Path, data: DataSource | str, method: str = "lamp", piece: Slice | None = None,
             *, val_data: DataSource | str | None = None, eval_data: DataSource | str | None = None,
             finetune_epochs: int = 0, finetune_lr: float | None = None, ray: str | None = None,
             **settings) -> CompressResult:
    """Restructure by the slice (when given), then prune weights by ``method`` at rising sparsity while the
    accuracy stays within ``max_drop`` (``compress``). The stopping point is chosen on ``val_data`` (default:
    ``data``, or with fine-tuning a held-out tenth of it); CR/NI/MA are reported on ``eval_data`` (default: the
    validation data). ``finetune_epochs``: fine-tuning on ``data`` after each pruning step (zeros stay zero; lr
    ``finetune_lr``, default the repair rate 1e-4). ``settings``: step, max_drop, device, max_iterations,
    progress. ``ray``: evaluate several sparsity steps at once on Ray (see :func:`profile`; not with fine-tuning,
    whose steps depend on each other); the same result."""
    from onnxslice.compression.loop import compress as run
    from onnxslice.compression.methods import make_method

    train, val = _data(data), _optional(val_data)
    options = None
    if finetune_epochs:
        from onnxslice.maintain.finetune import REPAIR_LR, FinetuneOptions, split_holdout

        options = FinetuneOptions(epochs=finetune_epochs, lr=finetune_lr or REPAIR_LR)
        if val is None:
            train, val = split_holdout(train, options.val_fraction, options.seed)
    with _cluster(ray, settings.get("device", "auto")) as cluster:
        return run(_model(model).proto, train if val is None else val, make_method(method),
                   piece.kept() if piece else None, eval_data=_optional(eval_data), train_data=train,
                   finetune_options=options, cluster=cluster, **settings)


@dataclass(frozen=True)
class Swept:
    """The points of a sweep and the original model's accuracy on the same data."""

    points: list[dict]  #: one per strategy × metric × Θ / ratio / budget: compression, accuracy, ...
    accuracy_original: float

    def save_plot(self, path: str | Path, title: str) -> None:
        """Compression against accuracy, one line per strategy and metric, as a PNG."""
        from onnxslice.compression.sweep import save_plot

        save_plot(self.points, path, title, self.accuracy_original)

    def csv(self) -> str:
        """The points as CSV text."""
        from onnxslice.compression.sweep import points_csv

        return points_csv(self.points)


def sweep(model: Model | str | Path, profile: Profile | None, data: DataSource | str,
          strategies: Sequence[str] = ("semantic", "global"), thetas: Sequence[float] = (),
          ratios: Sequence[float] = (), *, metrics: Sequence[str] = (DEFAULT_METRIC,),
          eval_data: DataSource | str | None = None, max_per_class: int = DEFAULT_MAX_PER_CLASS,
          batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", progress: bool = False,
          ray: str | None = None, **settings) -> Swept:
    """Accuracy on ``eval_data`` (default: ``data``) against compression for each strategy × metric × Θ / ratio /
    budget (``sweep``). Without a ``profile`` the model is profiled on ``data`` by ``metrics`` (only when a
    slicing strategy is asked for); DeepArc's layer similarities use ``max_per_class`` samples of ``data`` per
    category; ``progress``: bars on stderr; ``ray``: profile and evaluate the points on Ray (see :func:`profile`),
    the same points. ``settings``: targets, target_kind, round_to, deeparc_threshold, deeparc_sew (sewing layers
    where a removed span's shapes differ; default True)."""
    from onnxslice.compression.sweep import sweep as run
    from onnxslice.measure.evaluate import accuracy

    model, data = _model(model), _data(data)
    judged = _data(eval_data) if eval_data is not None else data
    if profile is not None:
        missing = [m for m in metrics if m not in profile.metrics]
        if missing:
            raise InputError(f"the profile has no {', '.join(missing)} (it has {', '.join(profile.metrics)})")
        profile = replace(profile, metrics=list(metrics))
    with _cluster(ray, device) as cluster:
        if profile is None and any(s != "deeparc" for s in strategies):
            profile = _profile(model, data, metrics, max_per_class, device, batch_size, progress, cluster)
        points = run(model.proto, profile, judged, strategies, thetas, ratios, data.cap_per_class(max_per_class),
                     device=device, batch_size=batch_size, progress=progress, cluster=cluster, **settings)
    return Swept(points, accuracy(model.proto, judged, device, batch_size)["accuracy"])
