"""The ``onnxslice`` command group; each subcommand lives in its own module, imported when it runs (so that a
quick command does not pay for PyTorch, which only some commands need)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from onnxslice import __version__
from onnxslice.errors import one_line

#: command name -> module in onnxslice_cli that defines it (as an attribute of the same name)
COMMANDS = {
    "profile": "profile_cmd", "slice": "slice_cmd", "restructure": "restructure_cmd", "mask": "mask_cmd",
    "evaluate": "evaluate_cmd", "readapt": "readapt_cmd", "incremental": "incremental_cmd",
    "compress": "compress_cmd", "sweep": "sweep_cmd", "inspect": "inspect_cmd", "finetune": "finetune_cmd",
    "prune": "prune_cmd",
}


class Commands(click.Group):
    """The command group: subcommands imported on first use; usage errors (a bad option, a missing file) as one
    line and exit code 2, and Ctrl-C as one line and exit code 130, like every other error of a command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return getattr(importlib.import_module(f"onnxslice_cli.{COMMANDS[name]}"), name)
        return super().get_command(ctx, name)

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
