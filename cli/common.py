"""What every subcommand shares: error reporting, JSON output, and the model / data options."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click
import onnx

from onnxslice.data import DataSource, ImageOptions, load_data
from onnxslice.errors import InputError
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.runtime import DEVICES
from onnxslice.slicing.artifact import Slice
from onnxslice.surgery.verify import VerificationError

log = logging.getLogger("onnxslice")


def reports_errors(command: Callable) -> Callable:
    """Turn an InputError into one line on stderr and exit code 2; a failed verification or anything else is
    one line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            click.echo(f"onnxslice: error: {exc}", err=True)
            sys.exit(2)
        except VerificationError as exc:  # a rewrite we refuse to write: our failure, exit 1
            click.echo(f"onnxslice: error: {exc}", err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort for bugs: exit 1, still one line
            log.debug("internal error", exc_info=True)
            click.echo(f"onnxslice: internal error: {type(exc).__name__}: {exc} "
                       "(run with ONNXSLICE_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def emit(result: dict, as_json: bool, table: Callable[[dict], str]) -> None:
    """Print ``result`` as one JSON object on stdout, or as the human table."""
    if as_json:
        click.echo(json.dumps(result, default=_jsonable))
    else:
        click.echo(table(result))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_option(command: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(command)


def device_option(command: Callable) -> Callable:
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="onnxruntime execution provider: CUDA when available, else CPU.")(command)


def model_argument(command: Callable) -> Callable:
    return click.argument("model", type=click.Path(dir_okay=False))(command)


def data_options(command: Callable) -> Callable:
    """--image-size / --grayscale / --mean / --std / --channels-last for image-folder data."""
    options = [
        click.option("--image-size", nargs=2, type=int, default=None, metavar="H W",
                     help="Resize images of a folder data set to H x W."),
        click.option("--grayscale", is_flag=True, help="Read images of a folder as one channel."),
        click.option("--mean", type=float, multiple=True, help="Per-channel mean to subtract (repeat)."),
        click.option("--std", type=float, multiple=True, help="Per-channel std to divide by (repeat)."),
        click.option("--channels-last", is_flag=True, help="Give images as H x W x C instead of C x H x W."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def open_data(spec: str, options: dict, max_per_class: int | None = None) -> DataSource:
    """Open a DATA argument with the image options collected by :func:`data_options`."""
    image = ImageOptions(
        size=tuple(options.pop("image_size")) if options.get("image_size") else None,
        grayscale=options.pop("grayscale", False),
        mean=options.pop("mean", None) or None,
        std=options.pop("std", None) or None,
        channels_last=options.pop("channels_last", False),
    )
    options.pop("image_size", None)
    return load_data(spec, image, max_per_class)


def load_model_and_slice(model: str, slice_path: str) -> tuple[onnx.ModelProto, Slice]:
    """The canonical model and its slice; a slice made for another model is an InputError."""
    onnx_model = load_model(model)
    piece = Slice.load(slice_path)
    piece.check_against(sha256_of(model), find_neuron_layers(onnx_model), model)
    return onnx_model, piece


def not_implemented(name: str, summary: str) -> click.Command:
    """A placeholder subcommand: listed in --help, answers 'not implemented yet' with exit code 2."""

    @click.command(name, help=f"{summary}\n\nNot implemented yet.",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        click.echo(f"onnxslice: error: '{name}' is not implemented yet", err=True)
        sys.exit(2)

    return command
