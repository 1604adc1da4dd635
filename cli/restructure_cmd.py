"""`onnxslice restructure`: physically remove the channels a slice drops, verified against the mask.

Exit codes: 2 for bad input (model, slice, output path); 1 when the restructured model fails its
verification (checker, onnxruntime, or outputs that differ from ``onnxslice mask``) — that is our
failure, reported in one line, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.measure.stats import DEFAULT_LATENCY_SECONDS
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    data_options,
    device_option,
    emit,
    json_option,
    model_argument,
    open_data,
    reports_errors,
)


@click.command()
@model_argument
@click.option("--slice", "slice_path", required=True, type=InputFile(),
              help="slice.json made for MODEL (onnxslice slice).")
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write pruned.onnx.")
@click.option("--latency-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the latency measurement.")
@click.option("--latency-seconds", type=click.FloatRange(min=0), default=DEFAULT_LATENCY_SECONDS, show_default=True,
              help="Time to spend measuring the latency of each model (a model slower than this is run once); "
                   "0 skips the measurement.")
@click.option("--data", "data_spec", type=DataSpec(), default=None, metavar="DATA",
              help="Verify on the first samples of DATA (real inputs) before standard-normal probes.")
@device_option
@data_options
@json_option
@reports_errors
def restructure(model: str, slice_path: str, output: str, latency_batch: int, latency_seconds: float,
                data_spec: str | None, device: str, as_json: bool, **image: object) -> None:
    """Remove the non-critical channels of SLICE from MODEL -> a smaller ONNX model, verified before writing.

    The result must pass the ONNX checker, run in onnxruntime and match `onnxslice mask` of the same
    slice on probe inputs; otherwise nothing is written (exit code 1). Channel groups that cannot be
    shrunk (coupled to something not understood) are kept whole and listed with the reason.
    """
    out = Path(output)
    original = api.load(model)
    piece = api.load_slice(slice_path, original)
    data = open_data(data_spec, image, model=original.proto) if data_spec else None
    result = api.restructure(original, piece, data=data, device=device, latency_batch=latency_batch,
                             latency_seconds=latency_seconds)
    external = result.model.save(out)
    emit({"output": str(out), "model": model, "slice": slice_path, "external_data": external, **result.to_json()},
         as_json, format_restructure)


def format_restructure(result: dict) -> str:
    def row(label: str, before: float, after: float, unit: str = "") -> str:
        ratio = after / before if before else float("nan")
        spec = ",.3f" if isinstance(before, float) else ","
        return f"{label:<12}{before:>16{spec}}{after:>16{spec}}{ratio:>10.3f}{unit}"

    lines = [f"wrote {result['output']}"
             + (f" (weights in {result['external_data']})" if result["external_data"] else ""),
             f"{'':<12}{'before':>16}{'after':>16}{'ratio':>10}",
             row("params", result["params_before"], result["params_after"]),
             row("MACs", result["macs_before"], result["macs_after"]),
             row("latency ms", result["latency_ms_before"], result["latency_ms_after"],
                 f"  (batch {result['latency_batch']})") if not result["latency_skipped"]
             else "latency     not measured (--latency-seconds 0)",
             f"channels removed {result['channels_removed']:,} of {result['channels_before']:,} "
             f"({result['channels_removed_fraction']:.1%}); the slice drops {result['channels_dropped_by_slice']:,}, "
             f"{result['channels_zeroed']:,} of them stay zeroed (a coupled layer keeps them)",
             f"verified: max |pruned - masked| = {result['max_abs_diff']:.3g} (output scale "
             f"{result['output_scale']:.3g})"]
    for group in result["kept_whole"]:
        names = ", ".join(group["layers"][:3]) + (f" (+{len(group['layers']) - 3})" if len(group["layers"]) > 3 else "")
        lines.append(f"kept {group['channels']} of {group['of']} channels of {names}: {group['reason']}")
    for block in result.get("attention_heads", []):
        lines.append(f"attention heads of {block['in_projection']}: {len(block['removed'])} of {block['heads']} "
                     f"removed {block['removed']}")
        lines += [f"  head {head} stays: {reason}" for head, reason in block["kept"].items()]
    return "\n".join(lines)
