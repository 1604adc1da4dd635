"""`onnxslice readapt`: re-train only the critical neurons against adversarial samples (paper §4.2)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.api import SLICE_ON
from onnxslice.maintain.attacks import ATTACKS, TARGET_ACCURACY
from onnxslice.maintain.readapt import AUTO
from onnxslice.profiling.metrics import METRICS
from onnxslice.slicing.strategies import STRATEGIES
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    RegistryChoice,
    data_options,
    emit,
    json_option,
    model_argument,
    reports_errors,
)
from onnxslice_cli.maintain_options import DATA_HELP, open_optional, training_options


class EpsValue(click.ParamType):
    """A positive number or ``auto``."""

    name = "EPS|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if value == AUTO or isinstance(value, float):
            return value
        try:
            return float(value)  # type: ignore[arg-type]
        except ValueError:
            self.fail(f"{value!r} is neither a number nor {AUTO}", param, ctx)


@click.command()
@model_argument
@click.option("--slice", "slice_path", type=InputFile(), default=None,
              help="slice.json made for MODEL: its kept neurons are the ones trained (with --slice-on adversarial: "
                   "its settings are the ones re-applied). Required with --slice-on clean.")
@click.option("--slice-on", type=click.Choice(SLICE_ON), default="clean", show_default=True,
              help="clean: train the --slice given; adversarial: slice anew on a profile of the adversarial samples "
                   "of --data (the paper's footnote 3), with --slice's settings or --strategy / --theta / --ratio / "
                   "--metric, and report how that slice differs from the clean one.")
@click.option("--strategy", type=RegistryChoice(STRATEGIES), default=None,
              help="--slice-on adversarial: the slicing strategy [default: --slice's, else semantic].")
@click.option("--theta", type=float, default=None, help="--slice-on adversarial: semantic threshold Θ.")
@click.option("--ratio", type=float, default=None, help="--slice-on adversarial: fraction kept (global / category).")
@click.option("--metric", type=RegistryChoice(METRICS, sort=True), default=None,
              help="--slice-on adversarial: contribution metric [default: --slice's, else taylor].")
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help=f"Training data. {DATA_HELP}")
@click.option("--eval-data", "eval_spec", type=DataSpec(), metavar="DATA", default=None,
              help="Data for the reported accuracies (default: --data).")
@click.option("--attack", type=click.Choice(sorted(ATTACKS)), default="fgsm", show_default=True,
              help="torchattacks attack generating the adversarial samples.")
@click.option("--eps", type=EpsValue(), default=AUTO, show_default=True,
              help="L-infinity budget in input units, or auto: the smallest budget that brings the model to at "
                   f"most {TARGET_ACCURACY['fgsm']:.0%} (FGSM) / {TARGET_ACCURACY['pgd']:.0%} (PGD) accuracy on "
                   "the adversarial samples of --data.")
@click.option("--clip", nargs=2, type=float, default=None, metavar="MIN MAX",
              help="Valid input range that adversarial samples are clamped to (default: min and max of --data).")
@click.option("--train", "train", type=click.Choice(["critical", "all"]), default="critical", show_default=True,
              help="critical: only the slice's kept neurons (and the classifier); all: the full-training baseline.")
@training_options
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write out.onnx.")
@data_options
@json_option
@reports_errors
def readapt(model: str, slice_path: str | None, slice_on: str, strategy: str | None, theta: float | None,
            ratio: float | None, metric: str | None, data_spec: str, eval_spec: str | None, attack: str,
            eps: float | str, clip: tuple[float, float] | None, train: str, epochs: int, lr: float, batch_size: int,
            weight_decay: float, seed: int, max_per_class: int | None, output: str, as_json: bool,
            **image: object) -> None:
    """Train only the critical neurons of MODEL on CE(x) + CE(adv(x)) -> out.onnx; reports TPR, RA, RAA."""
    out = Path(output)
    loaded = api.load(model)
    piece = api.load_slice(slice_path, loaded) if slice_path else None
    data = open_optional(data_spec, image, max_per_class, loaded.proto)
    eval_data = open_optional(eval_spec, image, max_per_class, loaded.proto)
    adapted, report = api.readapt(loaded, piece, data, eval_data, attack, eps, tuple(clip) if clip else None,
                                  train == "all", epochs=epochs, lr=lr, batch_size=batch_size,
                                  slice_on=slice_on, slicing={"strategy": strategy, "theta": theta, "ratio": ratio,
                                                              "metric": metric},
                                  weight_decay=weight_decay, seed=seed, progress=not as_json)
    adapted.save(out)
    emit({"output": str(out), "model": model, "slice": slice_path, **report}, as_json, format_readapt)


def format_readapt(result: dict) -> str:
    return "\n".join([
        f"wrote {result['output']} ({result['attack']}, eps {result['eps']:.4g}"
        + (f" calibrated to at most {result['eps_calibrated_to']:.0%} adversarial accuracy"
           if result["eps_calibrated_to"] is not None else "")
        + f", train {result['train']}, "
        f"{result['epochs']} epochs on {result['samples']} samples, {result['seconds']:.1f} s)",
        f"slice          on {result['slice_on']} data ({result['slice_data']}): {result['slice_strategy']}, "
        f"{result['slice_metric']}, {result['slice_neuron_fraction']:.1%} of the neurons"
        + (f"; on the clean samples {result['clean_slice_neuron_fraction']:.1%} (TPR "
           f"{result['clean_slice_tpr']:.2%}), {result['slice_changed_neurons']} neurons differ"
           if result["slice_on"] == "adversarial" else ""),
        f"TPR            {result['tpr']:.2%} ({result['trained_params']:,} of {result['layer_params']:,} "
        "neuron-layer parameters)",
        f"clean          {result['clean_before']:.2%} -> {result['clean_after']:.2%}",
        f"adversarial    {result['adversarial_before']:.2%} -> RA {result['ra']:.2%} "
        f"(on the adversarial training samples {result['ra_train']:.2%})",
        f"fresh attack   RAA {result['raa']:.2%}",
    ])
