"""The ``onnxslice`` command group; each subcommand lives in its own module."""

from __future__ import annotations

import logging
import os

import click

from onnxslice import __version__
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxslice")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details on stderr.")
def cli(verbose: bool) -> None:
    """Find the critical neurons of an ONNX classifier and maintain it: shrink, repair, extend."""
    debug = verbose or os.environ.get("ONNXSLICE_DEBUG")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")


for _command in COMMANDS:
    cli.add_command(_command)
