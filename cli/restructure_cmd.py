"""`onnxslice restructure`: physically remove the channels a slice drops, verified against the mask.

Exit codes: 2 for bad input (model, slice, output path); 1 when the restructured model fails its
verification (checker, onnxruntime, or outputs that differ from ``onnxslice mask``) — that is our
failure, reported in one line, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import click
import onnx

from onnxslice.large import write_model
from onnxslice.measure.stats import DEFAULT_LATENCY_SECONDS, count_macs, count_params, latency
from onnxslice.surgery.restructure import restructure as restructure_model
from onnxslice.surgery.verify import probe_samples, verify
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    data_options,
    device_option,
    emit,
    json_option,
    load_model_and_slice,
    log,
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
    original, piece = load_model_and_slice(model, slice_path)
    kept = piece.kept()
    pruned, report = restructure_model(original, kept)
    samples = probe_samples(open_data(data_spec, image, model=original), original) if data_spec else None
    check = verify(original, pruned, kept, device, samples=samples)
    if not check.informative:
        log.warning("restructure: verification says little: the model's outputs hardly vary across %s "
                    "(output scale %.3g); give --data for real inputs", check.probes, check.output_scale)
    data = write_model(pruned, out)
    result = {
        "output": str(out), "model": model, "slice": slice_path, "external_data": data,
        "params_before": count_params(original), "params_after": count_params(pruned),
        "macs_before": count_macs(original), "macs_after": count_macs(pruned),
        **latency_fields(original, pruned, latency_batch, latency_seconds, device),
        "max_abs_diff": check.max_abs_diff, "output_scale": check.output_scale, "probes": check.probes,
        "verification_informative": check.informative,
        **report.to_json(),
    }
    emit(result, as_json, format_restructure)


def latency_fields(original: onnx.ModelProto, pruned: onnx.ModelProto, batch: int, seconds: float,
                   device: str) -> dict:
    """``latency_ms_before/after`` (None when ``seconds`` is 0: ``latency_skipped``), with the runs and seconds
    each measurement took."""
    if seconds == 0:
        return {"latency_ms_before": None, "latency_ms_after": None, "latency_batch": batch,
                "latency_skipped": True}
    before = latency(original, batch, device=device, max_seconds=seconds)
    after = latency(pruned, batch, device=device, max_seconds=seconds)
    return {"latency_ms_before": before.ms, "latency_ms_after": after.ms, "latency_batch": batch,
            "latency_skipped": False, "latency_runs": [before.runs, after.runs],
            "latency_seconds": [before.seconds, after.seconds], "latency_max_seconds": seconds}


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
    return "\n".join(lines)
