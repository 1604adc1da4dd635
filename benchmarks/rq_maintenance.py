"""Re-adaptation (paper RQ3, Table 5) and incremental development (RQ4, Table 6) on digits with the MLP.

RQ4: an MLP (models/zoo.py, 10 outputs) is trained on task A = digits:train:0-4 with models/train.py's seeded
recipe; its slice comes from ``onnxslice slice --data digits:train:0-4 --metric taylor --strategy semantic
--theta 0.95``; ``onnxslice incremental`` then learns task B = digits:train:5-9 with the slice frozen, by plain
retraining (``--train all``), with 5 / 10 / 100 % replay of task A, and slice + 10 % replay. Task A is measured
on digits:test:0-4 with the model that serves task A (the old-task model when neurons are frozen, else the
new model), task B on digits:test:5-9 with the new model.

RQ3: the bundled MLP (all ten classes), its semantic slice on digits:train, ``onnxslice readapt --data
digits:train --eval-data digits:test`` with FGSM and PGD, slice vs. ``--train all``.

    python benchmarks/rq_maintenance.py [--epochs N] [--lr LR]   # prints two Markdown tables
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))
from train import export, model_input, train  # noqa: E402

from onnxslice.data import load_data  # noqa: E402

SLICE_ARGS = ["--metric", "taylor", "--strategy", "semantic", "--theta", "0.95"]


def onnxslice(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "onnxslice_cli", *args, "--json"], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"onnxslice {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def incremental_table(folder: Path, training: list[str]) -> str:
    x, y = load_data("digits:train:0-4").arrays()
    task_a = folder / "mlp_task_a.onnx"
    export(train("mlp", model_input("mlp", x), y), model_input("mlp", x[:2]), task_a)
    piece = folder / "slice_a.json"
    onnxslice("slice", str(task_a), "--data", "digits:train:0-4", *SLICE_ARGS, "-o", str(piece))
    before = onnxslice("incremental", str(task_a), "--slice", str(piece), "--data", "digits:train:5-9",
                       "--epochs", "0", "--train", "all", "--old-eval-data", "digits:test:0-4",
                       "--eval-data", "digits:test:5-9", "-o", str(folder / "same.onnx"))
    rows = [("Original (task-A model)", before)]
    runs = {"Retrain": ["--train", "all"], "Replay 5%": ["--train", "all", "--replay-fraction", "0.05"],
            "Replay 10%": ["--train", "all", "--replay-fraction", "0.1"],
            "Replay 100%": ["--train", "all", "--replay-fraction", "1"], "Slice (onnxslice)": [],
            "Slice + Replay 10%": ["--replay-fraction", "0.1"]}
    for method, extra in runs.items():
        replay = ["--replay", "digits:train:0-4"] if "--replay-fraction" in extra else []
        result = onnxslice("incremental", str(task_a), "--slice", str(piece), "--data", "digits:train:5-9",
                           *replay, *extra, *training, "--old-eval-data", "digits:test:0-4",
                           "--eval-data", "digits:test:5-9", "-o", str(folder / "new.onnx"),
                           "--old-task-out", str(folder / "old.onnx"))
        rows.append((method, result))
    lines = ["| method | task A | task B | mean | task A, new model | trained params | seconds |",
             "|---|---|---|---|---|---|---|"]
    for method, r in rows:
        lines.append(f"| {method} | {r['task_a']:.2%} | {r['task_b']:.2%} | {r['mean']:.2%} | "
                     f"{r['task_a_new_model']:.2%} | {r['tpr']:.2%} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def readapt_table(folder: Path, training: list[str]) -> str:
    model = ROOT / "models" / "mlp_digits.onnx"
    piece = folder / "slice_all.json"
    onnxslice("slice", str(model), "--data", "digits:train", *SLICE_ARGS, "-o", str(piece))
    lines = ["| attack | method | TPR | RA | RAA | clean before | clean after | adversarial before | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for attack in ("fgsm", "pgd"):
        for method, extra in (("Fully training", ["--train", "all"]), ("Slice (onnxslice)", [])):
            r = onnxslice("readapt", str(model), "--slice", str(piece), "--data", "digits:train", "--eval-data",
                          "digits:test", "--attack", attack, *training, *extra,
                          "-o", str(folder / "readapted.onnx"))
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
    with tempfile.TemporaryDirectory() as tmp:
        print("## Incremental development (digits, MLP; task A = 0-4, task B = 5-9)\n")
        print(incremental_table(Path(tmp), ["--epochs", str(args.epochs), "--lr", str(args.lr)]))
        print("\n## Re-adaptation (digits, MLP; trained on digits:train, measured on digits:test)\n")
        print(readapt_table(Path(tmp), ["--epochs", str(args.epochs), "--lr", str(args.lr)]))


if __name__ == "__main__":
    main()
