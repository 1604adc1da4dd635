"""RQ1 (paper §5.2, Figure 5): semantic vs global vs category-wise slicing, and DeepArc, on the bundled models.

Each model is profiled once on digits:train with every metric; semantic slicing runs at Θ = 0.90..0.99,
global and category-wise slicing at ratios 0.1..1.0; each slice is masked and evaluated on digits:test
(compression = fraction of parameters the mask removes). DeepArc removes the redundant layers of the
modules found at CKA thresholds 0.99 (the paper's), 0.95 and 0.90. Writes ``rq1.md``, ``sweep.png``
(the metrics of ``--plot-metrics``) and every point as ``rq1_<model>.csv`` beside this script.

    python benchmarks/paper/rq1_sweep.py [--metrics avg var ens taylor deeplift] [--max-per-class 128]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import HERE, MODELS, TEST, TRAIN, provenance, quiet_torch, table, write
from matplotlib.figure import Figure

import onnxslice as osl
from onnxslice.compression.sweep import all_strategies, parse_values, plot_sweep
from onnxslice.data import load_data

THETAS = parse_values("0.90:0.99:0.01", "--thetas")
RATIOS = parse_values("0.1:1.0:0.1", "--ratios")
DEEPARC_THRESHOLDS = (0.99, 0.95, 0.90)
ALLOWED_DROP = 0.01

PAPER_CLAIMS = [
    ["MLP-MNIST", "semantic slicing: ~4% accuracy drop at 70% compression; semantic 'slightly outperforms' "
                  "global and category-wise at equal compression"],
    ["AlexNet-CIFAR10, Taylor, 50% compression", "semantic 89.20% (0.38% loss) vs global 23.24%, category 11.55%"],
    ["VGG16-CIFAR10, DeepLIFT, ~10% compression",
     "semantic reduces the accuracy loss by 41.18% / 77.77% vs global / category-wise"],
    ["DeepArc, MLP", "no layer removable without a sewing layer: model size unchanged"],
    ["DeepArc, AlexNet (threshold 0.95) / VGG16 / ResNet101",
     "87.97% of parameters removed, 10.94% accuracy / 32.06% removed, 14.84% / 10.68% removed, 84.77%"],
]


def interpolate(points: list[dict], compression: float) -> float | None:
    """Accuracy of a strategy's line at ``compression`` (linear between measured points; None outside)."""
    line = sorted(points, key=lambda p: p["compression"])
    xs = [p["compression"] for p in line]
    if not line or compression < xs[0] - 1e-9 or compression > xs[-1] + 1e-9:
        return None
    return float(np.interp(compression, xs, [p["accuracy"] for p in line]))


def largest_within(points: list[dict], floor: float) -> float | None:
    """The largest compression whose accuracy stays at or above ``floor``."""
    passing = [p["compression"] for p in points if p["accuracy"] >= floor]
    return max(passing) if passing else None


def summary_rows(points: list[dict], metrics: list[str], original: float) -> list[list[object]]:
    rows = []
    for metric in metrics:
        line = {s: [p for p in points if p["strategy"] == s and p["metric"] == metric]
                for s in ("semantic", "global", "category")}
        widest = max(line["semantic"], key=lambda p: p["compression"])
        at = widest["compression"]
        rows.append([metric, f"{100 * min(p['compression'] for p in line['semantic']):.1f}–{100 * at:.1f}%",
                     *(largest_within(line[s], original - ALLOWED_DROP) for s in line),
                     f"{100 * at:.1f}%", widest["accuracy"], interpolate(line["global"], at),
                     interpolate(line["category"], at)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="+", default=["avg", "var", "ens", "taylor", "deeplift"])
    parser.add_argument("--plot-metrics", nargs="+", default=["taylor", "deeplift", "avg"])
    parser.add_argument("--max-per-class", type=int, default=128)
    args = parser.parse_args()
    quiet_torch()
    train, test = load_data(TRAIN), load_data(TEST)
    figure = Figure(figsize=(13, 5.5))
    panels = figure.subplots(1, len(MODELS))
    sections = [f"# RQ1: slicing methods compared (paper Figure 5)\n\n{provenance()}\n",
                f"Profiled on {TRAIN} (up to {args.max_per_class} samples per class for CKA), evaluated on {TEST}. "
                f"Compression = fraction of the model's parameters the mask removes. Semantic Θ = 0.90..0.99, "
                f"global / category-wise ratio 0.1..1.0. Every point: `rq1_<model>.csv`. Plot: `sweep.png`.\n"]
    for (name, path), axes in zip(MODELS.items(), np.atleast_1d(panels), strict=True):
        model = osl.load(path)
        swept = osl.sweep(model, None, train, all_strategies(), THETAS, RATIOS, metrics=args.metrics, eval_data=test,
                          max_per_class=args.max_per_class, device="cpu", deeparc_threshold=DEEPARC_THRESHOLDS[0])
        points, original = swept.points, swept.accuracy_original
        (HERE / f"rq1_{name.split('-')[0].lower()}.csv").write_text(swept.csv())
        plot_sweep([p for p in points if p["metric"] in (*args.plot_metrics, None)], axes, name, original)
        sections.append(f"## {name} (original accuracy {100 * original:.2f}%)\n")
        sections.append(table(
            ["metric", "semantic range removed", f"semantic: most removed, ≤{ALLOWED_DROP:.0%} drop",
             f"global: most removed, ≤{ALLOWED_DROP:.0%} drop", f"category: most removed, ≤{ALLOWED_DROP:.0%} drop",
             "at semantic Θ=0.90's compression", "semantic acc.", "global acc.", "category acc."],
            summary_rows(points, args.metrics, original)) + "\n")
        rows = []
        for threshold in DEEPARC_THRESHOLDS:
            [point] = osl.sweep(model, None, train, ["deeparc"], eval_data=test, max_per_class=args.max_per_class,
                                device="cpu", deeparc_threshold=threshold).points
            rows.append([f"{threshold:.2f}", " ".join(f"{s:.3f}" for s in point["similarities"]),
                         ", ".join(point["removed"]) or "none", point["compression"], point["accuracy"],
                         "; ".join(f"{k}: {v}" for k, v in point["kept_redundant"].items()) or "—"])
        sections.append("DeepArc (CKA between consecutive layers, in graph order):\n\n" + table(
            ["threshold", "CKA of consecutive layers", "layers removed", "parameters removed", "accuracy",
             "redundant but kept"], rows) + "\n")
    figure.tight_layout()
    figure.savefig(HERE / "sweep.png", dpi=110)
    print(f"wrote {(HERE / 'sweep.png')}")
    sections.append("## The paper\n\nFigure 5 is given as plots; the numbers its text (§5.2) states:\n\n"
                    + table(["setting", "claim"], PAPER_CLAIMS))
    write(HERE / "rq1.md", "\n".join(sections))


if __name__ == "__main__":
    main()
