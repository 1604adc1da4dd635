"""RQ1 (paper §5.2, Figure 5): semantic vs global vs category-wise slicing, and DeepArc, over seeded models.

For each architecture (MLP, VGG-style CNN, resnet18 on digits 32 x 32) and seed, the model of ``common.trained_model``
is profiled once on digits:train with every metric; semantic slicing runs at Θ = 0.90..0.99, global and
category-wise slicing at ratios 0.1..1.0, and any strategy the library adds (such as ``shared``, beyond the
paper) at the Θs or the ratios by the parameter it takes, with columns and verdict rows of its own. Each slice
is masked and evaluated on digits:test (compression = fraction of parameters the mask removes). DeepArc removes
the redundant layers of the modules found at CKA thresholds 0.99 (the paper's), 0.95 and 0.90. Tables give
mean ± std over the seeds; every point is in ``rq1_<architecture>.csv`` (with its seed), ``sweep.png`` plots
seed 0 (the metrics of ``--plot-metrics``).

    python benchmarks/paper/rq1_sweep.py [--architectures MLP VGG resnet18] [--seeds 0 1 2 3 4]

Run time with the defaults (5 seeds x 3 architectures) on the 2-core development machine: 19.5 min, training
the 5 VGG-style models included, the others cached (measured 2026-12-04, beside another paper script and a test
run).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import (
    ARCHITECTURES,
    HERE,
    SEEDS,
    TEST,
    TRAIN,
    data,
    mean,
    mean_std,
    provenance,
    quiet_torch,
    table,
    trained_model,
    verdicts,
    write,
)
from matplotlib.figure import Figure

import onnxslice as osl
from onnxslice.compression.sweep import all_strategies, parse_values, plot_sweep, points_csv
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.strategies import STRATEGIES
from onnxslice.slicing.summary import parameter_fraction

THETAS = parse_values("0.90:0.99:0.01", "--thetas")
RATIOS = parse_values("0.1:1.0:0.1", "--ratios")
DEEPARC_THRESHOLDS = (0.99, 0.95, 0.90)
ALLOWED_DROP = 0.01
#: every slicing strategy of the library: the paper's semantic, global and category-wise, and any added since
SLICINGS = tuple(STRATEGIES)
BASELINES = ("global", "category")  #: the paper's
#: the paper's "~4% accuracy drop at 70% compression" (MLP-MNIST), read as at most this drop
DROP_AT_70 = 0.05


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


def dead_share(model: osl.Model, profile: osl.Profile) -> float:
    """Fraction of the parameters a mask of the neurons never active on the profiled data removes (their
    ``avg`` contribution is 0 over every sample)."""
    layers = {name: LayerSlice(size, [int(i) for i in np.flatnonzero(profile.contribution("avg", name) != 0)])
              for name, size in profile.layer_sizes.items()}
    return 1.0 - parameter_fraction(model.proto, Slice(profile.model_sha256, layers))["fraction"]


def neurons_per_category(model: osl.Model, profile: osl.Profile, centered: bool) -> float:
    """Median number of neurons a category needs in a layer (semantic, taylor, Θ = 0.99, before merging)."""
    piece = osl.select(model, profile, "taylor", "semantic", theta=0.99, centered=centered, round_to=1)
    return float(np.median([len(kept) for layer in piece.layers.values() for kept in layer.per_category.values()]))


def measure(arch: str, seed: int, metrics: list[str], max_per_class: int) -> dict:
    """Every sweep point, DeepArc at each threshold and the per-model figures of one seeded model."""
    model = osl.load(trained_model(arch, seed))
    train, test = data(arch, TRAIN), data(arch, TEST)
    profile = osl.profile(model, train, metrics, max_per_class=max_per_class, device="cpu")
    swept = osl.sweep(model, profile, train, all_strategies(), THETAS, RATIOS, metrics=metrics, eval_data=test,
                      max_per_class=max_per_class, device="cpu", deeparc_threshold=DEEPARC_THRESHOLDS[0])
    deeparc = {DEEPARC_THRESHOLDS[0]: next(p for p in swept.points if p["strategy"] == "deeparc")}
    for threshold in DEEPARC_THRESHOLDS[1:]:
        [deeparc[threshold]] = osl.sweep(model, None, train, ["deeparc"], eval_data=test, max_per_class=max_per_class,
                                         device="cpu", deeparc_threshold=threshold).points
    return {"points": swept.points, "original": swept.accuracy_original, "deeparc": deeparc,
            "dead": dead_share(model, profile) if "avg" in metrics else None,
            "per_category": {c: neurons_per_category(model, profile, c) for c in (True, False)}
            if "taylor" in metrics else None,
            "sizes": list(profile.layer_sizes.values())}


def per_metric(run: dict, metric: str) -> dict:
    """One seed's figures for one metric: the semantic range, the most removed within the allowed drop by each
    slicing, accuracies at semantic Θ = 0.90's compression, and semantic's mean lead over each other slicing."""
    line = {s: [p for p in run["points"] if p["strategy"] == s and p["metric"] == metric] for s in SLICINGS}
    widest = max(line["semantic"], key=lambda p: p["compression"])
    floor = run["original"] - ALLOWED_DROP
    leads = {}
    for other in SLICINGS[1:]:
        gaps = [p["accuracy"] - a for p in line["semantic"]
                if (a := interpolate(line[other], p["compression"])) is not None]
        leads[other] = float(np.mean(gaps)) if gaps else None
    at_70 = interpolate(line["semantic"], 0.70)
    return {"low": min(p["compression"] for p in line["semantic"]), "high": widest["compression"],
            **{f"most_{s}": largest_within(line[s], floor) for s in SLICINGS},
            **{f"acc_{s}": interpolate(line[s], widest["compression"]) for s in SLICINGS},
            **{f"lead_{s}": lead for s, lead in leads.items()},
            "drop_70": None if at_70 is None else run["original"] - at_70}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--metrics", nargs="+", default=["avg", "var", "ens", "taylor", "deeplift"])
    parser.add_argument("--plot-metrics", nargs="+", default=["taylor", "deeplift", "avg"])
    parser.add_argument("--max-per-class", type=int, default=128)
    args = parser.parse_args()
    quiet_torch()
    started = time.perf_counter()
    figure = Figure(figsize=(6.5 * len(args.architectures), 5.5))
    panels = np.atleast_1d(figure.subplots(1, len(args.architectures)))
    sections = [f"# RQ1: slicing methods compared (paper Figure 5)\n\n{provenance()}\n",
                f"Each architecture trained {len(args.seeds)} times (seeds {', '.join(map(str, args.seeds))}; "
                f"`common.trained_model`: digits:train, best epoch on digits:val). Profiled on digits:{TRAIN} (up "
                f"to {args.max_per_class} samples per class for CKA), evaluated on digits:{TEST} (resnet18: the "
                "digits upscaled to 32 × 32). Compression = fraction of the model's parameters the mask removes. "
                "Semantic Θ = 0.90..0.99, global / category-wise ratio 0.1..1.0; group-aware selection rounded "
                "to 8 channels, conv neurons represented by their spatial means for CKA. Cells: mean ± std over "
                "the seeds. Every point: `rq1_<architecture>.csv`; plot of seed 0: `sweep.png`.\n"]
    verdict_rows = []
    for name, axes in zip(args.architectures, panels, strict=True):
        arch = ARCHITECTURES[name]
        runs = [measure(arch, seed, args.metrics, args.max_per_class) for seed in args.seeds]
        csv = ["seed," + points_csv([]).strip()]
        for seed, run in zip(args.seeds, runs, strict=True):
            csv += [f"{seed},{row}" for row in points_csv(run["points"]).splitlines()[1:]]
        (HERE / f"rq1_{arch}.csv").write_text("\n".join(csv) + "\n")
        plot_sweep([p for p in runs[0]["points"] if p["metric"] in (*args.plot_metrics, None)], axes,
                   f"{name} (seed {args.seeds[0]})", runs[0]["original"])
        figures = {m: [per_metric(run, m) for run in runs] for m in args.metrics}

        def cells(metric: str, key: str, figures: dict = figures) -> str:
            return mean_std([f[key] for f in figures[metric]], "points" if key.startswith("lead") else "percent")

        sections.append(f"## {name} (original accuracy {mean_std([r['original'] for r in runs])})\n")
        if runs[0]["dead"] is not None:
            sections.append(f"Neurons never active on digits:{TRAIN} (avg contribution 0): a mask of them alone "
                            f"removes {mean_std([r['dead'] for r in runs])} of the parameters.\n")
        sections.append(table(
            ["metric", "semantic range removed (Θ 0.99 → 0.90)",
             *(f"{s}: most removed, ≤{ALLOWED_DROP:.0%} drop" for s in SLICINGS), "semantic acc. at Θ=0.90",
             *(f"{s} acc. there" for s in SLICINGS[1:]), *(f"semantic − {s}, mean over Θ" for s in SLICINGS[1:])],
            [[m, f"{cells(m, 'low')} → {cells(m, 'high')}", *(cells(m, f"most_{s}") for s in SLICINGS),
              *(cells(m, f"acc_{s}") for s in SLICINGS), *(cells(m, f"lead_{s}") for s in SLICINGS[1:])]
             for m in args.metrics]) + "\n")
        sections.append("`—` or fewer seeds: the other line does not reach that compression (or no point stays "
                        "within the drop). The two right columns compare accuracies at each semantic Θ's "
                        "compression, the other line interpolated there.\n")
        if runs[0]["per_category"] is not None:
            centred, uncentred = ([r["per_category"][c] for r in runs] for c in (True, False))
            sizes = runs[0]["sizes"]
            sections.append(f"Median neurons a category needs in a layer at Θ = 0.99 (taylor, before merging; "
                            f"{len(sizes)} layers of {min(sizes)}–{max(sizes)} neurons): centred CKA "
                            f"{mean_std(centred, 'number')}, uncentred CKA (Eq. 2 read literally) "
                            f"{mean_std(uncentred, 'number')}.\n")
        deeparc_rows = []
        for threshold in DEEPARC_THRESHOLDS:
            points = [r["deeparc"][threshold] for r in runs]
            deeparc_rows.append([f"{threshold:.2f}", mean_std([p["compression"] for p in points]),
                                 mean_std([p["accuracy"] for p in points]),
                                 mean_std([float(len(p["removed"])) for p in points], "number"),
                                 "; ".join(sorted({f"{k}: {v}" for p in points
                                                   for k, v in p["kept_redundant"].items()})) or "—"])
        similarities = np.array([r["deeparc"][0.99]["similarities"] for r in runs])
        sections.append("DeepArc (CKA between consecutive layers in graph order, mean over seeds: "
                        + " ".join(f"{s:.3f}" for s in similarities.mean(axis=0)) + "):\n\n" + table(
                            ["threshold", "parameters removed", "accuracy", "layers removed",
                             "redundant but kept (any seed)"], deeparc_rows) + "\n")
        verdict_rows += claims(name, args.metrics, figures, runs)
    figure.tight_layout()
    figure.savefig(HERE / "sweep.png", dpi=110)
    sections.append("## Verdicts\n\nThe claims of §5.2 with the paper's figures (MLP-MNIST for the MLP, ResNet101 for "
                    "resnet18, AlexNet/VGG16 for the VGG-style CNN where the claim is general) and ours:\n\n"
                    + verdicts(verdict_rows))
    sections.append(f"\nRun time: {(time.perf_counter() - started) / 60:.1f} min on 2 shared CPU cores.")
    write(HERE / "rq1.md", "\n".join(sections))


def claims(name: str, metrics: list[str], figures: dict[str, list[dict]], runs: list[dict]) -> list[list[object]]:
    """The verdict rows of one architecture."""
    def leads(metric: str) -> list[float | None]:
        return [mean([f[f"lead_{other}"] for f in figures[metric]]) for other in BASELINES]

    ahead = [m for m in metrics if all(v is not None and v >= 0 for v in leads(m))]
    most = {s: {m: mean([f[f"most_{s}"] or 0.0 for f in figures[m]]) for m in metrics} for s in SLICINGS}
    first = [m for m in metrics if most["semantic"][m] >= max(most["global"][m], most["category"][m])]
    by_category = [m for m in metrics if most["category"][m] > max(most["semantic"][m], most["global"][m])]
    rows = [
        ["semantic keeps more accuracy than global and category-wise at equal compression, every metric", name,
         "MNIST/FMNIST: 'slightly outperforms'; AlexNet Taylor at 50%: 89.20% vs 23.24% / 11.55%",
         "; ".join(f"{m} {mean_std([f['lead_global'] for f in figures[m]], 'points')} / "
                   f"{mean_std([f['lead_category'] for f in figures[m]], 'points')}" for m in metrics)
         + f" (semantic − global / − category); ahead of both: {len(ahead)} of {len(metrics)}",
         len(ahead) == len(metrics)],
        ["semantic removes the most parameters within 1 point of the original accuracy", name,
         "(Answer to RQ1: semantic 'better identifies critical neurons')",
         f"semantic first (or tied) for {len(first)} of {len(metrics)} metrics ({', '.join(first) or 'none'}); "
         f"category first for {len(by_category)} ({', '.join(by_category) or 'none'})", len(first) > len(metrics) / 2],
    ]
    for other in (s for s in SLICINGS if s not in ("semantic", *BASELINES)):
        behind = [m for m in metrics if (mean([f[f"lead_{other}"] for f in figures[m]]) or 0.0) < 0]
        more = [m for m in metrics if most[other][m] > most["semantic"][m]]
        rows += [[f"beyond the paper: {other} keeps more accuracy than semantic at equal compression", name, "—",
                  "; ".join(f"{m} {mean_std([f[f'lead_{other}'] for f in figures[m]], 'points')}" for m in metrics)
                  + f" (semantic − {other}); {other} ahead for {len(behind)} of {len(metrics)}",
                  len(behind) > len(metrics) / 2],
                 [f"beyond the paper: {other} removes more than semantic within 1 point", name, "—",
                  f"{other} ahead for {len(more)} of {len(metrics)} metrics ({', '.join(more) or 'none'})",
                  len(more) > len(metrics) / 2]]
    drops = {m: mean([f["drop_70"] for f in figures[m]]) for m in metrics}
    reached = {m: d for m, d in drops.items() if d is not None}
    if name == "MLP":
        best = min(reached, key=reached.get) if reached else None
        drop = mean_std([f["drop_70"] for f in figures[best]], "points") if best else None
        rows.append(["semantic slicing at 70% compression loses about 4 points (metrics close)", name,
                     "MLP-MNIST: ~4%",
                     f"best metric {best}: {drop} drop" if best else "no metric's semantic line reaches 70% removed",
                     None if best is None else reached[best] <= DROP_AT_70])
    removed = [r["deeparc"][0.99]["compression"] for r in runs]
    accuracy = mean_std([r["deeparc"][0.99]["accuracy"] for r in runs])
    if name == "resnet18":
        semantic = [interpolate([p for p in r["points"] if p["strategy"] == "semantic" and p["metric"] == "taylor"],
                                r["deeparc"][0.99]["compression"]) for r in runs]
        gaps = [None if s is None else s - r["deeparc"][0.99]["accuracy"] for s, r in zip(semantic, runs, strict=True)]
        rows.append(["DeepArc (threshold 0.99) removes layers, less precisely than semantic slicing", name,
                     "ResNet101: 10.68% removed, accuracy 84.77%; 'not as high [precision] as NeuSemSlice'",
                     f"{mean_std(removed)} removed, accuracy {accuracy}; semantic (taylor) at that compression "
                     f"{mean_std(gaps, 'points')} more accurate",
                     None if mean(gaps) is None else (mean(removed) or 0.0) > 0 and mean(gaps) > 0])
    else:
        rows.append(["DeepArc (threshold 0.99) removes nothing", name,
                     {"MLP": "MLP: nothing removable without a sewing layer (size unchanged)",
                      "VGG": "AlexNet / VGG19: no consecutive layers above 0.99 (VGG16: 32.06% removed, "
                             "accuracy 14.84%)"}[name],
                     f"{mean_std(removed)} removed, accuracy {accuracy}", mean(removed) == 0.0])
    return rows


if __name__ == "__main__":
    main()
