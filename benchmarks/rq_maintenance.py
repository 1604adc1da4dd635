"""Re-adaptation (paper RQ3, Table 5) and incremental development (RQ4, Table 6) on digits with the MLP.

RQ4: an MLP (models/zoo.py, 10 outputs) is trained on task A = digits:train:0-4 with models/train.py's seeded
recipe; its slice is ``osl.select`` on digits:train:0-4 (taylor, semantic, Θ 0.95, as ``onnxslice slice``);
``osl.incremental`` (``onnxslice incremental``) then learns task B = digits:train:5-9 with the slice frozen, by
plain retraining (``train_all``), with 5 / 10 / 100 % replay of task A, and slice + 10 % replay. Task A is
measured on digits:test:0-4 with the model that serves task A (the old-task model when neurons are frozen, else
the new model), task B on digits:test:5-9 with the new model.

RQ3: the bundled MLP (all ten classes), its semantic slice on digits:train, ``osl.readapt`` (``onnxslice
readapt``) on digits:train measured on digits:test with FGSM and PGD, slice vs. ``train_all``.

    python benchmarks/rq_maintenance.py [--epochs N] [--lr LR]   # prints two Markdown tables
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))
from train import export, model_input, train  # noqa: E402

import onnxslice as osl  # noqa: E402
from onnxslice.data import load_data  # noqa: E402
from onnxslice.slicing.artifact import Slice  # noqa: E402

#: The slice both tables freeze or train: as ``onnxslice slice --metric taylor --strategy semantic --theta 0.95``.
SLICE_SETTINGS = {"metric": "taylor", "strategy": "semantic", "theta": 0.95}


def critical_neurons(model: osl.Model, data: str) -> Slice:
    return osl.select(model, None, data=data, **SLICE_SETTINGS)


def incremental_table(folder: Path, training: dict) -> str:
    x, y = load_data("digits:train:0-4").arrays()
    task_a = folder / "mlp_task_a.onnx"
    export(train("mlp", model_input("mlp", x), y), model_input("mlp", x[:2]), task_a)
    model = osl.load(task_a)
    piece = critical_neurons(model, "digits:train:0-4")
    evaluation = {"old_eval": "digits:test:0-4", "new_eval": "digits:test:5-9"}
    *_, before = osl.incremental(model, piece, "digits:train:5-9", train_all=True, epochs=0, **evaluation)
    rows = [("Original (task-A model)", before)]
    runs = {"Retrain": {"train_all": True}, "Replay 5%": {"train_all": True, "replay_fraction": 0.05},
            "Replay 10%": {"train_all": True, "replay_fraction": 0.1},
            "Replay 100%": {"train_all": True, "replay_fraction": 1.0}, "Slice (onnxslice)": {},
            "Slice + Replay 10%": {"replay_fraction": 0.1}}
    for method, extra in runs.items():
        replay = "digits:train:0-4" if "replay_fraction" in extra else None
        *_, result = osl.incremental(model, piece, "digits:train:5-9", replay=replay, **extra, **training,
                                     **evaluation)
        rows.append((method, result))
    lines = ["| method | task A | task B | mean | task A, new model | trained params | seconds |",
             "|---|---|---|---|---|---|---|"]
    for method, r in rows:
        lines.append(f"| {method} | {r['task_a']:.2%} | {r['task_b']:.2%} | {r['mean']:.2%} | "
                     f"{r['task_a_new_model']:.2%} | {r['tpr']:.2%} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def readapt_table(training: dict) -> str:
    model = osl.load(ROOT / "models" / "mlp_digits.onnx")
    piece = critical_neurons(model, "digits:train")
    lines = ["| attack | method | TPR | RA | RAA | clean before | clean after | adversarial before | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for attack in ("fgsm", "pgd"):
        for method, train_all in (("Fully training", True), ("Slice (onnxslice)", False)):
            _, r = osl.readapt(model, piece, "digits:train", "digits:test", attack=attack, train_all=train_all,
                               **training)
            lines.append(f"| {attack.upper()} | {method} | {r['tpr']:.2%} | {r['ra']:.2%} | {r['raa']:.2%} | "
                         f"{r['clean_before']:.2%} | {r['clean_after']:.2%} | {r['adversarial_before']:.2%} | "
                         f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="Training epochs of every run (the same for all).")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate of every run.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = {"epochs": args.epochs, "lr": args.lr}
    with tempfile.TemporaryDirectory() as tmp:
        print("## Incremental development (digits, MLP; task A = 0-4, task B = 5-9)\n")
        print(incremental_table(Path(tmp), training))
        print("\n## Re-adaptation (digits, MLP; trained on digits:train, measured on digits:test)\n")
        print(readapt_table(training))


if __name__ == "__main__":
    main()
