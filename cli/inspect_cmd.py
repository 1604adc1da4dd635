"""`onnxslice inspect`: what a slice keeps, per layer and category, and the fraction of the model kept."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice.errors import InputError
from onnxslice.files import sha256_of, write_atomically
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.summary import layer_table, neuron_fraction
from onnxslice_cli.common import InputFile, OutputFile, emit, json_option, reports_errors

PLOT_FORMATS = (".png", ".svg", ".pdf")


@click.command()
@click.argument("slice_path", metavar="SLICE", type=InputFile())
@click.option("--model", type=InputFile(), default=None,
              help="The sliced model: report the parameters and MACs restructure reaches.")
@click.option("--plot", type=OutputFile(), default=None,
              help="Write a bar chart of kept / total neurons per layer (PNG, SVG or PDF).")
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
        write_atomically(plot_path, lambda tmp: plot_layers(result["layers"], tmp, plot_path.suffix))
        result["plot"] = str(plot_path)
    emit(result, as_json, format_inspection)


def plot_layers(layers: list[dict], path: Path, suffix: str) -> None:
    """Bar chart: per layer, all neurons and the kept ones."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, 0.9 * len(layers) + 2), 4))
    positions = range(len(layers))
    axes.bar(positions, [row["size"] for row in layers], color="lightgray", label="neurons")
    axes.bar(positions, [row["kept"] for row in layers], color="tab:blue", label="kept")
    for x, row in zip(positions, layers, strict=True):
        axes.annotate(f"{row['ratio']:.0%}", (x, row["kept"]), ha="center", va="bottom", fontsize=8)
    axes.set_xticks(list(positions), [_short(row["display"]) for row in layers], rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("neurons")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format=suffix.lower().lstrip("."))
    plt.close(figure)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-width + 1:]


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
