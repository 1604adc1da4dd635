"""RQ1 of the paper: which slicing strategy finds the critical neurons, at equal model size?

For each example model and contribution metric, slices at several operating points — semantic (Θ;
centred CKA and the paper's uncentred Eq. 2), category-wise and global (top R per layer) — masks the
non-critical neurons and measures the masked model's accuracy on digits:test, with the fraction of
parameters the masked model still uses (onnxslice.slicing.summary.parameter_fraction). The profile
is measured once per model on digits:train. Prints two Markdown tables: every operating point, and
for each semantic point the accuracy of category-wise and global slicing at the same parameter
fraction (linearly interpolated between their two nearest measured points; "n/a" outside their
measured range).

    python benchmarks/rq1_slicing.py [--metrics avg taylor] [--max-per-class 128]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from slice_speed import MODELS

from onnxslice.data import load_data
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.profiling import profile_model
from onnxslice.slicing.strategies import CategoryStrategy, GlobalStrategy, SemanticStrategy, Strategy, select
from onnxslice.slicing.summary import neuron_fraction, parameter_fraction
from onnxslice.surgery.mask import mask_model

THETAS = (0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9999)
RATIOS = (0.01, 0.02, 0.05, *(round(0.1 * k, 1) for k in range(1, 11)))


def operating_points() -> list[Strategy]:
    return ([SemanticStrategy(theta, centered=centered) for centered in (True, False) for theta in THETAS]
            + [CategoryStrategy(r) for r in RATIOS] + [GlobalStrategy(r) for r in RATIOS])


def label(strategy: Strategy) -> str:
    uncentred = isinstance(strategy, SemanticStrategy) and not strategy.centered
    return f"{strategy.name}-uncentred" if uncentred else strategy.name


def setting(strategy: Strategy) -> str:
    return f"Θ={strategy.theta}" if isinstance(strategy, SemanticStrategy) else f"R={strategy.ratio}"


def at_fraction(points: list[dict], fraction: float) -> float | None:
    """Accuracy interpolated linearly in the parameter fraction; None outside the measured range."""
    xs = np.array([p["params"] for p in points])
    ys = np.array([p["accuracy"] for p in points])
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if fraction < xs[0] or fraction > xs[-1]:
        return None
    return float(np.interp(fraction, xs, ys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="+", default=["avg", "taylor"])
    parser.add_argument("--max-per-class", type=int, default=128, help="samples per category for the CKA statistics")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = load_data("digits:train"), load_data("digits:test")
    rows = []
    for name, path in MODELS.items():
        model = load_model(path)
        baseline = accuracy(model, test, "cpu")["accuracy"]
        profile = profile_model(path, train, args.metrics, args.max_per_class, "cpu", progress=False)
        for metric in args.metrics:
            for strategy in operating_points():
                piece = select(profile, metric, strategy)
                rows.append({"model": name, "metric": metric, "strategy": label(strategy), "setting": setting(strategy),
                             "neurons": neuron_fraction(piece), "params": parameter_fraction(model, piece)["fraction"],
                             "accuracy": accuracy(mask_model(model, piece.kept()), test, "cpu")["accuracy"],
                             "baseline": baseline})

    print("### Every operating point (masked model, digits:test)\n")
    print("| model | metric | strategy | setting | neurons kept | params kept | accuracy (original) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['metric']} | {row['strategy']} | {row['setting']} | {row['neurons']:.1%} | "
              f"{row['params']:.1%} | {row['accuracy']:.4f} ({row['baseline']:.4f}) |")

    print("\n### Accuracy at the parameter fraction of each semantic slice\n")
    print("| model | metric | semantic CKA | Θ | params kept | semantic | category-wise | global |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if not row["strategy"].startswith("semantic"):
            continue
        same = [r for r in rows if r["model"] == row["model"] and r["metric"] == row["metric"]]
        others = [at_fraction([r for r in same if r["strategy"] == s], row["params"]) for s in ("category", "global")]
        shown = " | ".join("n/a" if acc is None else f"{acc:.4f}" for acc in others)
        form = "uncentred (Eq. 2)" if row["strategy"].endswith("uncentred") else "centred"
        print(f"| {row['model']} | {row['metric']} | {form} | {row['setting'][2:]} | {row['params']:.1%} | "
              f"{row['accuracy']:.4f} | {shown} |")


if __name__ == "__main__":
    main()
