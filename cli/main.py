"""The ``onnxslice`` command group; each subcommand lives in its own module, imported when it runs (so that a
quick command does not pay for PyTorch, which only some commands need)."""

from __future__ import annotations

import importlib
import logging
import os

import click

from onnxslice import __version__

#: command name -> module in onnxslice_cli that defines it (as an attribute of the same name)
COMMANDS = {
    "profile": "profile_cmd", "slice": "slice_cmd", "restructure": "restructure_cmd", "mask": "mask_cmd",
    "evaluate": "evaluate_cmd", "readapt": "readapt_cmd", "incremental": "incremental_cmd",
    "compress": "compress_cmd", "sweep": "sweep_cmd", "inspect": "inspect_cmd",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return getattr(importlib.import_module(f"onnxslice_cli.{COMMANDS[name]}"), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxslice")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details on stderr.")
def cli(verbose: bool) -> None:
    """Find the critical neurons of an ONNX classifier and maintain it: shrink, repair, extend."""
    debug = verbose or os.environ.get("ONNXSLICE_DEBUG")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
