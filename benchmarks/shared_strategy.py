"""The shared strategy (beyond the paper) against the paper's semantic union, at equal size.

Each bundled model (models/mlp_digits.onnx, models/cnn_digits.onnx) is profiled once on digits:train, then
sliced by ``semantic`` and ``shared`` to parameter budgets (restructured fraction of the parameters, round-to 1,
on the model's channel groups), masked and evaluated on digits:val (where the choice is made) and digits:test
(reported), without fine-tuning. A budget one strategy cannot reach is left out of both means. Also, per Θ, the
fraction of parameters each keeps. One run, CPU; about a minute.

    python benchmarks/shared_strategy.py [--metric taylor] [--budgets 0.2 0.3 ...] [--thetas 0.9 0.95 0.99]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from onnxslice.data import load_data  # noqa: E402
from onnxslice.errors import InputError  # noqa: E402
from onnxslice.graph import load_model  # noqa: E402
from onnxslice.measure.evaluate import accuracy  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.slicing.budget import slice_to_budget  # noqa: E402
from onnxslice.slicing.groups import SelectionGroups  # noqa: E402
from onnxslice.slicing.strategies import make_strategy, select  # noqa: E402
from onnxslice.surgery.mask import mask_model  # noqa: E402

MODELS = ("mlp_digits", "cnn_digits")
STRATEGIES = ("semantic", "shared")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="taylor")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--thetas", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    args = parser.parse_args()
    splits = {name: load_data(f"digits:{name}") for name in ("val", "test")}
    print(f"metric {args.metric}, round-to 1, masked, no fine-tuning; accuracy on digits:val / digits:test\n")
    for name in MODELS:
        path = ROOT / "models" / f"{name}.onnx"
        model = load_model(path)
        groups = SelectionGroups.of_model(model)
        profile = profile_model(path, load_data("digits:train"), [args.metric], loaded=model)
        scores = {"val": {s: [] for s in STRATEGIES}, "test": {s: [] for s in STRATEGIES}}
        print(f"## {name}\n\n| params kept | " + " | ".join(f"{s} val | {s} test" for s in STRATEGIES) + " |")
        print("|---" * (1 + 2 * len(STRATEGIES)) + "|")
        for budget in args.budgets:
            row = {}
            try:
                for strategy in STRATEGIES:
                    piece = slice_to_budget(model, profile, args.metric, strategy, target_params=budget,
                                            round_to=1, groups=groups)
                    masked = mask_model(model, piece.kept())
                    row[strategy] = {split: accuracy(masked, data)["accuracy"] for split, data in splits.items()}
            except InputError as exc:
                print(f"| {budget:.2f} | unreachable: {exc} |")
                continue
            for strategy, accs in row.items():
                for split, value in accs.items():
                    scores[split][strategy].append(value)
            print(f"| {budget:.2f} | " + " | ".join(f"{row[s]['val']:.4f} | {row[s]['test']:.4f}"
                                                    for s in STRATEGIES) + " |")
        print("| mean | " + " | ".join(f"{np.mean(scores['val'][s]):.4f} | {np.mean(scores['test'][s]):.4f}"
                                       for s in STRATEGIES) + " |\n")
        print("| Θ | " + " | ".join(f"{s} params kept | {s} test" for s in STRATEGIES) + " |")
        print("|---" * (1 + 2 * len(STRATEGIES)) + "|")
        for theta in args.thetas:
            cells = []
            for strategy in STRATEGIES:
                piece = select(profile, args.metric, make_strategy(strategy, theta=theta), groups)
                test = accuracy(mask_model(model, piece.kept()), splits["test"])["accuracy"]
                cells.append(f"{piece.restructured['params_fraction']:.4f} | {test:.4f}")
            print(f"| {theta:.2f} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
