"""`onnxslice mask`: the paper's view of a slice — non-critical neurons zeroed, shapes unchanged."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import onnx

from onnxslice.large import check_model, write_model
from onnxslice.measure.stats import fixed_input_shape
from onnxslice.runtime import make_session, run_session
from onnxslice.slicing.summary import neuron_fraction, parameter_fraction
from onnxslice.surgery.mask import mask_model
from onnxslice_cli.common import (
    InputFile,
    OutputFile,
    emit,
    json_option,
    load_model_and_slice,
    log,
    model_argument,
    reports_errors,
)


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
    onnx_model, piece = load_model_and_slice(model, slice_path)
    masked = mask_model(onnx_model, piece.kept())
    check_model(masked)
    check_runs(onnx_model, masked)
    data = write_model(masked, out)
    emit({"output": str(out), "model": model, "slice": slice_path, "external_data": data,
          **parameter_fraction(onnx_model, piece),
          "neuron_fraction": neuron_fraction(piece),
          "zeroed": {name: layer.size - len(layer.kept) for name, layer in piece.layers.items()}},
         as_json, format_mask)


def check_runs(original: onnx.ModelProto, masked: onnx.ModelProto) -> None:
    """Run the masked model in onnxruntime on a zero input of the model's own shape; its outputs must have the
    original's shapes. Skipped when that probe does not fit the original itself (e.g. dynamic image sizes)."""
    probe = np.zeros(fixed_input_shape(original, batch=2), np.float32)
    try:
        expected = run_session(make_session(original, "cpu"), probe)
    except Exception:  # noqa: BLE001 - the probe shape does not fit this model: nothing to compare with
        log.debug("mask: the probe input does not fit %s; run check skipped", original.graph.name, exc_info=True)
        return
    shapes = [out.shape for out in run_session(make_session(masked, "cpu"), probe)]
    if shapes != [out.shape for out in expected]:
        raise RuntimeError(f"the masked model's output shapes {shapes} differ from the original's")


def format_mask(result: dict) -> str:
    zeroed = sum(result["zeroed"].values())
    weights = f" (weights in {result['external_data']})" if result["external_data"] else ""
    return (f"wrote {result['output']}{weights}: {zeroed} neurons zeroed in {len(result['zeroed'])} layers "
            f"({result['neuron_fraction']:.1%} of the neurons and {result['fraction']:.1%} of the parameters kept)")
