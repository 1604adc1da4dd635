"""`onnxslice compress`: restructure with a slice, then unstructured pruning inside what is left -> out.onnx."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.compression.loop import DEFAULT_MAX_DROP, DEFAULT_MAX_ITERATIONS, DEFAULT_STEP
from onnxslice.compression.methods import METHODS
from onnxslice.errors import InputError
from onnxslice.maintain.finetune import REPAIR_LR
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    data_options,
    device_option,
    emit,
    json_option,
    model_argument,
    ray_option,
    reports_errors,
)
from onnxslice_cli.maintain_options import open_optional


@click.command()
@model_argument
@click.option("--slice", "slice_path", type=InputFile(), default=None,
              help="slice.json made for MODEL: restructure with it first. Without it, prune the original "
                   "model (the baseline of the paper's Table 4).")
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help="Labelled data (a .npz, an image folder, digits:train, ...) to fine-tune on; also the data the "
                   "stopping point is chosen on when --val-data is not given (with fine-tuning: a held-out tenth).")
@click.option("--val-data", "val_spec", type=DataSpec(), metavar="DATA", default=None,
              help="Validation data the stopping point (and fine-tuning's best epochs) are chosen on, e.g. "
                   "digits:val.")
@click.option("--eval-data", "eval_spec", type=DataSpec(), metavar="DATA", default=None,
              help="Data CR/NI/MA are reported on, e.g. digits:test (default: the validation data).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fine-tune every pruned model for this many epochs on DATA, zero weights kept at zero.")
@click.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=REPAIR_LR, show_default=True,
              help="Adam learning rate of that fine-tuning.")
@click.option("--method", type=click.Choice(list(METHODS)), required=True,
              help="lamp: LAMP scores (Lee et al. 2020); global: global magnitude; uniform: Uniform+ (Gale et al. "
                   "2019: a first Conv dense, last layer >= 20%); erk: Erdos-Renyi-Kernel densities (Evci et al.).")
@click.option("--step", type=float, default=DEFAULT_STEP, show_default=True,
              help="Each iteration prunes this fraction of the weights still left: sparsity 1 - (1 - STEP)^k.")
@click.option("--max-drop", type=float, default=DEFAULT_MAX_DROP, show_default=True,
              help="Stop before accuracy falls more than this (absolute) below the original model's.")
@click.option("--max-iterations", type=click.IntRange(min=1), default=DEFAULT_MAX_ITERATIONS, show_default=True)
@click.option("-o", "--output", required=True, type=OutputFile(),
              help="Where to write the compressed model (zeros stored dense).")
@device_option
@ray_option
@data_options
@json_option
@reports_errors
def compress(model: str, slice_path: str | None, data_spec: str, val_spec: str | None, eval_spec: str | None,
             finetune_epochs: int, finetune_lr: float, method: str, step: float, max_drop: float,
             max_iterations: int, output: str, device: str, ray: str | None, as_json: bool,
             **image: object) -> None:
    """Restructure MODEL with SLICE, then prune its weights by METHOD at rising sparsity while the accuracy on
    the validation data stays within MAX_DROP of the original's; report CR, NI and MA on the evaluation data.

    CR is the parameter reduction versus the original model (zeros count as removed), NI the number of
    pruning iterations kept, MA the accuracy of the written model. The written ONNX stores the zeros;
    the report says how much a sparse (CSR) format of the pruned weights would save.
    """
    out = Path(output)
    original = api.load(model)
    piece = api.load_slice(slice_path, original) if slice_path else None
    data = open_optional(data_spec, image, None, original.proto)
    val = open_optional(val_spec, image, None, original.proto)
    evaluation = open_optional(eval_spec, image, None, original.proto)
    result = api.compress(original, data, method, piece, val_data=val, eval_data=evaluation,
                          finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, step=step, max_drop=max_drop,
                          device=device, max_iterations=max_iterations, progress=not as_json, ray=ray)
    if not result.within_budget:
        raise InputError(f"{slice_path}: the restructured model scores {result.val_accuracy_start:.4f} on "
                         f"{result.val_data}, more than --max-drop {max_drop} below the original's "
                         f"{result.val_accuracy_original:.4f}; nothing written")
    api.Model(result.model).save(out)
    emit({"output": str(out), "model": model, "slice": slice_path, "method": method, "step": step,
          "max_drop": max_drop, "data": data.name, **result.to_json()}, as_json, format_compress)


def format_compress(result: dict) -> str:
    storage = result["storage"]
    lines = [f"wrote {result['output']} ({result['method']}"
             + (f" inside the slice {result['slice']})" if result["slice"] else ", no slice)"),
             f"CR  {result['cr']:.2%}   parameters {result['params_nonzero']:,} non-zero of "
             f"{result['params_original']:,} in the original ({result['params_dense']:,} stored)",
             f"NI  {result['ni']}   ({result['evaluations']} evaluated on {result['val_data']}"
             + (f", {result['finetune_epochs']} fine-tuning epochs each" if result["finetune_epochs"] else "")
             + f"; stopped: {result['stopped']})",
             f"MA  {result['ma']:.4f}   original {result['accuracy_original']:.4f}"
             + (f", restructured {result['accuracy_start']:.4f}" if result["slice"] else "")
             + f"   (on {result['eval_data']})",
             f"pruned weights: sparsity {result['sparsity']:.2%}; {storage['dense_bytes']:,} bytes dense, "
             f"{storage['csr_bytes']:,} as CSR ({storage['csr_saving']:.1%} saved)"]
    return "\n".join(lines)
