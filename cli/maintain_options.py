"""Options and loading shared by the training commands: readapt, incremental, finetune and prune."""

from __future__ import annotations

from collections.abc import Callable

import click
import onnx

from onnxslice.data import DataSource
from onnxslice.maintain.finetune import BATCHNORM_MODES, FinetuneOptions
from onnxslice.maintain.training import TrainingOptions
from onnxslice_cli.common import DataSpec, open_data

DATA_HELP = ("A .npz with x and y, an image folder, or digits / digits:train / digits:val / digits:test; "
             "optionally :CLASSES.")


def training_options(command: Callable) -> Callable:
    """--epochs / --lr / --batch-size / --weight-decay / --seed / --max-per-class."""
    defaults = TrainingOptions()
    options = [
        click.option("--epochs", type=click.IntRange(min=0), default=defaults.epochs, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=defaults.lr, show_default=True,
                     help="Adam learning rate."),
        click.option("--batch-size", type=click.IntRange(min=1), default=defaults.batch_size, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=defaults.weight_decay,
                     show_default=True, help="Adam weight decay (never moves frozen values)."),
        click.option("--seed", type=int, default=defaults.seed, show_default=True,
                     help="Seed of the batch order and the attacks."),
        click.option("--max-per-class", type=click.IntRange(min=1), default=None,
                     help="Use at most N samples per class of each data set (small, quick runs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def open_optional(spec: str | None, image: dict, max_per_class: int | None,
                  model: onnx.ModelProto | None = None) -> DataSource | None:
    """Open a DATA option that may be absent; the image options are not consumed (several data sets share them).
    ``model``: the model the data is for (an image folder is read as grayscale for a one-channel input)."""
    return open_data(spec, dict(image), max_per_class, model) if spec else None


def finetune_options(defaults: FinetuneOptions) -> Callable[[Callable], Callable]:
    """--epochs / --lr / --batch-size / --weight-decay / --seed / --val-data / --val-fraction / --batchnorm
    (the settings of :class:`onnxslice.maintain.finetune.FinetuneOptions`), shown with ``defaults``."""
    options = [
        click.option("--epochs", type=click.IntRange(min=0), default=defaults.epochs, show_default=True,
                     help="Fine-tuning epochs (0: none)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=defaults.lr, show_default=True,
                     help="Adam learning rate."),
        click.option("--batch-size", type=click.IntRange(min=1), default=defaults.batch_size, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=defaults.weight_decay,
                     show_default=True, help="Adam weight decay."),
        click.option("--seed", type=int, default=defaults.seed, show_default=True,
                     help="Seed of the batch order and the held-out split."),
        click.option("--val-data", "val_spec", type=DataSpec(), metavar="DATA", default=None,
                     help="Validation data that chooses the best epoch (default: a held-out fraction of --data)."),
        click.option("--val-fraction", type=click.FloatRange(min=0, max=1, max_open=True),
                     default=defaults.val_fraction, show_default=True,
                     help="Fraction of --data held out for validation when --val-data is not given (0: none; "
                          "the last epoch is kept)."),
        click.option("--batchnorm", type=click.Choice(BATCHNORM_MODES), default=defaults.batchnorm,
                     show_default=True,
                     help="eval: BatchNorm keeps its running statistics; train: batch statistics, updated."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def finetune_settings(epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int, val_fraction: float,
                      batchnorm: str) -> FinetuneOptions:
    return FinetuneOptions(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                           val_fraction=val_fraction, batchnorm=batchnorm)
