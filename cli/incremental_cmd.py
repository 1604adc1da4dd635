"""`onnxslice incremental`: learn a new task by training only the non-critical neurons (paper §4.3)."""

from __future__ import annotations

from pathlib import Path

import click

from onnxslice import api
from onnxslice.errors import InputError
from onnxslice_cli.common import (
    DataSpec,
    InputFile,
    OutputFile,
    data_options,
    emit,
    json_option,
    model_argument,
    reports_errors,
)
from onnxslice_cli.maintain_options import DATA_HELP, open_optional, training_options


@click.command()
@model_argument
@click.option("--slice", "slice_path", required=True, type=InputFile(),
              help="slice.json of the old task made for MODEL: its kept neurons are frozen.")
@click.option("--data", "data_spec", type=DataSpec(), required=True, metavar="NEW_DATA",
              help=f"New-task training data. {DATA_HELP}")
@click.option("--replay", "replay_spec", type=DataSpec(), metavar="OLD_DATA", default=None,
              help="Old-task data mixed into training (replay baseline).")
@click.option("--replay-fraction", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Stratified fraction of OLD_DATA to replay (default 1 when --replay is given).")
@click.option("--old-classes", default=None, metavar="CLASSES",
              help="Old-task categories whose classifier rows are frozen, e.g. 0-4 (default: the slice's "
                   "per-category keys).")
@click.option("--eval-data", "eval_spec", type=DataSpec(), metavar="DATA", default=None,
              help="New-task data for task_b (default: NEW_DATA).")
@click.option("--old-eval-data", "old_eval_spec", type=DataSpec(), metavar="DATA", default=None,
              help="Old-task data for task_a, measured on the old-task model (default: --replay data, if any).")
@click.option("--train", "train", type=click.Choice(["non-critical", "all"]), default="non-critical",
              show_default=True, help="non-critical: freeze the slice's neurons; all: plain retraining.")
@training_options
@click.option("-o", "--output", required=True, type=OutputFile(), help="Where to write new.onnx.")
@click.option("--old-task-out", type=OutputFile(), default=None,
              help="Also write the old-task model: the frozen parameters with the slice's mask (the new model "
                   "itself when nothing is frozen).")
@data_options
@json_option
@reports_errors
def incremental(model: str, slice_path: str, data_spec: str, replay_spec: str | None, replay_fraction: float | None,
                old_classes: str | None, eval_spec: str | None, old_eval_spec: str | None, train: str, epochs: int,
                lr: float, batch_size: int, weight_decay: float, seed: int, max_per_class: int | None, output: str,
                old_task_out: str | None, as_json: bool, **image: object) -> None:
    """Freeze the critical neurons of the old task (SLICE) and train the rest of MODEL on NEW_DATA -> new.onnx."""
    if replay_fraction is not None and not replay_spec:
        raise InputError("--replay-fraction needs --replay OLD_DATA")
    out, old_out = Path(output), Path(old_task_out) if old_task_out else None
    loaded = api.load(model)
    piece = api.load_slice(slice_path, loaded)
    replay = open_optional(replay_spec, image, max_per_class, loaded.proto)
    old_eval = open_optional(old_eval_spec or replay_spec, image, max_per_class, loaded.proto)
    new_model, old_model, report = api.incremental(
        loaded, piece, open_optional(data_spec, image, max_per_class, loaded.proto), replay=replay,
        old_eval=old_eval, new_eval=open_optional(eval_spec, image, max_per_class, loaded.proto),
        train_all=train == "all", old_classes=old_classes,
        replay_fraction=replay_fraction if replay_fraction is not None else 1.0, epochs=epochs, lr=lr,
        batch_size=batch_size, weight_decay=weight_decay, seed=seed, progress=not as_json)
    new_model.save(out)
    if old_out is not None:
        old_model.save(old_out)
    emit({"output": str(out), "old_task_output": str(old_out) if old_out else None, "model": model,
          "slice": slice_path, "replay_fraction": replay_fraction if replay else None, **report},
         as_json, format_incremental)


def format_incremental(result: dict) -> str:
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.2%}"

    lines = [f"wrote {result['output']} (train {result['train']}, {result['epochs']} epochs on {result['samples']} "
             f"samples of which {result['replay_samples']} replayed, {result['seconds']:.1f} s; "
             f"{result['tpr']:.2%} of the neuron-layer parameters trained)"]
    if result["old_task_output"]:
        lines.append(f"wrote {result['old_task_output']} (old-task model)")
    lines += [f"task A (old-task model)   {pct(result['task_a_before'])} -> {pct(result['task_a'])}",
              f"task A (new model)        {pct(result['task_a_task_known'])} with the task known (old classes' "
              f"scores only), {pct(result['task_a_new_model'])} over every class",
              f"task B (new model)        {pct(result['task_b_before'])} -> {pct(result['task_b'])}",
              f"mean                      {pct(result['mean'])} (task A on the old-task model), "
              f"{pct(result['mean_task_known'])} (task known)"]
    return "\n".join(lines)
