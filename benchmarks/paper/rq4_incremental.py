"""RQ4 (paper §5.5, Table 6): incremental development — learn task B without forgetting task A.

Task A = digits 0-4, task B = digits 5-9. For each architecture and seed, the task-A model of
``common.trained_model`` (digits:train:0-4, best epoch on digits:val:0-4, 10 outputs); its semantic slice
(``common.choose_slice`` on task A, Θ chosen on digits:val:0-4) marks the neurons to keep. ``osl.incremental``
(``onnxslice incremental``) then learns task B (digits:train:5-9) with: ``train_all`` (plain retraining), the same
plus replay of 5% / 10% / 100% of task A's training data, DeepArc (only the redundant hidden layers of its modules
at threshold 0.99 on task A's data trained, and the classifier's task-B rows), the semantic slice (its neurons
frozen), and the slice plus 10% replay. Each method trains at every learning rate of its architecture's grid
(``--lrs``, ``--resnet18-lrs``) and keeps the one whose new model scores best on digits:val (mean of task A with the
task known and task B), so no method is judged at a rate that suits another. Task A is measured on digits:test:0-4,
task B on digits:test:5-9, for every method both ways: ``task_a`` on the old-task model ``incremental`` returns (the
new model when nothing is frozen) and ``task_a_task_known`` on the new model with the prediction taken among task
A's classes only; ``task_a_new_model`` on the new model over every class. resnet18 (digits 32 x 32) trains for
``--resnet18-epochs``. Tables: mean ± std over the seeds. Writes ``rq4.md``.

    python benchmarks/paper/rq4_incremental.py [--architectures MLP VGG resnet18] [--seeds 0 1 2 3 4]
        [--epochs 30] [--resnet18-epochs 5] [--lrs 1e-3 5e-3] [--resnet18-lrs 1e-4 1e-3]

Run time with the defaults (5 seeds x 3 architectures, two learning rates each) on the 2-core development machine:
16.4 min with the training of the VGG-style task-A models (measured 2026-12-04, beside another paper script).
"""

from __future__ import annotations

import argparse
import time

from common import (
    ARCHITECTURES,
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
from onnxslice.data import DataSource
from onnxslice.graph import find_neuron_layers
from onnxslice.maintain.training import onnx_accuracy
from onnxslice.slicing.artifact import LayerSlice, Slice

TASK_A, TASK_B = "0-4", "5-9"
OLD_CLASSES = [0, 1, 2, 3, 4]
DEEPARC_THRESHOLD = 0.99
#: Table 6 of the paper, MLP-MNIST: method -> (task A, task B, mean) in %
PAPER = {
    "Original": (98.92, 0.00, 49.46), "Retrain": (0.00, 98.50, 49.25), "Replay 5%": (87.54, 98.32, 92.93),
    "Replay 10%": (91.86, 98.13, 95.00), "Replay 100%": (97.20, 97.48, 97.34), "DeepArc": None,
    "NeuSemSlice": (98.89, 97.20, 98.04), "NeuSemSlice+Replay 10%": (98.94, 97.17, 98.05),
}
#: method -> (what is trained, replay fraction or None)
RUNS = {"Retrain": ("all", None), "Replay 5%": ("all", 0.05), "Replay 10%": ("all", 0.1),
        "Replay 100%": ("all", 1.0), "DeepArc": ("redundant", None), "NeuSemSlice": ("non-critical", None),
        "NeuSemSlice+Replay 10%": ("non-critical", 0.1)}
FIELDS = ("task_a", "task_b", "mean", "task_a_task_known", "mean_task_known", "task_a_new_model")
COLUMNS = ("task A, old-task model", "task B", "mean", "task A, task known", "mean, task known",
           "task A, new model, every class")


def redundant_layers(model: osl.Model, task_a: osl.DataSource) -> Slice:
    """A slice whose only layers are the redundant hidden layers DeepArc finds, none of their neurons critical:
    ``incremental`` trains those and freezes every other hidden layer."""
    arc = deeparc(model.proto, task_a.cap_per_class(64), DEEPARC_THRESHOLD, "cpu")
    sizes = {layer.name: layer.size for layer in find_neuron_layers(model.proto).layers if not layer.is_output}
    return Slice("", {name: LayerSlice(sizes[name], []) for module in arc.modules for name in module[1:]
                      if name in sizes})


def val_score(new: osl.Model, val_a: DataSource, val_b: DataSource) -> float:
    """What a method's learning rate is chosen by: its new model's mean of task A (task known) and task B on
    digits:val."""
    return (onnx_accuracy(new.proto, *val_a.arrays(), classes=OLD_CLASSES)
            + onnx_accuracy(new.proto, *val_b.arrays())) / 2


def measure(arch: str, seed: int, args: argparse.Namespace) -> dict:
    """Every method's report on one seeded task-A model (at the learning rate chosen on digits:val), and its
    slice."""
    path = trained_model(arch, seed, TASK_A)
    model = osl.load(path)
    train_a = data(arch, TRAIN, TASK_A)
    theta, removed, masked, piece = choose_slice(path, train_a, data(arch, VAL, TASK_A), 0.005)
    arc = redundant_layers(model, train_a)
    epochs = args.resnet18_epochs if arch == "resnet18" else args.epochs
    lrs = args.resnet18_lrs if arch == "resnet18" else args.lrs
    val_a, val_b = data(arch, VAL, TASK_A), data(arch, VAL, TASK_B)
    results = {}
    for method, (train_what, replay) in RUNS.items():
        tried = []
        for lr in lrs:
            new, _, report = osl.incremental(
                model, arc if train_what == "redundant" else piece, data(arch, TRAIN, TASK_B),
                replay=train_a if replay else None, replay_fraction=replay or 1.0, new_eval=data(arch, TEST, TASK_B),
                old_eval=data(arch, TEST, TASK_A), train_all=train_what == "all", old_classes=TASK_A, epochs=epochs,
                lr=lr)
            tried.append((val_score(new, val_a, val_b), lr, report))
        _, lr, report = max(tried, key=lambda t: t[0])
        results[method] = {**{k: report[k] for k in (*FIELDS, "tpr")}, "lr": lr}
        print(arch, seed, method, results[method], flush=True)
    before = (report["task_a_before"], report["task_b_before"])
    results["Original"] = dict(zip(FIELDS, (*before, sum(before) / 2, None, None, before[0]), strict=True))
    return {"theta": theta, "removed": removed, "results": results, "epochs": epochs, "lrs": lrs,
            "deeparc_layers": len(arc.layers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--resnet18-epochs", type=int, default=5)
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 5e-3],
                        help="Adam learning rates tried for the MLP and the VGG-style CNN (one chosen on digits:val).")
    parser.add_argument("--resnet18-lrs", nargs="+", type=float, default=[1e-4, 1e-3],
                        help="resnet18's learning rates (5e-3 takes it to chance accuracy: its BatchNorm is folded).")
    args = parser.parse_args()
    quiet_torch()
    started = time.perf_counter()
    runs = {name: [measure(ARCHITECTURES[name], seed, args) for seed in args.seeds] for name in args.architectures}
    header = ["method", "model", *COLUMNS, "TPR", "lr chosen on val (seeds)", "paper MLP-MNIST task A / B / mean"]
    rows = [[method, name, *(mean_std([r["results"][method][k] for r in seeded]) for k in FIELDS),
             mean_std([r["results"][method].get("tpr") for r in seeded]), chosen_rates(seeded, method),
             " / ".join(f"{v:.2f}%" for v in PAPER[method]) if PAPER[method] else "/ (not applicable)"]
            for method in PAPER for name, seeded in runs.items()]
    notes = [f"{name}: {seeded[0]['epochs']} epochs, lr chosen from {' / '.join(f'{v:g}' for v in seeded[0]['lrs'])}; "
             f"task-A model "
             f"{mean_std([r['results']['Original']['task_a'] for r in seeded])} on task A; semantic slice Θ "
             f"{mean_std([r['theta'] for r in seeded], 'number')} ({METRIC}) on task A, "
             f"{mean_std([r['removed'] for r in seeded])} of the parameters outside it; DeepArc's redundant hidden "
             f"layers: {mean_std([float(r['deeparc_layers']) for r in seeded], 'number')}"
             for name, seeded in runs.items()]
    write(HERE / "rq4.md", "\n".join([
        f"# RQ4: incremental development (paper Table 6)\n\n{provenance()}\n",
        f"{len(args.seeds)} task-A models per architecture (seeds {', '.join(map(str, args.seeds))}). Task A = "
        f"digits {TASK_A}, task B = digits {TASK_B}; trained on digits:{TRAIN}, measured on digits:{TEST} "
        "(epochs and the learning-rate grid per architecture below; each method at the rate its new model scores "
        "best with on digits:val). Retrain / Replay = `onnxslice incremental --train all`; NeuSemSlice = `--train "
        "non-critical` "
        "(the slice's neurons frozen); DeepArc = the same with a slice listing only DeepArc's redundant hidden "
        "layers (trained; every other hidden layer frozen; the classifier's task-B rows trained in every "
        "non-`all` run — with no redundant layer, only those rows learn). Task A for every method two ways: "
        "`task A, old-task model` is what the command reports as task_a (the old-task model it writes: frozen "
        "parameters with the slice's mask; the new model itself when nothing is frozen); `task A, task known` "
        f"(task_a_task_known) is the new model with the prediction taken among classes {TASK_A} only. `task A, new "
        "model, every class` is the new model over all ten classes. Θ of the slice chosen on digits:val:0-4. "
        "Cells: mean ± std over the seeds.\n",
        *(f"- {note}" for note in notes), "", table(header, rows), "", reading(runs), "",
        "## Verdicts\n\nTask A like for like: the new model with the task known, for every method (the paper's "
        "reading, below, differs). Loss = the task-A model's accuracy on task A minus the method's:\n",
        verdicts([row for name, seeded in runs.items() for row in claims(name, seeded)]),
        f"\nRun time: {(time.perf_counter() - started) / 60:.1f} min on 2 shared CPU cores."]))


def chosen_rates(seeded: list[dict], method: str) -> str:
    """The learning rates a method was trained at, with the number of seeds each was chosen for."""
    rates = [r["results"][method].get("lr") for r in seeded]
    return ", ".join(f"{lr:g} ×{rates.count(lr)}" for lr in sorted(set(rates) - {None})) or "—"


def values(seeded: list[dict], method: str, key: str) -> list[float | None]:
    return [r["results"][method][key] for r in seeded]


def reading(runs: dict[str, list[dict]]) -> str:
    """Which of the task-A figures the paper's Table 6 matches, with the figures that decide it."""
    changes, retrained = [], []
    for name, seeded in runs.items():
        plain, replayed = ("NeuSemSlice", "NeuSemSlice+Replay 10%")
        changes.append(f"{name} {mean_std(values(seeded, plain, 'task_a'))} → "
                       f"{mean_std(values(seeded, replayed, 'task_a'))} (old-task model), "
                       f"{mean_std(values(seeded, plain, 'task_a_task_known'))} → "
                       f"{mean_std(values(seeded, replayed, 'task_a_task_known'))} (task known), "
                       f"{mean_std(values(seeded, plain, 'task_a_new_model'))} → "
                       f"{mean_std(values(seeded, replayed, 'task_a_new_model'))} (every class)")
        retrained.append(f"{name} {mean_std(values(seeded, 'Retrain', 'task_a_new_model'))} over every class, "
                         f"{mean_std(values(seeded, 'Retrain', 'task_a_task_known'))} with the task known")
    return ("**Which task-A figure the paper's table matches.** The paper's NeuSemSlice task A is high without "
            "replay and rises with 10% replay (MLP-FMNIST 92.12% → 96.96%); its Retrain task A is 0.00% / 2.78%. "
            "The old-task model is the frozen parameters, fixed before training: it cannot change with replay. Of "
            "the new model's two figures, scoring over every class is the one that gives a retrained model (near) "
            "0%, and scoring with the task known the only figure that can both be high without replay and rise with "
            "it. Here, NeuSemSlice → "
            "NeuSemSlice+Replay 10%: " + "; ".join(changes) + ". Retrain: " + "; ".join(retrained) + ". The "
            "paper's NeuSemSlice rows thus match the new model with the task known, its baseline rows the new "
            "model over every class (for the baselines the old-task model is the new model): the table scores "
            "NeuSemSlice with the task known and the baselines without it, which favours NeuSemSlice. The "
            "verdicts below compare like for like (task known for every method) and, in one row, the paper's "
            "way.")


def claims(name: str, seeded: list[dict]) -> list[list[object]]:
    """The verdict rows of one architecture."""
    def known(method: str) -> list[float]:
        return values(seeded, method, "task_a_task_known")

    def loss(method: str, key: str = "task_a_task_known") -> list[float]:
        return [r["results"]["Original"]["task_a"] - r["results"][method][key] for r in seeded]

    def average(method: str) -> float:
        return mean(values(seeded, method, "mean_task_known"))

    replay_losses = {m: mean(loss(m, "task_a_new_model")) for m in ("Replay 5%", "Replay 10%", "Replay 100%")}
    others = [m for m in RUNS if m != "NeuSemSlice+Replay 10%"]
    b_loss = [r["results"]["Retrain"]["task_b"] - r["results"]["NeuSemSlice"]["task_b"] for r in seeded]
    nss_paper = mean(values(seeded, "NeuSemSlice", "task_a_task_known"))
    return [
        ["retraining forgets task A (every class)", name, "0.00% in four of six settings",
         mean_std(values(seeded, "Retrain", "task_a_new_model")),
         mean(values(seeded, "Retrain", "task_a_new_model")) <= 0.05],
        ["replay 5% / 10% / 100% lose less of task A as replay grows (every class)", name,
         "loss 30.45 / 23.03 / 5.15 pt",
         " / ".join(mean_std(loss(m, "task_a_new_model"), "points") for m in replay_losses),
         replay_losses["Replay 5%"] >= replay_losses["Replay 10%"] >= replay_losses["Replay 100%"]],
        ["NeuSemSlice keeps task A better than replay 5% and 10%", name, "loss 2.79 pt (paper's reading)",
         f"loss {mean_std(loss('NeuSemSlice'), 'points')}; replay 10% {mean_std(loss('Replay 10%'), 'points')}",
         mean(known("NeuSemSlice")) >= max(mean(known("Replay 5%")), mean(known("Replay 10%")))],
        ["the same in the paper's reading (NeuSemSlice task known, replay every class)", name,
         "loss 2.79 pt vs 23.03 pt (replay 10%)",
         f"{mean_std(loss('NeuSemSlice'), 'points')} vs "
         f"{mean_std(loss('Replay 10%', 'task_a_new_model'), 'points')}",
         nss_paper >= max(mean(values(seeded, m, "task_a_new_model")) for m in ("Replay 5%", "Replay 10%"))],
        ["NeuSemSlice's mean of A and B above replay 100%'s", name, "+0.69 pt",
         mean_std([a - b for a, b in zip(values(seeded, "NeuSemSlice", "mean_task_known"),
                                         values(seeded, "Replay 100%", "mean_task_known"), strict=True)], "points"),
         average("NeuSemSlice") >= average("Replay 100%")],
        ["NeuSemSlice+Replay 10% has the best mean of all methods", name, "best in all six settings",
         f"{average('NeuSemSlice+Replay 10%'):.2%} vs best other "
         f"{max(others, key=average)} {max(average(m) for m in others):.2%}",
         average("NeuSemSlice+Replay 10%") >= max(average(m) for m in others)],
        ["NeuSemSlice costs little on task B versus retraining (≤ 3 pt)", name, "−1.64 pt",
         mean_std([-v for v in b_loss], "points"), mean(b_loss) <= 0.03],
        ["DeepArc neither keeps task A (vs NeuSemSlice) nor learns task B (vs retraining) as well", name,
         "MLP: not applicable; larger models: both worse",
         f"task A {mean_std(known('DeepArc'))} vs {mean_std(known('NeuSemSlice'))}, task B "
         f"{mean_std(values(seeded, 'DeepArc', 'task_b'))} vs {mean_std(values(seeded, 'Retrain', 'task_b'))}",
         mean(known("DeepArc")) < mean(known("NeuSemSlice"))
         and mean(values(seeded, "DeepArc", "task_b")) < mean(values(seeded, "Retrain", "task_b"))],
    ]


if __name__ == "__main__":
    main()
