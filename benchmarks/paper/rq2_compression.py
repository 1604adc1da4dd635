"""RQ2 (paper §5.3, Table 4): unstructured pruning with and without restructuring by a semantic slice first.

For each architecture, seed and method (LAMP, Global, Uniform+, ERK): ``osl.compress`` (``onnxslice compress``)
on the original model (the baseline), on the model restructured with a semantic slice (NeuSemSlice+method),
and on the model DeepArc leaves (threshold 0.99; its removable redundant layers bypassed, or replaced by a sewing
layer where shapes differ; with fine-tuning, fine-tuned like every pruned model) restructured with a semantic
slice of it (NeuSemSlice+DeepArc+method). The slice:
metric Taylor, profiled on digits:train; Θ is the one among 0.90..0.99 whose masked model removes the most
parameters while staying within half the accuracy budget on digits:val (``common.choose_slice``; the paper
takes "the optimal configuration identified in RQ1"). Sparsity rises geometrically by ``--step`` until
accuracy on digits:val would drop more than ``--max-drop`` below the original's; with ``--finetune-epochs N``
each pruned model is fine-tuned on digits:train (zeros kept, best epoch on digits:val). CR / NI / MA are
reported on digits:test, on which nothing is chosen, as mean ± std over the seeds. Writes ``rq2.md`` (or
``rq2_finetuned.md`` with fine-tuning) beside this script.

    python benchmarks/paper/rq2_compression.py [--architectures MLP VGG resnet18] [--seeds 0 1 2 3 4]
        [--step 0.1] [--max-drop 0.01] [--finetune-epochs 0]

Run time with the defaults (5 seeds x 3 architectures) on the 2-core development machine: 13.3 min; with
``--finetune-epochs 1`` 96 min, resnet18 most of it (measured 2026-12-04, beside other paper scripts and a test
run).
"""

from __future__ import annotations

import argparse
import time

from common import (
    ARCHITECTURES,
    CACHE,
    HERE,
    METRIC,
    SEEDS,
    TEST,
    TRAIN,
    VAL,
    choose_slice,
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

import onnxslice as osl
from onnxslice.compression.deeparc import deeparc
from onnxslice.compression.loop import nonzero_params, prunable_weights
from onnxslice.compression.methods import METHODS
from onnxslice.maintain.finetune import REPAIR_LR
from onnxslice.measure.stats import count_params

LABELS = {"lamp": "LAMP", "global": "Glob", "uniform": "Unif", "erk": "ERK"}
VARIANTS = ("", "NeuSemSlice+", "NeuSemSlice+DeepArc+")
DEEPARC_THRESHOLD = 0.99
DEEPARC_SAMPLES = 64  #: per class, as ``onnxslice sweep`` gives DeepArc
#: Table 4 of the paper, MLP-MNIST: method -> (CR, NI, MA)
PAPER = {
    "LAMP": (0.5217, 7, 0.9826), "NeuSemSlice+LAMP": (0.5305, 5, 0.9832),
    "Glob": (0.4095, 5, 0.9831), "NeuSemSlice+Glob": (0.4204, 3, 0.9837),
    "Unif": (0.4095, 5, 0.9834), "NeuSemSlice+Unif": (0.4204, 3, 0.9836),
    "ERK": (0.3439, 4, 0.9830), "NeuSemSlice+ERK": (0.4204, 3, 0.9833),
}


def measure(arch: str, seed: int, args: argparse.Namespace) -> dict:
    """CR, CR of the weights, NI and MA of every method and variant on one seeded model, and the slices used."""
    path = trained_model(arch, seed)
    model = osl.load(path)
    train, val, test = data(arch, TRAIN), data(arch, VAL), data(arch, TEST)
    params = count_params(model.proto)
    weights = sum(w.values.size for w in prunable_weights(model.proto))
    arc = deeparc(model.proto, train.cap_per_class(DEEPARC_SAMPLES), DEEPARC_THRESHOLD, "cpu")
    bases = {"": (model, path)}
    arc_model, arc_accuracy = osl.Model(arc.model), None
    if arc.removed and args.finetune_epochs:  # DeepArc's model is a pruned model too: fine-tuned like every step
        arc_accuracy = osl.evaluate(arc_model, test, "cpu")["accuracy"]
        arc_model = osl.finetune(arc_model, train, val, epochs=args.finetune_epochs, lr=REPAIR_LR).model
    if arc.removed:
        arc_path = CACHE / f"{path.stem}_deeparc{DEEPARC_THRESHOLD}_ft{args.finetune_epochs}.onnx"
        arc_model.save(arc_path)
        bases["NeuSemSlice+DeepArc+"] = (osl.load(arc_path), arc_path)
    slices = {}
    for variant, (base, base_path) in bases.items():
        theta, removed, masked, piece = choose_slice(base_path, train, val, args.max_drop / 2)
        slices[variant] = {"theta": theta, "removed": 1.0 - (1.0 - removed) * count_params(base.proto) / params,
                           "piece": piece, "model": base}
    slices.setdefault("NeuSemSlice+", slices[""])
    slices.setdefault("NeuSemSlice+DeepArc+", slices[""])
    results = {"original": osl.evaluate(model, test, "cpu")["accuracy"], "slices": slices,
               "deeparc_removed": 1.0 - count_params(arc.model) / params, "deeparc_layers": len(arc.removed),
               "deeparc_accuracy": osl.evaluate(arc_model, test, "cpu")["accuracy"],
               "deeparc_accuracy_before": arc_accuracy}
    for method in METHODS:
        for variant in VARIANTS:
            if variant == "NeuSemSlice+DeepArc+" and not arc.removed:
                results[variant + LABELS[method]] = results["NeuSemSlice+" + LABELS[method]]
                continue
            chosen = slices[variant]
            result = osl.compress(chosen["model"], train, method, chosen["piece"] if variant else None, val_data=val,
                                  eval_data=test, finetune_epochs=args.finetune_epochs, step=args.step,
                                  max_drop=args.max_drop, device="cpu")
            nonzero = sum(int((w.values != 0).sum()) for w in prunable_weights(result.model))
            results[variant + LABELS[method]] = {"cr": 1.0 - nonzero_params(result.model) / params,
                                                 "cr_weights": 1.0 - nonzero / weights, "ni": float(result.ni),
                                                 "ma": result.ma}
            print(arch, seed, variant + LABELS[method], results[variant + LABELS[method]], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    args = parser.parse_args()
    quiet_torch()
    started = time.perf_counter()
    runs = {name: [measure(ARCHITECTURES[name], seed, args) for seed in args.seeds] for name in args.architectures}
    labels = [variant + LABELS[m] for m in METHODS for variant in VARIANTS]
    header = ["method", *(f"{name} {c}" for name in runs for c in ("CR", "NI", "MA")),
              *(f"paper MLP-MNIST {c}" for c in ("CR", "NI", "MA"))]
    rows = [[label, *(mean_std([r[label][k] for r in runs[name]], "number" if k == "ni" else "percent")
                      for name in runs for k in ("cr", "ni", "ma")),
             *((f"{PAPER[label][0]:.2%}", PAPER[label][1], f"{PAPER[label][2]:.2%}") if label in PAPER else ("—",) * 3)]
            for label in labels]
    weights = [[label, *(mean_std([r[label]["cr_weights"] for r in runs[name]]) for name in runs)] for label in labels]
    notes = []
    for name, seeded in runs.items():
        notes.append(
            f"{name}: original accuracy {mean_std([r['original'] for r in seeded])} on digits:{TEST}; slice Θ "
            f"{mean_std([r['slices']['NeuSemSlice+']['theta'] for r in seeded], 'number')} ({METRIC}), removing "
            f"{mean_std([r['slices']['NeuSemSlice+']['removed'] for r in seeded])} of the parameters when masked; "
            f"DeepArc (threshold {DEEPARC_THRESHOLD}) removes "
            f"{mean_std([float(r['deeparc_layers']) for r in seeded], 'number')} layers, "
            f"{mean_std([r['deeparc_removed'] for r in seeded])} of the parameters, accuracy "
            + (f"{mean_std([r['deeparc_accuracy_before'] for r in seeded])}, "
               f"{mean_std([r['deeparc_accuracy'] for r in seeded])} after {args.finetune_epochs} fine-tuning "
               f"epoch(s)" if args.finetune_epochs and any(r["deeparc_layers"] for r in seeded) else
               f"{mean_std([r['deeparc_accuracy'] for r in seeded])} (not fine-tuned)")
            + ("" if any(r["deeparc_layers"] for r in seeded) else
               " (none on any seed: the NeuSemSlice+DeepArc rows are the NeuSemSlice runs)") + ".")
    text = [f"# RQ2: model restructuring with compression (paper Table 4)\n\n{provenance()}\n",
            f"{len(args.seeds)} models per architecture (seeds {', '.join(map(str, args.seeds))}; "
            "`common.trained_model`: digits:train, best epoch on digits:val; resnet18 on the digits upscaled to "
            f"32 × 32). CR / NI / MA reported on digits:{TEST} as mean ± std over the seeds; the slice profiled on "
            f"digits:{TRAIN}, its Θ and the stopping point chosen on digits:{VAL}. Sparsity of the prunable weights "
            f"rises as 1 − (1 − {args.step})^k; the loop stops before accuracy on digits:{VAL} drops more than "
            f"{args.max_drop:.0%} (absolute) below the original's (MA on digits:{TEST} may therefore drop by "
            "more). "
            + (f"After each pruning step, {args.finetune_epochs} fine-tuning epoch(s) on digits:{TRAIN} (lr 1e-4, "
               f"zeros kept at zero, best epoch on digits:{VAL}). " if args.finetune_epochs else "No fine-tuning. ")
            + "CR = 1 − non-zero parameters / parameters of the original (biases included); NI = pruning "
            "iterations kept (the evaluation that failed is not counted); MA = final accuracy. "
            "NeuSemSlice+DeepArc+X: DeepArc's model, then its semantic slice, then X.\n",
            *(f"- {note}" for note in notes), "", table(header, rows), "",
            "CR over the Conv/Gemm/MatMul weights only (the paper's CRs equal 1 − 0.9^NI or 1 − 0.95^NI, i.e. "
            "weights only):\n", table(["method", *runs], weights), "",
            "## Verdicts\n\nDifferences to the baseline, per seed averaged over the four methods, then mean ± std "
            "over the seeds (the paper: averages over its six settings):\n",
            verdicts([row for name, seeded in runs.items() for row in claims(name, seeded)]),
            f"\nRun time: {(time.perf_counter() - started) / 60:.1f} min on 2 shared CPU cores."]
    write(HERE / ("rq2_finetuned.md" if args.finetune_epochs else "rq2.md"), "\n".join(text))


def claims(name: str, seeded: list[dict]) -> list[list[object]]:
    """The verdict rows of one architecture: CR up, NI down, MA not lower, for both slicing variants."""
    def change(variant: str, key: str) -> list[float]:
        return [mean([r[variant + LABELS[m]][key] - r[LABELS[m]][key] for m in METHODS]) for r in seeded]

    rows = []
    for variant, paper in (("NeuSemSlice+", ("37.26% → 40.26% (+3.00 pt)", "8.67 → 7.50 (−13.46%)", "slightly up")),
                           ("NeuSemSlice+DeepArc+", ("—", "—", "—"))):
        cr, ni, ma = change(variant, "cr"), change(variant, "ni"), change(variant, "ma")
        rows += [[f"{variant}X raises CR", name, paper[0], mean_std(cr, "points"), mean(cr) > 0],
                 [f"{variant}X needs fewer iterations", name, paper[1], mean_std(ni, "number"), mean(ni) < 0],
                 [f"{variant}X keeps or raises MA", name, paper[2], mean_std(ma, "points"), mean(ma) >= 0]]
    return rows


if __name__ == "__main__":
    main()
