"""`onnxslice slice`: select the critical neurons of a model -> slice.json."""

from __future__ import annotations

import click

from onnxslice import api
from onnxslice.api import DEFAULT_METRIC
from onnxslice.profiling.artifact import REPRESENTATIONS
from onnxslice.profiling.metrics import METRICS
from onnxslice.profiling.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, DEFAULT_TOLERANCE
from onnxslice.slicing.strategies import DEFAULT_RATIO, DEFAULT_REPRESENTATION, DEFAULT_THETA, STRATEGIES
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    RegistryChoice,
    data_options,
    device_option,
    emit,
    json_option,
    log,
    model_argument,
    open_data,
    reports_errors,
)
from onnxslice_cli.inspect_cmd import format_layers


@click.command("slice")
@model_argument
@click.option("--data", "data_spec", type=DataSpec(), metavar="DATA",
              help="Data to profile MODEL on: a .npz with x and y, an image folder, or digits / digits:train / "
                   "digits:val / digits:test; optionally :CLASSES such as :0-4. Not read when --profile is given.")
@click.option("--profile", "profile_path", type=InputFile(), default=None,
              help="A profile.npz of MODEL (onnxslice profile): slice from it without running the model.")
@click.option("--metric", type=RegistryChoice(METRICS, sort=True), default=None,
              help=f"Neuron contribution metric that orders the neurons [default: {DEFAULT_METRIC}, or with "
                   f"--profile the profile's first metric when it has no {DEFAULT_METRIC}].")
@click.option("--strategy", type=RegistryChoice(STRATEGIES), default="semantic", show_default=True,
              help="semantic: smallest prefix with CKA > THETA per category; global: top RATIO over all data; "
                   "category: top RATIO per category (categories merged by union); shared: per layer one prefix, "
                   "by contribution over all data, with CKA > THETA for every category.")
@click.option("--theta", type=float, default=None,
              help=f"Threshold Θ in [0, 1] (semantic, shared; default {DEFAULT_THETA}).")
@click.option("--ratio", type=float, default=None,
              help=f"Fraction of each layer to keep, ceil(R·C) (global / category only; default {DEFAULT_RATIO}).")
@click.option("--step", type=int, default=1, show_default=True,
              help="Semantic: prefix lengths scanned are multiples of STEP (the paper's selection interval i).")
@click.option("--uncentered", is_flag=True, help="Semantic: the paper's uncentred CKA (Eq. 2) instead of centred.")
@click.option("--cka-representation", "representation", type=click.Choice(REPRESENTATIONS), default=None,
              help=f"Semantic: a conv neuron in CKA is its spatial mean or its whole feature map "
                   f"[default: {DEFAULT_REPRESENTATION}].")
@click.option("--round-to", type=click.IntRange(min=1), default=DEFAULT_ROUND_TO, show_default=True,
              help="Keep a multiple of N channels in every group of coupled channels (or all of them): channel "
                   "counts onnxruntime's blocked kernels run fast.")
@click.option("--target-params", type=float, default=None,
              help=f"Size budget: the restructured model keeps this fraction of the parameters (within "
                   f"±{DEFAULT_TOLERANCE}); Θ or the ratio is chosen for it.")
@click.option("--target-macs", type=float, default=None,
              help="Size budget: the restructured model keeps this fraction of the multiply-accumulates.")
@click.option("--max-per-class", type=click.IntRange(min=1), default=DEFAULT_MAX_PER_CLASS, show_default=True,
              help="Samples per category used for the CKA statistics when profiling.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Samples per batch when profiling (with --data; not used with --profile).")
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write slice.json.")
@device_option
@data_options
@json_option
@reports_errors
def slice(model: str, data_spec: str | None, profile_path: str | None, metric: str | None, strategy: str,
          theta: float | None, ratio: float | None, step: int, uncentered: bool, representation: str | None,
          round_to: int,
          target_params: float | None, target_macs: float | None, max_per_class: int, batch_size: int, output: str,
          device: str, as_json: bool, **image: object) -> None:
    """Select the critical channels of MODEL (semantic, global or category-wise), deciding on the groups of
    channels restructure removes together -> slice.json. With --target-params / --target-macs, Θ or the ratio
    is chosen so that the restructured model has that fraction of the original's size."""
    loaded = api.load(model)
    profile = api.load_profile(profile_path, loaded) if profile_path else None
    if profile is not None and data_spec and data_spec != profile.data:
        log.warning("--data %s is not read: the profile was measured on %s", data_spec, profile.data)
    data = open_data(data_spec, image, model=loaded.proto) if data_spec and profile is None else None
    result = api.select(loaded, profile, metric, strategy, data=data, theta=theta, ratio=ratio, step=step,
                        centered=not uncentered, representation=representation, round_to=round_to,
                        target_params=target_params, target_macs=target_macs, max_per_class=max_per_class,
                        batch_size=batch_size, device=device, progress=True)
    result.save(output)
    inspection = api.inspect(result)
    summary = {"output": output, "model": model, "metric": result.metric, "strategy": strategy,
               "theta": result.theta, "ratio": result.ratio, "step": result.step, "centered": result.centered,
               "representation": result.representation, "round_to": round_to, "target": result.target,
               "neuron_fraction": inspection["neuron_fraction"], **(result.restructured or {}),
               "layers": inspection["layers"],
               "kept_whole": [{"name": name, "reason": reason} for name, reason in result.kept_whole.items()]}
    emit(summary, as_json, format_summary)


def format_summary(summary: dict) -> str:
    settings = ", ".join(f"{k}={summary[k]:.6g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
                         for k in ("theta", "ratio", "step", "centered", "representation", "round_to")
                         if summary.get(k) is not None)
    return "\n".join([f"wrote {summary['output']} ({summary['strategy']}, {summary['metric']}, {settings})",
                      format_layers(summary["layers"]),
                      *[f"kept whole  {item['name']} (not profiled): {item['reason']}"
                        for item in summary.get("kept_whole", [])],
                      f"neurons kept: {summary['neuron_fraction']:.1%}", format_restructured(summary)])


def format_restructured(sizes: dict) -> str:
    """The parameters and MACs restructure reaches, as one line (empty when unknown)."""
    if "params" not in sizes:
        return ""
    return (f"restructured: parameters {sizes['params']:,} of {sizes['params_before']:,} "
            f"({sizes['params_fraction']:.1%}), MACs {sizes['macs']:,} of {sizes['macs_before']:,} "
            f"({sizes['macs_fraction']:.1%})")
