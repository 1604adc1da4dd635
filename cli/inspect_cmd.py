"""`onnxslice inspect`: what a slice keeps, per layer and category, and the fraction of the model kept."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from onnxslice.errors import InputError
from onnxslice.files import sha256_of, write_atomically
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.summary import layer_table, neuron_fraction
from onnxslice_cli.common import InputFile, OutputFile, emit, json_option, reports_errors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_FORMATS = (".png", ".svg", ".pdf")
#: Characters of a layer label in the plot before it is shortened (from the left: the end tells layers apart).
LABEL_WIDTH = 32


@click.command()
@click.argument("slice_path", metavar="SLICE", type=InputFile())
@click.option("--model", type=InputFile(), default=None,
              help="The sliced model: report the parameters and MACs restructure reaches.")
@click.option("--plot", type=OutputFile(), default=None,
              help="Write a bar chart of kept / total neurons per layer (PNG, SVG or PDF), titled with the model "
                   "(with --model; else the slice file), strategy and Θ or ratio.")
@json_option
@reports_errors
def inspect(slice_path: str, model: str | None, plot: str | None, as_json: bool) -> None:
    """Summarise SLICE (a slice.json): kept neurons per layer and category, the fraction of the model kept."""
    piece = Slice.load(slice_path)
    plot_path = Path(plot) if plot else None
    if plot_path and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise InputError(f"--plot {plot}: give a file ending in {', '.join(PLOT_FORMATS)}")
    result = {"slice": slice_path, "metric": piece.metric, "strategy": piece.strategy, "theta": piece.theta,
              "ratio": piece.ratio, "round_to": piece.round_to, "target": piece.target, "layers": layer_table(piece),
              "neuron_fraction": neuron_fraction(piece), **(piece.restructured or {})}
    if model:
        onnx_model = load_model(model)
        scan = find_neuron_layers(onnx_model)
        piece.check_against(sha256_of(model), scan, model)
        piece.name_layers(scan)  # slices written before display names were recorded
        result["layers"] = layer_table(piece)
        result.update(SelectionGroups.of_model(onnx_model).size_of_slice(piece.kept()))
    if plot_path:
        title = plot_title(result, Path(model).name if model else Path(slice_path).name)
        write_atomically(plot_path, lambda tmp: plot_layers(result["layers"], tmp, plot_path.suffix, title))
        result["plot"] = str(plot_path)
    emit(result, as_json, format_inspection)


def plot_layers(layers: list[dict], path: Path, suffix: str, title: str = "") -> None:
    """Write :func:`layers_figure` to ``path`` in the format of ``suffix``."""
    figure = layers_figure(layers, title)
    figure.savefig(path, format=suffix.lower().lstrip("."), bbox_inches="tight")


def layers_figure(layers: list[dict], title: str = "") -> Figure:
    """Horizontal bar chart, one row per layer (first layer on top) under its display name, shortened so that no
    two labels are alike: all neurons and the kept ones, the kept ratio at the end of each bar."""
    from matplotlib.figure import Figure

    labels = distinct_labels([row["display"] for row in layers])
    width = max([len(label) for label in labels] + [8])
    figure = Figure(figsize=(min(4.0 + 0.07 * width, 9.0) + 3.0, max(2.5, 0.28 * len(layers) + 1.4)))
    axes = figure.subplots()
    positions = list(range(len(layers)))
    axes.barh(positions, [row["size"] for row in layers], color="lightgray", label="neurons")
    axes.barh(positions, [row["kept"] for row in layers], color="tab:blue", label="kept")
    for y, row in zip(positions, layers, strict=True):
        axes.annotate(f" {row['ratio']:.0%}", (row["kept"], y), ha="left", va="center", fontsize=7)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_ylim(len(layers) - 0.5, -0.5)  # the first layer on top
    axes.set_xlabel("neurons")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over one
    figure.tight_layout()
    return figure


def plot_title(result: dict, model_name: str) -> str:
    """The plot's title: the model (file name), strategy, metric and Θ or ratio (and the size budget, if any)."""
    setting = (f"Θ = {result['theta']:.4g}" if result["theta"] is not None
               else f"ratio = {result['ratio']:.4g}" if result["ratio"] is not None else None)
    target = result.get("target") or {}
    budget = (f"target {target.get('metric', 'size')} {target['fraction']:.4g}"
              if isinstance(target.get("fraction"), (int, float)) else None)
    parts = [part for part in (result["strategy"], result["metric"], setting, budget) if part]
    return f"{model_name}: {', '.join(map(str, parts))} (neurons kept {result['neuron_fraction']:.1%})"


def distinct_labels(names: list[str], width: int = LABEL_WIDTH) -> list[str]:
    """``names`` shortened to ``width`` characters, keeping their ends (where module paths differ); a name whose
    short form another shares is shown longer, and whole names alike are numbered."""
    def short(name: str, size: int) -> str:
        return name if len(name) <= size else "…" + name[-size + 1:]

    sizes = [width] * len(names)
    labels = [short(name, width) for name in names]
    while True:
        counts = Counter(labels)
        clashing = [i for i, label in enumerate(labels) if counts[label] > 1 and len(labels[i]) < len(names[i])]
        if not clashing:
            break
        for i in clashing:
            sizes[i] += 8
            labels[i] = short(names[i], sizes[i])
    counts = Counter(labels)
    return [f"{label} [{i}]" if counts[label] > 1 else label for i, label in enumerate(labels)]


def format_layers(layers: list[dict]) -> str:
    """One row per layer under its display name; the node name follows where it differs."""
    width = max([len(row["display"]) for row in layers] + [5])
    nodes = any(row["display"] != row["layer"] for row in layers)
    rows = [f"{'layer':<{width}}  {'kept':>6} / {'size':<6}{'ratio':>7}  {'per category (min / max)':<24}"
            + ("  node" if nodes else "")]
    for row in layers:
        counts = list(row["per_category"].values())
        spread = f"{min(counts)} / {max(counts)}" if counts else "-"
        node = f"  {row['layer']}" if nodes and row["display"] != row["layer"] else ""
        rows.append(f"{row['display']:<{width}}  {row['kept']:>6} / {row['size']:<6}{row['ratio']:>7.1%}  "
                    f"{spread:<24}{node}".rstrip())
    return "\n".join(rows)


def format_inspection(result: dict) -> str:
    settings = f"theta={result['theta']}" if result["theta"] is not None else f"ratio={result['ratio']}"
    lines = [f"slice     {result['slice']} ({result['strategy']}, {result['metric']}, {settings})",
             format_layers(result["layers"]), f"neurons kept     {result['neuron_fraction']:.1%}"]
    if "params" in result:
        lines.append(f"restructured     parameters {result['params']:,} of {result['params_before']:,} "
                     f"({result['params_fraction']:.1%}), MACs {result['macs']:,} of {result['macs_before']:,} "
                     f"({result['macs_fraction']:.1%})")
    if "plot" in result:
        lines.append(f"plot      {result['plot']}")
    return "\n".join(lines)
