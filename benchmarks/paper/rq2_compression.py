"""RQ2 (paper §5.3, Table 4): unstructured pruning with and without restructuring by a semantic slice first.

For each bundled model and each method (LAMP, Global, Uniform+, ERK): ``osl.compress`` (``onnxslice
compress``) on the original model (the baseline) and on the model restructured with a semantic slice
(NeuSemSlice+method). The slice: metric Taylor, profiled on digits:train; Θ is the one among 0.90..0.99 whose
masked model removes the most parameters while staying within half the accuracy budget on digits:val
(``common.choose_slice``; the paper takes "the optimal configuration identified in RQ1"). Sparsity rises
geometrically by ``--step`` until accuracy on digits:val would drop more than ``--max-drop`` below the
original's; with ``--finetune-epochs N`` each pruned model is fine-tuned on digits:train (zeros kept, best epoch
on digits:val). CR / NI / MA are reported on digits:test, on which nothing is chosen. Writes ``rq2.md`` (or
``rq2_finetuned.md`` with fine-tuning) beside this script.

    python benchmarks/paper/rq2_compression.py [--step 0.1] [--max-drop 0.01] [--finetune-epochs 0]
"""

from __future__ import annotations

import argparse

from common import HERE, METRIC, MODELS, TEST, TRAIN, VAL, choose_slice, provenance, quiet_torch, table, write

import onnxslice as osl
from onnxslice.compression.loop import prunable_weights
from onnxslice.compression.methods import METHODS
from onnxslice.data import load_data

LABELS = {"lamp": "LAMP", "global": "Glob", "uniform": "Unif", "erk": "ERK"}
#: Table 4 of the paper, the two MLP settings: method -> (CR, NI, MA) for MLP-MNIST and MLP-FMNIST.
PAPER = {
    "LAMP": [(0.5217, 7, 0.9826), (0.3697, 9, 0.9001)], "NeuSemSlice+LAMP": [(0.5305, 5, 0.9832), (0.3970, 8, 0.9021)],
    "Glob": [(0.4095, 5, 0.9831), (0.3366, 8, 0.9009)], "NeuSemSlice+Glob": [(0.4204, 3, 0.9837), (0.3652, 7, 0.9018)],
    "Unif": [(0.4095, 5, 0.9834), (0.4013, 10, 0.8981)], "NeuSemSlice+Unif": [(0.4204, 3, 0.9836), (0.4271, 9, 0.8995)],
    "ERK": [(0.3439, 4, 0.9830), (0.3017, 7, 0.9008)], "NeuSemSlice+ERK": [(0.4204, 3, 0.9833), (0.3318, 6, 0.9024)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    args = parser.parse_args()
    quiet_torch()
    train, val, test = load_data(TRAIN), load_data(VAL), load_data(TEST)
    results: dict[str, dict[str, tuple]] = {}
    notes = []
    for name, path in MODELS.items():
        model = osl.load(path)
        original = osl.evaluate(model, test, "cpu")["accuracy"]
        weights = sum(w.values.size for w in prunable_weights(model.proto))
        theta, removed, masked, piece = choose_slice(path, train, val, args.max_drop / 2)
        notes.append(f"{name}: original accuracy {original:.2%} on {TEST}; slice Θ = {theta:.2f} ({METRIC}) "
                     f"removes {removed:.2%} of the parameters when masked, accuracy {masked:.2%} on {VAL}.")
        for method in METHODS:
            for sliced in (False, True):
                result = osl.compress(model, train, method, piece if sliced else None, val_data=val, eval_data=test,
                                      finetune_epochs=args.finetune_epochs, step=args.step,
                                      max_drop=args.max_drop, device="cpu")
                nonzero = sum(int((w.values != 0).sum()) for w in prunable_weights(result.model))
                storage = result.to_json()["storage"]
                label = ("NeuSemSlice+" if sliced else "") + LABELS[method]
                results.setdefault(label, {})[name] = (result.cr, result.ni, result.ma, 1.0 - nonzero / weights,
                                                       storage["csr_saving"])
                print(name, label, f"CR {result.cr:.4f} NI {result.ni} MA {result.ma:.4f}", flush=True)
    header = ["method", *(f"{name} {c}" for name in MODELS for c in ("CR", "CR weights", "NI", "MA")),
              *(f"paper {s} {c}" for s in ("MLP-MNIST", "MLP-FMNIST") for c in ("CR", "NI", "MA"))]
    rows = []
    for label, per_model in results.items():
        ours = [v for name in MODELS for v in (per_model[name][0], per_model[name][3], *per_model[name][1:3])]
        rows.append([label, *ours, *(v for setting in PAPER[label] for v in setting)])
    savings = [[label, *(f"{100 * per_model[name][4]:.2f}%" for name in MODELS)]
               for label, per_model in results.items()]
    text = [f"# RQ2: model restructuring with compression (paper Table 4)\n\n{provenance()}\n",
            f"CR / NI / MA reported on {TEST}; the slice profiled on {TRAIN}, its Θ and the stopping point "
            f"chosen on {VAL}. Sparsity of the prunable weights rises as 1 − (1 − {args.step})^k; the loop stops "
            f"before accuracy on {VAL} drops more than {args.max_drop:.0%} (absolute) below the original's "
            f"(MA on {TEST} may therefore drop by more). "
            + (f"After each pruning step, {args.finetune_epochs} fine-tuning epoch(s) on {TRAIN} (lr 1e-4, zeros "
               f"kept at zero, best epoch on {VAL}). " if args.finetune_epochs else "No fine-tuning. ")
            + "CR = 1 − non-zero parameters / parameters of the "
            "original (biases included); CR weights = the same over the Conv/Gemm/MatMul weights only (the "
            "paper's CRs equal 1 − 0.9^NI or 1 − 0.95^NI, i.e. weights only). NI = pruning iterations kept "
            "(the evaluation that failed is not counted). MA = final accuracy.\n",
            "The bundled models were trained on the 70% training part that digits:val was later carved from, so "
            f"their accuracy on {VAL} is a training accuracy (the stopping point is judged against it).\n",
            *(f"- {note}" for note in notes), "",
            table(header, rows), "",
            "Saving of a CSR format (float32 values + int32 column indices + row pointers, rows = the weight's "
            "first axis) over the dense pruned weights as written (negative: CSR would be larger; with a slice the "
            "base is the restructured, already smaller, weights):\n", table(["method", *MODELS], savings)]
    write(HERE / ("rq2_finetuned.md" if args.finetune_epochs else "rq2.md"), "\n".join(text))


if __name__ == "__main__":
    main()
