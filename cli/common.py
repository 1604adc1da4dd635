"""What every subcommand shares: error reporting, JSON output, and the model / data options."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import onnx

from onnxslice.cluster import INSTALL, LOCAL
from onnxslice.data import DataSource, ImageOptions, load_data, source_path
from onnxslice.errors import InputError, VerificationError, one_line
from onnxslice.files import check_outputs
from onnxslice.large import external_data_files
from onnxslice.runtime import DEVICES

log = logging.getLogger("onnxslice")


class InputFile(click.Path):
    """A file the command reads: no output of the command may be it (see :func:`reports_errors`)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)


class OutputFile(click.Path):
    """A file the command writes: checked against every input and the other outputs before any work starts."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)


class RegistryChoice(click.Choice):
    """A choice among the names in a registry (metrics, strategies), read when a value is checked: a metric or
    strategy registered after the command was imported is accepted too."""

    def __init__(self, registry: Mapping[str, object], sort: bool = False) -> None:
        self.registry, self.sort, self.case_sensitive = registry, sort, True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(sorted(self.registry) if self.sort else self.registry)


class DataSpec(click.ParamType):
    """A DATA argument (a .npz, an image folder or a built-in, optionally :CLASSES): its file or folder is an
    input that no output may overwrite or write into."""

    name = "DATA"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


def reports_errors(command: Callable) -> Callable:
    """Check the outputs against the inputs first; then turn an InputError into one line on stderr and exit code 2,
    a failed verification or anything else into one line and exit code 1, Ctrl-C into one line and 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            guard_outputs(click.get_current_context().command, kwargs)
            return command(*args, **kwargs)
        except InputError as exc:
            click.echo(f"onnxslice: error: {one_line(str(exc))}", err=True)
            sys.exit(2)
        except VerificationError as exc:  # a rewrite we refuse to write: our failure, exit 1
            click.echo(f"onnxslice: error: {one_line(str(exc))}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("onnxslice: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort for bugs: exit 1, still one line
            log.debug("internal error", exc_info=True)
            click.echo(f"onnxslice: internal error: {type(exc).__name__}: {one_line(str(exc), 200)} "
                       "(run with ONNXSLICE_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def guard_outputs(command: click.Command, values: dict) -> None:
    """No file a command writes may be a file it reads (model and its external data, data file or folder, slice,
    profile, baseline), lie inside a data folder, or be another output; every output's folder must be writable.
    Inputs and outputs are known by their parameter types (:class:`InputFile`, :class:`DataSpec`,
    :class:`OutputFile`), so a new option is protected by declaring its type."""
    inputs: list[Path] = []
    outputs: list[tuple[str, str]] = []
    for param in command.params:
        given = values.get(param.name or "")
        for value in (given if param.multiple else [given]) if given not in (None, ()) else []:
            if isinstance(param.type, OutputFile):
                outputs.append((_option_name(param), value))
            elif isinstance(param.type, InputFile):
                inputs.append(Path(value))
            elif isinstance(param.type, DataSpec) and (path := source_path(value)) is not None:
                inputs.append(path)
    if not outputs:
        return
    written = [Path(out).parent.resolve() for _, out in outputs]
    for source in [p for p in inputs if p.suffix == ".onnx" and p.is_file()]:
        if source.parent.resolve() in written:
            inputs += external_data_files(source)
    model_outputs = [(option, f"{path}.data") for option, path in outputs if str(path).endswith(".onnx")]
    check_outputs(outputs, inputs)
    for option, companion in model_outputs:  # where a model past 2 GB would keep its weights
        check_outputs([(option + " (its .data file)", companion)], inputs)


def _option_name(param: click.Parameter) -> str:
    return max(param.opts, key=len) if isinstance(param, click.Option) else param.human_readable_name


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


def ray_option(command: Callable) -> Callable:
    """--ray [ADDRESS]: run the work on Ray (a local Ray started for the command when no address is given)."""
    return click.option("--ray", "ray", is_flag=False, flag_value=LOCAL, default=None, metavar="[ADDRESS]",
                        help="Run on Ray: a local Ray started for the command (--ray alone), the cluster this "
                             "machine belongs to (--ray auto) or one at ADDRESS (ray://host:10001). Needs "
                             f"{INSTALL}; every worker opens DATA itself, at the same path.")(command)


def model_argument(command: Callable) -> Callable:
    return click.argument("model", type=InputFile())(command)


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


def open_data(spec: str, options: dict, max_per_class: int | None = None,
              model: onnx.ModelProto | None = None) -> DataSource:
    """Open a DATA argument with the image options collected by :func:`data_options`. With ``model``, the images
    of a folder are read as one grey channel when the model's input has one channel (RGB and L images alike),
    and as RGB otherwise, unless --grayscale says so."""
    image = ImageOptions(
        size=tuple(options.pop("image_size")) if options.get("image_size") else None,
        grayscale=options.pop("grayscale", False),
        mean=options.pop("mean", None) or None,
        std=options.pop("std", None) or None,
        channels_last=options.pop("channels_last", False),
    )
    options.pop("image_size", None)
    if model is not None and not image.grayscale and input_channels(model, image.channels_last) == 1:
        image.grayscale = True
        log.debug("the model takes one input channel: images of a folder are read as grayscale")
    return load_data(spec, image, max_per_class)


def input_channels(model: onnx.ModelProto, channels_last: bool = False) -> int | None:
    """The channel count of the model's (first) input when it is an image batch: axis 1 of a rank-4 input, or
    axis 3 with ``channels_last``; None when the input is not rank 4 or that axis is not fixed."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            return None
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            return None
        dim = dims[3 if channels_last else 1]
        return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
    return None
