"""`onnxslice mask`: the paper's view of a slice — non-critical neurons zeroed, shapes unchanged."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice_cli.common import InputFile, OutputFile, emit, json_option, model_argument, reports_errors


@click.command()
@model_argument
@click.option("--slice", "slice_path", required=True, type=InputFile(),
              help="slice.json made for MODEL (onnxslice slice).")
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write masked.onnx.")
@json_option
@reports_errors
def mask(model: str, slice_path: str, output: str, as_json: bool) -> None:
    """Zero the non-critical neurons of SLICE where their consumers read them; shapes unchanged -> masked.onnx."""
    out = Path(output)
    loaded = api.load(model)
    piece = api.load_slice(slice_path, loaded)
    data = api.mask(loaded, piece).save(out)
    emit({"output": str(out), "model": model, "slice": slice_path, "external_data": data,
          **api.kept_fraction(loaded, piece)}, as_json, format_mask)


def format_mask(result: dict) -> str:
    zeroed = sum(result["zeroed"].values())
    weights = f" (weights in {result['external_data']})" if result["external_data"] else ""
    return (f"wrote {result['output']}{weights}: {zeroed} neurons zeroed in {len(result['zeroed'])} layers "
            f"({result['neuron_fraction']:.1%} of the neurons and {result['fraction']:.1%} of the parameters kept)")
