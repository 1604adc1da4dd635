"""`onnxslice inspect`: what a slice keeps, per layer and category, and the fraction of the model kept."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice_cli.common import InputFile, OutputFile, emit, json_option, reports_errors


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
    result = api.inspect(api.load_slice(slice_path), model, plot, name=Path(slice_path).name)
    emit({"slice": slice_path, **result}, as_json, format_inspection)


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
