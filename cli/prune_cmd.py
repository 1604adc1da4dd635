"""`onnxslice prune`: profile → slice to a size budget → restructure (verified) → fine-tune → evaluate.

Exit code 3: the pruned model is more than 5% slower or more than 2 points less accurate than the original.
It is written all the same (it was asked for, and it can be inspected), but a pipeline stops; with
``--allow-worse`` the same finding is a warning and the exit code is 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxslice import api
from onnxslice.measure.stats import DEFAULT_LATENCY_SECONDS
from onnxslice.pipeline import DEFAULT_METRIC, DEFAULT_STRATEGY, PRUNE_FINETUNING
from onnxslice.profiling.metrics import METRICS
from onnxslice.profiling.profiler import DEFAULT_MAX_PER_CLASS
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, DEFAULT_TOLERANCE
from onnxslice.slicing.strategies import STRATEGIES
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
    reports_errors,
)
from onnxslice_cli.maintain_options import DATA_HELP, finetune_options, finetune_settings, open_optional

#: Exit code of a pruned model slower or less accurate than the rules allow (written; see --allow-worse).
WORSE_EXIT_CODE = 3


@click.command()
@model_argument
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help=f"Data to profile and fine-tune on. {DATA_HELP}")
@click.option("--target-macs", type=float, default=None,
              help=f"Size budget: the pruned model keeps this fraction of the multiply-accumulates (within "
                   f"±{DEFAULT_TOLERANCE}).")
@click.option("--target-params", type=float, default=None,
              help="Size budget: the pruned model keeps this fraction of the parameters.")
@click.option("--strategy", type=RegistryChoice(STRATEGIES), default=DEFAULT_STRATEGY, show_default=True,
              help="How neurons are selected (see onnxslice slice --help).")
@click.option("--metric", type=RegistryChoice(METRICS, sort=True), default=DEFAULT_METRIC, show_default=True,
              help="Neuron contribution metric that orders the neurons.")
@click.option("--round-to", type=click.IntRange(min=1), default=DEFAULT_ROUND_TO, show_default=True,
              help="Keep a multiple of N channels in every group of coupled channels (or all of them).")
@finetune_options(PRUNE_FINETUNING)
@click.option("--eval-data", "eval_spec", type=DataSpec(), metavar="DATA", default=None,
              help="Data the before/after accuracies are measured on, e.g. digits:test (default: the validation "
                   "data).")
@click.option("--max-per-class", type=click.IntRange(min=1), default=DEFAULT_MAX_PER_CLASS, show_default=True,
              help="Samples per category used for the CKA statistics when profiling.")
@click.option("--latency-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the latency measurement.")
@click.option("--latency-seconds", type=click.FloatRange(min=0), default=DEFAULT_LATENCY_SECONDS, show_default=True,
              help="Time to spend measuring the latency of each model; 0 skips it (and the latency rule).")
@click.option("--allow-worse", is_flag=True,
              help="A pruned model slower or less accurate than the rules allow is a warning, exit code 0 "
                   "(default: exit code 3).")
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write pruned.onnx.")
@device_option
@data_options
@json_option
@reports_errors
def prune(model: str, data_spec: str, target_macs: float | None, target_params: float | None, strategy: str,
          metric: str, round_to: int, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int,
          val_spec: str | None, val_fraction: float, batchnorm: str, eval_spec: str | None, max_per_class: int,
          latency_batch: int, latency_seconds: float, allow_worse: bool, output: str, device: str, as_json: bool,
          **image: object) -> None:
    """Prune MODEL to a size budget and fine-tune it -> pruned.onnx, with a before/after table.

    Profile on DATA, slice to --target-macs or --target-params, remove the other channels (verified against
    the masked model), fine-tune (best epoch on the validation data) and compare parameters, MACs, accuracy
    and onnxruntime latency with the original. Exit code 3 (the model is still written) when the result is
    more than 5% slower or more than 2 points less accurate than the original, unless --allow-worse.
    """
    out = Path(output)
    loaded = api.load(model)
    data = open_data(data_spec, dict(image), model=loaded.proto)
    val = open_optional(val_spec, image, None, loaded.proto)
    eval_data = open_optional(eval_spec, image, None, loaded.proto)
    result = api.prune(loaded, data, target_macs=target_macs, target_params=target_params, strategy=strategy,
                       metric=metric, round_to=round_to,
                       options=finetune_settings(epochs, lr, batch_size, weight_decay, seed, val_fraction, batchnorm),
                       val_data=val, eval_data=eval_data, device=device, max_per_class=max_per_class,
                       latency_batch=latency_batch, latency_seconds=latency_seconds, progress=not as_json)
    external = result.model.save(out)
    emit({"output": str(out), "model": model, "data": data.name, "external_data": external, **result.to_json()},
         as_json, format_prune)
    problems = result.problems()
    if problems:
        if allow_worse:
            click.echo(f"onnxslice: warning: {'; '.join(problems)} (--allow-worse)", err=True)
        else:
            click.echo(f"onnxslice: error: {'; '.join(problems)}; {out} written (pass --allow-worse to accept)",
                       err=True)
            sys.exit(WORSE_EXIT_CODE)


def format_prune(result: dict) -> str:
    def row(label: str, before: float | None, after: float | None, fmt: str) -> str:
        if before is None or after is None:
            return f"{label:<20}{'-':>16}{'-':>16}{'-':>14}"
        ratio = after / before if before else float("nan")
        return f"{label:<20}{fmt.format(before):>16}{fmt.format(after):>16}{ratio:>14.3f}"

    target = result["target"]
    setting = next(f"{k} {result[k]:.4g}" for k in ("theta", "ratio") if result.get(k) is not None)
    finetuned = result["finetune"]
    lines = [
        f"wrote {result['output']}" + (f" (weights in {result['external_data']})" if result["external_data"] else ""),
        f"{result['strategy']} {result['metric']}, {setting}, to {target['fraction']:g} of the {target['metric']} "
        f"(round to {result['round_to']}); fine-tuned epoch {result['best_epoch']} of "
        f"{len(finetuned['history']) - 1}; accuracies on {result['eval_data']}",
        f"{'':<20}{'before':>16}{'after':>16}{'after/before':>14}",
        row("parameters", result["params_before"], result["params_after"], "{:,}"),
        row("MACs / sample", result["macs_before"], result["macs_after"], "{:,}"),
        row("accuracy", result["accuracy_before"], result["accuracy_after"], "{:.4f}"),
        row("latency ms / batch", result["latency_ms_before"], result["latency_ms_after"], "{:.3f}"),
        f"accuracy before fine-tuning {result['accuracy_pruned']:.4f}; verified: max |pruned - masked| = "
        f"{result['max_abs_diff']:.3g}",
    ]
    if result["latency_ms_before"] is None:
        lines.append("latency not measured (--latency-seconds 0)")
    return "\n".join(lines)
