"""The ``onnxslice`` command group; each subcommand lives in its own module."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from onnxslice import __version__
from onnxslice.errors import one_line
from onnxslice_cli.compress_cmd import compress
from onnxslice_cli.evaluate_cmd import evaluate
from onnxslice_cli.incremental_cmd import incremental
from onnxslice_cli.inspect_cmd import inspect
from onnxslice_cli.mask_cmd import mask
from onnxslice_cli.profile_cmd import profile
from onnxslice_cli.readapt_cmd import readapt
from onnxslice_cli.restructure_cmd import restructure
from onnxslice_cli.slice_cmd import slice
from onnxslice_cli.sweep_cmd import sweep

COMMANDS = [profile, slice, restructure, mask, evaluate, readapt, incremental, compress, sweep, inspect]


class Commands(click.Group):
    """The command group, with usage errors (a bad option, a missing file) as one line and exit code 2, and
    Ctrl-C as one line and exit code 130, like every other error of a command."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.ClickException as exc:
            click.echo(f"onnxslice: error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("onnxslice: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxslice")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details on stderr.")
def cli(verbose: bool) -> None:
    """Find the critical neurons of an ONNX classifier and maintain it: shrink, repair, extend."""
    debug = verbose or os.environ.get("ONNXSLICE_DEBUG")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    logging.captureWarnings(True)  # libraries' warnings (numpy's RuntimeWarning, ...) are details, not messages
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if debug else logging.ERROR)


for _command in COMMANDS:
    cli.add_command(_command)
