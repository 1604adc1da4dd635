"""`onnxslice sweep`: the paper's Figure 5 — parameters removed vs accuracy for many slices of one profile."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.api import DEFAULT_METRIC
from onnxslice.compression.deeparc import DEFAULT_THRESHOLD
from onnxslice.compression.sweep import (
    DEEPARC,
    DEFAULT_RATIOS,
    DEFAULT_THETAS,
    parse_strategies,
    parse_values,
)
from onnxslice.files import write_atomically
from onnxslice.profiling.metrics import METRICS
from onnxslice.profiling.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS
from onnxslice.slicing.budget import DEFAULT_ROUND_TO
from onnxslice.slicing.strategies import STRATEGIES
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
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
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help="Data to profile MODEL on (and to evaluate on, unless --eval-data is given).")
@click.option("--eval-data", "eval_spec", type=DataSpec(), default=None, metavar="DATA",
              help="Data the accuracy of every slice is measured on, e.g. digits:test (default: --data).")
@click.option("--profile", "profile_path", type=InputFile(), default=None,
              help="A profile.npz of MODEL with the metrics asked for: slice from it instead of profiling.")
@click.option("--metric", "metrics", type=RegistryChoice(METRICS, sort=True), multiple=True,
              help=f"Contribution metric (repeat for several; default {DEFAULT_METRIC}).")
@click.option("--strategies", default=",".join(STRATEGIES), show_default=True,
              help=f"Comma-separated: {', '.join([*STRATEGIES, DEEPARC])}.")
@click.option("--thetas", default=DEFAULT_THETAS, show_default=True,
              help="Θ values (semantic, shared): START:STOP:STEP or a list.")
@click.option("--ratios", default=DEFAULT_RATIOS, show_default=True,
              help="Global / category ratios: START:STOP:STEP or a list.")
@click.option("--targets", default=None, metavar="FRACTIONS",
              help="Size budgets as well: fractions of the original's MACs (or parameters, --target-kind) that "
                   "the restructured model keeps, START:STOP:STEP or a list, e.g. 0.3,0.5,0.7.")
@click.option("--target-kind", type=click.Choice(["macs", "params"]), default="macs", show_default=True,
              help="What --targets are fractions of.")
@click.option("--round-to", type=click.IntRange(min=1), default=DEFAULT_ROUND_TO, show_default=True,
              help="Keep a multiple of N channels in every group of coupled channels (or all of them).")
@click.option("--deeparc-threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="DeepArc: consecutive layers with CKA above this form one module.")
@click.option("--deeparc-sew/--no-deeparc-sew", default=True, show_default=True,
              help="DeepArc: where a removed span's input and output shapes differ, replace it by a linear sewing "
                   "layer fitted on --data (else keep it).")
@click.option("--max-per-class", type=click.IntRange(min=1), default=DEFAULT_MAX_PER_CLASS, show_default=True,
              help="Samples per category for the CKA statistics (and DeepArc's layer similarities).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Samples per batch when profiling and evaluating.")
@click.option("--plot", "plot_path", type=OutputFile(), default=None, help="Write the plot (PNG).")
@click.option("--csv", "csv_path", type=OutputFile(), default=None, help="Write the points as CSV.")
@device_option
@ray_option
@data_options
@json_option
@reports_errors
def sweep(model: str, data_spec: str, eval_spec: str | None, profile_path: str | None, metrics: tuple[str, ...],
          strategies: str, thetas: str, ratios: str, targets: str | None, target_kind: str, round_to: int,
          deeparc_threshold: float, deeparc_sew: bool, max_per_class: int, batch_size: int,
          plot_path: str | None, csv_path: str | None, device: str, ray: str | None, as_json: bool,
          **image: object) -> None:
    """Profile MODEL once, slice it at every Θ / ratio / size budget for every strategy and metric, mask and
    evaluate each: fraction of parameters restructuring removes vs accuracy (the paper's Figure 5), as a table,
    JSON, CSV and plot."""
    chosen = parse_strategies(strategies)
    theta_values, ratio_values = parse_values(thetas, "--thetas"), parse_values(ratios, "--ratios")
    target_values = parse_values(targets, "--targets") if targets else []
    metrics = metrics or (DEFAULT_METRIC,)
    loaded = api.load(model)
    data = open_data(data_spec, dict(image), model=loaded.proto)
    eval_data = open_data(eval_spec, dict(image), model=loaded.proto) if eval_spec else data
    profile = api.load_profile(profile_path, loaded, metrics) if profile_path else None
    result = api.sweep(loaded, profile, data, chosen, theta_values, ratio_values, metrics=metrics,
                       eval_data=eval_data, max_per_class=max_per_class, batch_size=batch_size, device=device,
                       progress=not as_json, targets=target_values, target_kind=target_kind, round_to=round_to,
                       deeparc_threshold=deeparc_threshold, deeparc_sew=deeparc_sew, ray=ray)
    if plot_path:
        write_atomically(plot_path, lambda tmp: result.save_plot(tmp, Path(model).name))
    if csv_path:
        write_atomically(csv_path, lambda tmp: tmp.write_text(result.csv()))
    emit({"model": model, "data": data.name, "eval_data": eval_data.name, "accuracy_original": result.accuracy_original,
          "plot": plot_path, "csv": csv_path, "points": result.points}, as_json, format_sweep)


def format_sweep(result: dict) -> str:
    lines = [f"{result['model']}: profiled on {result['data']}, evaluated on {result['eval_data']} "
             f"(original accuracy {result['accuracy_original']:.4f})",
             f"{'strategy':<10}{'metric':<10}{'setting':>16}{'budget':>8}{'removed':>10}{'MACs':>8}{'accuracy':>10}"]
    for p in result["points"]:
        setting = next(f"{k}={p[k]:.4g}" for k in ("theta", "ratio", "threshold") if p.get(k) is not None)
        budget = f"{p['target']:g}" if p.get("target") is not None else "-"
        macs = f"{p['macs_fraction']:.1%}" if p.get("macs_fraction") is not None else "-"
        lines.append(f"{p['strategy']:<10}{p['metric'] or '-':<10}{setting:>16}{budget:>8}{p['compression']:>10.2%}"
                     f"{macs:>8}{p['accuracy']:>10.4f}")
    lines += [f"deeparc (CKA > {p['threshold']:g}): removed {', '.join(p['removed']) or 'nothing'}; "
              f"{len(p['sewing'])} sewing layers ({sum(s['params'] for s in p['sewing']):,} parameters); "
              f"{p['params_removed']:,} of {p['params_before']:,} parameters removed"
              for p in result["points"] if p["strategy"] == "deeparc"]
    lines += [f"wrote {path}" for path in (result["plot"], result["csv"]) if path]
    return "\n".join(lines)
