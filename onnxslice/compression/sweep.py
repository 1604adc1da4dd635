"""The comparison of slicing methods (paper §5.2, Figure 5): parameters removed vs accuracy of the masked model.

The model is profiled once for all metrics; every strategy then slices at every Θ or ratio (by the parameter it
takes) from that one profile, and at every size budget, and each slice is masked and evaluated.
The compression of a point is the fraction of the model's parameters that restructuring the slice removes
(:mod:`onnxslice.surgery.cost`; slices decide on channel groups, see :mod:`onnxslice.slicing.groups`).
DeepArc (layer removal, see
:mod:`onnxslice.compression.deeparc`) adds one point per threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import onnx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from tqdm import tqdm

from onnxslice.compression.deeparc import deeparc
from onnxslice.data import DataSource
from onnxslice.errors import InputError, one_line
from onnxslice.measure.evaluate import accuracy
from onnxslice.profiling.artifact import Profile
from onnxslice.progress import progress_bar
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, slice_to_budget
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import STRATEGIES, make_strategy, select
from onnxslice.slicing.summary import neuron_fraction
from onnxslice.surgery.mask import mask_model

if TYPE_CHECKING:
    from onnxslice.cluster import Cluster

log = logging.getLogger(__name__)

DEEPARC = "deeparc"
DEFAULT_THETAS = "0.90:0.99:0.01"
DEFAULT_RATIOS = "0.1:1.0:0.1"
#: The most values one --thetas or --ratios may give: each is a slice masked and evaluated.
MAX_POINTS = 1000


def parse_values(text: str, option: str) -> list[float]:
    """``start:stop:step`` (stop included) or a comma-separated list; finite, at most :data:`MAX_POINTS` values."""
    shown = one_line(text, 40)
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not (step > 0 and stop >= start and math.isfinite(stop - start)):
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            if count > MAX_POINTS:
                raise InputError(f"{option} {shown}: {count:,} values; a sweep takes at most {MAX_POINTS}")
            return [round(start + i * step, 10) for i in range(count)]
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} {shown}: expected START:STOP:STEP (STOP >= START, STEP > 0) or a list "
                         "such as 0.9,0.95") from None
    if not values or len(values) > MAX_POINTS or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} {shown}: give 1 to {MAX_POINTS} finite values")
    return values


def all_strategies() -> tuple[str, ...]:
    """The slicing strategies registered now (a strategy added to STRATEGIES is swept too), and DeepArc."""
    return (*STRATEGIES, DEEPARC)


def parse_strategies(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = all_strategies()
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InputError(f"--strategies {text}: choose from {', '.join(known)}")
    return names


def sweep(model: onnx.ModelProto, profile: Profile | None, data: DataSource, strategies: Sequence[str],
          thetas: Sequence[float], ratios: Sequence[float], deeparc_data: DataSource | None = None,
          deeparc_threshold: float = 0.99, device: str = "auto", round_to: int = DEFAULT_ROUND_TO,
          targets: Sequence[float] = (), target_kind: str = "macs", batch_size: int = 256,
          progress: bool = False, deeparc_sew: bool = True, cluster: Cluster | None = None) -> list[dict]:
    """One point per strategy × metric × Θ / ratio / size budget (``targets``, fractions of the original's
    ``target_kind``, "params" or "macs"): ``compression`` (parameters restructure removes), ``params_fraction``,
    ``macs_fraction`` and ``accuracy`` of the masked model on ``data``; DeepArc's point (metric None) is
    measured on the model with its redundant layers removed (``deeparc_sew``: with sewing layers where shapes
    differ; its ``sewing`` and ``params_removed`` say what they cost). ``profile`` may be None when DeepArc is the only
    strategy. Targets that no slice reaches are logged and skipped. ``batch_size``: samples per evaluation batch;
    ``progress``: a bar on stderr (one step per point) when stderr is a terminal; ``cluster``: the points are
    evaluated there, in parallel (the same accuracies)."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    slicing = [s for s in strategies if s in STRATEGIES]
    if slicing and profile is None:
        raise InputError(f"--strategies {slicing[0]} needs a profile of the model")
    total = (sum(len(swept_values(s, thetas, ratios)) + len(targets) for s in slicing)
             * (len(profile.metrics) if profile is not None else 0) + (DEEPARC in strategies))
    with progress_bar(total, "sweep", "point", progress) as bar:
        return _sweep(model, profile, data, strategies, thetas, ratios, deeparc_data, deeparc_threshold, device,
                      round_to, targets, target_kind, batch_size, bar, deeparc_sew, cluster)


def swept_values(strategy: str, thetas: Sequence[float], ratios: Sequence[float]) -> Sequence[float]:
    """The values ``strategy`` is swept over: the Θs or the ratios, by the parameter it takes."""
    return {"theta": thetas, "ratio": ratios}[STRATEGIES[strategy].parameter]


def _sweep(model: onnx.ModelProto, profile: Profile | None, data: DataSource, strategies: Sequence[str],
           thetas: Sequence[float], ratios: Sequence[float], deeparc_data: DataSource | None,
           deeparc_threshold: float, device: str, round_to: int, targets: Sequence[float], target_kind: str,
           batch_size: int, bar: tqdm, deeparc_sew: bool, cluster: Cluster | None) -> list[dict]:
    points = []
    groups = SelectionGroups.of_model(model) if any(s in STRATEGIES for s in strategies) else None
    swept = []  # (strategy, metric, target, slice) of every point, evaluated below
    for strategy in (s for s in strategies if s in STRATEGIES):
        assert profile is not None  # checked by sweep()
        key = STRATEGIES[strategy].parameter
        for metric in profile.metrics:
            swept += [(strategy, metric, None, select(profile, metric, make_strategy(strategy, **{key: value}),
                                                      groups, round_to))
                      for value in swept_values(strategy, thetas, ratios)]
            for target in targets:
                try:
                    swept.append((strategy, metric, target,
                                  slice_to_budget(model, profile, metric, strategy, round_to=round_to, groups=groups,
                                                  **{f"target_{target_kind}": target})))
                except InputError as exc:
                    log.warning("%s %s: %s", strategy, metric, exc)
                    bar.update(1)  # a budget no slice reaches: its step is done
    if cluster is not None and swept:  # every point a task; the model is sent once, each task masks it
        scores = cluster.accuracies([cluster.put(model.SerializeToString())] * len(swept), data, device, batch_size,
                                    [piece.kept() for *_, piece in swept], bar)
    else:
        scores = (accuracy(mask_model(model, piece.kept()), data, device, batch_size)["accuracy"]
                  for *_, piece in swept)
    for (strategy, metric, target, piece), score in zip(swept, scores, strict=True):
        key = STRATEGIES[strategy].parameter
        sizes = piece.restructured
        value = getattr(piece, key)
        points.append({"strategy": strategy, "metric": metric, key: value, "target": target,
                       "compression": 1.0 - sizes["params_fraction"], "params_fraction": sizes["params_fraction"],
                       "macs_fraction": sizes["macs_fraction"], "accuracy": score,
                       "neuron_fraction": neuron_fraction(piece)})
        log.info("%s %s %s=%s: compression %.4f accuracy %.4f", strategy, metric, key, value,
                 1.0 - sizes["params_fraction"], score)
        if cluster is None:
            bar.update(1)
            bar.set_postfix(strategy=strategy, accuracy=f"{score:.4f}")
    if DEEPARC in strategies:
        result = deeparc(model, deeparc_data or data, deeparc_threshold, device, sew=deeparc_sew)
        points.append({"strategy": DEEPARC, "metric": None, "threshold": deeparc_threshold,
                       "compression": 1.0 - result.params_after / result.params_before,
                       "accuracy": accuracy(result.model, data, device, batch_size)["accuracy"],
                       **result.to_json()})
        bar.update(1)
    return points


def plot_sweep(points: Sequence[dict], axes: Axes, title: str, original_accuracy: float | None = None) -> None:
    """One line per strategy × metric (compression vs accuracy, in %): colour by strategy, line style and
    marker by metric; DeepArc as a star."""
    colours = dict(zip(STRATEGIES, matplotlib.colormaps["tab10"].colors, strict=False))
    metrics = sorted({p["metric"] for p in points if p["metric"] is not None})
    styles = {metric: (["-", "--", ":", "-."][i % 4], "os^dv"[i % 5]) for i, metric in enumerate(metrics)}
    for strategy in STRATEGIES:
        for metric in metrics:
            line = sorted((p for p in points if p["strategy"] == strategy and p["metric"] == metric),
                          key=lambda p: p["compression"])
            if line:
                style, marker = styles[metric]
                axes.plot([100 * p["compression"] for p in line], [100 * p["accuracy"] for p in line], style,
                          marker=marker, markersize=4, color=colours[strategy], label=f"{strategy} ({metric})")
    for point in (p for p in points if p["strategy"] == DEEPARC):
        axes.plot(100 * point["compression"], 100 * point["accuracy"], "*", markersize=14, color="black",
                  label=f"DeepArc (CKA > {point['threshold']})")
    if original_accuracy is not None:
        axes.axhline(100 * original_accuracy, color="grey", linewidth=0.8, label="original model")
    axes.set_xlabel("parameters removed (%)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def save_plot(points: Sequence[dict], path: str | Path, title: str, original_accuracy: float | None = None) -> None:
    figure = Figure(figsize=(7, 5))
    plot_sweep(points, figure.subplots(), title, original_accuracy)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)


def points_csv(points: Sequence[dict]) -> str:
    """The points as CSV, one row each."""
    columns = ["strategy", "metric", "theta", "ratio", "threshold", "target", "compression", "params_fraction",
               "macs_fraction", "accuracy"]
    rows = [",".join(columns)]
    for point in points:
        rows.append(",".join("" if point.get(c) is None else (f"{point[c]:.6g}" if isinstance(point[c], float)
                                                               else str(point[c])) for c in columns))
    return "\n".join(rows) + "\n"


def best_at(points: Sequence[dict], compression: float) -> dict[tuple[str, str | None], float]:
    """Per strategy × metric, the best accuracy among points removing at least ``compression``."""
    best: dict[tuple[str, str | None], float] = {}
    for point in points:
        if point["compression"] >= compression:
            key = (point["strategy"], point["metric"])
            best[key] = max(best.get(key, -np.inf), point["accuracy"])
    return best
