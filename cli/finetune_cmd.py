"""`onnxslice finetune`: train every parameter on plain cross entropy, keep the best epoch, verified export."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.maintain.finetune import FinetuneOptions
from onnxslice_cli.common import (
    DataSpec,
    OutputFile,
    data_options,
    emit,
    json_option,
    model_argument,
    reports_errors,
)
from onnxslice_cli.maintain_options import DATA_HELP, finetune_options, open_optional


@click.command()
@model_argument
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="DATA",
              help=f"Training data. {DATA_HELP}")
@finetune_options(FinetuneOptions())
@click.option("--max-per-class", type=click.IntRange(min=1), default=None,
              help="Use at most N samples per class of each data set (small, quick runs).")
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write tuned.onnx.")
@data_options
@json_option
@reports_errors
def finetune(model: str, data_spec: str, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int,
             val_spec: str | None, val_fraction: float, batchnorm: str, max_per_class: int | None, output: str,
             as_json: bool, **image: object) -> None:
    """Fine-tune every parameter of MODEL on DATA (Adam, cross entropy) -> tuned.onnx.

    The validation accuracy is measured before training and after every epoch, and the best epoch is
    written (the unchanged model when no epoch improves on it), exported through PyTorch and checked
    against the trained module before writing.
    """
    out = Path(output)
    loaded = api.load(model)
    data = open_optional(data_spec, image, max_per_class, loaded.proto)
    val = open_optional(val_spec, image, max_per_class, loaded.proto)
    result = api.finetune(loaded, data, val, progress=not as_json, epochs=epochs, lr=lr, batch_size=batch_size,
                          weight_decay=weight_decay, seed=seed, val_fraction=val_fraction, batchnorm=batchnorm)
    result.model.save(out)
    emit({"output": str(out), "model": model, "data": data.name,
          "val_data": val.name if val is not None else (f"{val_fraction:g} of {data.name}" if val_fraction else None),
          "epochs": epochs, "lr": lr, "batch_size": batch_size, "batchnorm": batchnorm,
          "params_before": loaded.params, "params_after": result.model.params,
          "macs_before": loaded.macs, "macs_after": result.model.macs,
          **result.to_json()}, as_json, format_finetune)


def format_finetune(result: dict) -> str:
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    lines = [f"wrote {result['output']} (epoch {result['best_epoch']} of {result['epochs']}: the best on "
             f"{result['val_data'] or 'no validation data: the last'}; {result['train_samples']} training samples, "
             f"{result['seconds']:.1f} s)",
             f"{'epoch':>5}{'train loss':>12}{'val accuracy':>14}"]
    for row in result["history"]:
        loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        lines.append(f"{row['epoch']:>5}{loss:>12}{shown(row['val_accuracy']):>14}"
                     + ("  *" if row["epoch"] == result["best_epoch"] else ""))
    lines.append(f"val accuracy {shown(result['accuracy_before'])} -> {shown(result['accuracy_after'])}")
    return "\n".join(lines)
