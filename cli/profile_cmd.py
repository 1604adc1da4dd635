"""`onnxslice profile`: measure every neuron per category -> profile.npz; or list the neuron layers."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.errors import InputError
from onnxslice.profiling.metrics import METRICS
from onnxslice.profiling.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS, DEFAULT_METRICS
from onnxslice_cli.common import (
    DataSpec,
    OutputFile,
    RegistryChoice,
    data_options,
    device_option,
    emit,
    json_option,
    model_argument,
    open_data,
    ray_option,
    reports_errors,
)


@click.command()
@model_argument
@click.option("--list-layers", is_flag=True, help="Only list the neuron layers (and the skipped nodes) of MODEL.")
@click.option("--data", "data_spec", type=DataSpec(), metavar="DATA",
              help="A .npz with x and y, an image folder, or digits / digits:train / digits:val / digits:test; "
                   "optionally :CLASSES such as :0-4.")
@click.option("--metric", "metrics", multiple=True, type=RegistryChoice(METRICS),
              help=f"Contribution metric (repeat for several). Default: {', '.join(DEFAULT_METRICS)}; "
                   "taylor and deeplift need the model to convert to PyTorch (onnx2torch).")
@click.option("--max-per-class", type=click.IntRange(min=1), default=DEFAULT_MAX_PER_CLASS, show_default=True,
              help="Samples per category for the CKA statistics (contributions use all samples); the "
                   "activations of one category's samples are held at a time.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("-o", "--output", type=OutputFile(), help="Where to write profile.npz.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@device_option
@ray_option
@data_options
@json_option
@reports_errors
def profile(model: str, list_layers: bool, data_spec: str | None, metrics: tuple[str, ...], max_per_class: int,
            batch_size: int, output: str | None, quiet: bool, device: str, ray: str | None, as_json: bool,
            **image: object) -> None:
    """Measure every neuron of MODEL on DATA per category: contributions and CKA statistics -> profile.npz.

    With --list-layers, print the neuron layers (Conv; Gemm / MatMul with a constant weight), their
    sizes and observed tensors, and the nodes skipped with the reason.
    """
    if list_layers:
        emit(layer_listing(model), as_json, format_layers)
        return
    if data_spec is None or output is None:
        raise InputError("profile needs --data DATA and -o profile.npz (or --list-layers)")
    out = Path(output)
    loaded = api.load(model)
    data = open_data(data_spec, image, model=loaded.proto)
    result = api.profile(loaded, data, metrics or DEFAULT_METRICS, max_per_class, device, progress=not quiet,
                         batch_size=batch_size, ray=ray)
    result.save(out)
    summary = {
        "output": str(out), "model": model, "model_sha256": result.model_sha256, "data": result.data,
        "metrics": result.metrics, "categories": result.categories, "samples": sum(result.samples.values()),
        "max_per_class": result.max_per_class,
        "layers": [{"name": name, "size": size} for name, size in result.layer_sizes.items()],
        "kept_whole": [{"name": name, "reason": reason} for name, reason in result.excluded.items()],
    }
    emit(summary, as_json, format_summary)


def layer_listing(model: str) -> dict:
    scan = api.load(model).layers
    return {
        "model": model,
        "layers": [{"name": layer.name, "display": layer.display, "op_type": layer.op_type, "size": layer.size,
                    "output": layer.output, "tail": list(layer.tail), "role": "output" if layer.is_output else "hidden"}
                   for layer in scan.layers],
        "skipped": [{"name": name, "reason": reason} for name, reason in scan.skipped.items()],
    }


def format_layers(result: dict) -> str:
    """One row per layer: node name, display name (module path) where it differs, op, size, role, tensor."""
    width = max([len(layer["name"]) for layer in result["layers"]] + [5])
    shown = max([len(layer["display"]) for layer in result["layers"] if layer["display"] != layer["name"]] + [0])
    shown = max(shown, len("module")) if shown else 0
    module = f"{'module':<{shown}}  " if shown else ""
    lines = [f"{'layer':<{width}}  {module}{'op':<6}  {'neurons':>7}  {'role':<6}  observed tensor"]
    for layer in result["layers"]:
        display = layer["display"] if layer["display"] != layer["name"] else ""
        lines.append(f"{layer['name']:<{width}}  {f'{display:<{shown}}  ' if shown else ''}{layer['op_type']:<6}  "
                     f"{layer['size']:>7}  {layer['role']:<6}  {layer['output']}")
    if not result["layers"]:
        lines.append("(no neuron layers)")
    lines += [f"skipped {item['name']}: {item['reason']}" for item in result["skipped"]]
    return "\n".join(lines)


def format_summary(result: dict) -> str:
    neurons = sum(layer["size"] for layer in result["layers"])
    return "\n".join([
        f"profile     {result['output']}",
        f"model       {result['model']} (sha256 {result['model_sha256'][:12]}…)",
        f"data        {result['data']} ({result['samples']} samples, {len(result['categories'])} categories)",
        f"metrics     {', '.join(result['metrics'])}",
        f"layers      {len(result['layers'])} hidden layers, {neurons} neurons",
        f"CKA         up to {result['max_per_class']} samples per category",
        *[f"kept whole  {item['name']} (not profiled): {item['reason']}" for item in result.get("kept_whole", [])],
    ])
