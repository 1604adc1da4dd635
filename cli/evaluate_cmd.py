"""`onnxslice evaluate`: accuracy, size, cost and latency of a model on labelled data."""

from __future__ import annotations

import click

from onnxslice import api
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    data_options,
    device_option,
    emit,
    json_option,
    model_argument,
    open_data,
    reports_errors,
)

COMPARED = [("accuracy", "accuracy", "{:.4f}"), ("params", "parameters", "{:,}"), ("macs", "MACs / sample", "{:,}"),
            ("latency_ms", "latency ms / batch", "{:.3f}")]


@click.command()
@model_argument
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help="A .npz with x and y, an image folder, or digits / digits:train / digits:val / digits:test; "
                   "optionally :CLASSES such as :0-4.")
@click.option("--baseline", type=InputFile(), default=None,
              help="Also evaluate this model (e.g. the original) and print a before/after table.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@device_option
@data_options
@json_option
@reports_errors
def evaluate(model: str, data_spec: str, baseline: str | None, batch_size: int, device: str, as_json: bool,
             **image: object) -> None:
    """Accuracy overall and per class, parameters, MACs and latency of MODEL on DATA."""
    loaded = api.load(model)
    baseline_model = api.load(baseline) if baseline else None
    data = open_data(data_spec, image, model=loaded.proto)
    result = {"model": model, **api.evaluate(loaded, data, device, batch_size)}
    if baseline_model is None:
        emit(result, as_json, format_evaluation)
        return
    result["baseline"] = {"model": baseline, **api.evaluate(baseline_model, data, device, batch_size)}
    emit(result, as_json, format_comparison)


def format_evaluation(result: dict) -> str:
    per_class = "  ".join(f"{c}:{acc:.3f}" for c, acc in result["per_class"].items())
    return "\n".join([
        f"model       {result['model']}",
        f"data        {result['data']} ({result['samples']} samples)",
        f"accuracy    {result['accuracy']:.4f}",
        f"per class   {per_class}",
        f"params      {result['params']:,}",
        f"MACs        {result['macs']:,} per sample",
        f"latency     {result['latency_ms']:.3f} ms per batch of {result['latency_batch']}",
    ])


def format_comparison(result: dict) -> str:
    before = result["baseline"]
    rows = [f"{'':20}{'before':>16}{'after':>16}{'after/before':>14}"]
    for key, label, fmt in COMPARED:
        ratio = result[key] / before[key] if before[key] else float("nan")
        rows.append(f"{label:20}{fmt.format(before[key]):>16}{fmt.format(result[key]):>16}{ratio:>14.3f}")
    return "\n".join([f"before: {before['model']}", f"after:  {result['model']}",
                      f"data:   {result['data']} ({result['samples']} samples)", *rows])
