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

#: command name -> (module in onnxslice_cli that defines it as an attribute of the same name, its one-line help).
#: The one-line help lives here, not in the modules, so that ``onnxslice --help`` lists the commands without
#: importing them (which would import PyTorch); a command's docstring is its full help.
COMMANDS = {
    "profile": ("profile_cmd", "Measure every neuron of MODEL on DATA per category -> profile.npz."),
    "slice": ("slice_cmd", "Select the critical channels of MODEL (semantic, global, category-wise) -> slice.json."),
    "restructure": ("restructure_cmd", "Remove the non-critical channels of SLICE from MODEL, verified -> small.onnx."),
    "mask": ("mask_cmd", "Zero the non-critical neurons of SLICE; shapes unchanged -> masked.onnx."),
    "evaluate": ("evaluate_cmd", "Accuracy overall and per class, parameters, MACs and latency of MODEL on DATA."),
    "finetune": ("finetune_cmd", "Fine-tune every parameter of MODEL on DATA (Adam, cross entropy) -> tuned.onnx."),
    "prune": ("prune_cmd", "Prune MODEL to a size budget and fine-tune it -> pruned.onnx, with a before/after table."),
    "readapt": ("readapt_cmd", "Train only the critical neurons of MODEL against adversarial samples -> out.onnx."),
    "incremental": ("incremental_cmd", "Freeze the old task's critical neurons, train MODEL on NEW_DATA -> new.onnx."),
    "compress": ("compress_cmd", "Restructure MODEL with SLICE, then prune its weights while the accuracy holds."),
    "sweep": ("sweep_cmd", "Slice MODEL at every Θ / ratio / budget and evaluate each: compression vs accuracy."),
    "inspect": ("inspect_cmd", "Summarise SLICE: kept neurons per layer and category, the fraction of the model kept."),
}


class Commands(click.Group):
    """The command group: subcommands imported on first use; usage errors (a bad option, a missing file) as one
    line and exit code 2, and Ctrl-C as one line and exit code 130, like every other error of a command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return getattr(importlib.import_module(f"onnxslice_cli.{COMMANDS[name][0]}"), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

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
