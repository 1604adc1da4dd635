"""From a trained model to a deployable smaller one: onnxslice against Torch-Pruning at the same MACs budget.

For each architecture (trained here on digits 32x32, models/digits32.py) and each budget (fraction of the
original's MACs), four pruned models are made from the same trained model:

- onnxslice ``global`` and ``semantic`` (metric ``avg``): ``slice_to_budget`` on the exported ONNX, restructure
  (verified against the mask);
- Torch-Pruning 1.6 (benchmark-only dependency), group magnitude and group Taylor importance, ``round_to`` 8,
  the classifier kept whole, its pruning ratio bisected until the export's MACs (counted as for onnxslice's)
  reach the budget;

then each is fine-tuned by the same function (onnxslice's ``finetune``: Adam, plain cross-entropy, the same epochs
and learning rate, best epoch on a held-out tenth of digits32:train) and scored on digits32:test. Latency: one
onnxruntime CPU thread, batch 32, every model of a budget timed in the same rounds as the original (rounds
alternate between models; the quickest round counts), so that ratios are taken in one run.

    python benchmarks/deploy.py [--models resnet18 mobilenet_v3_small] [--budgets 0.5 0.3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))
from digits32 import digits32, trained  # noqa: E402

from onnxslice.graph import canonicalize  # noqa: E402
from onnxslice.large import write_model  # noqa: E402
from onnxslice.maintain.finetune import FinetuneOptions, finetune  # noqa: E402
from onnxslice.measure.evaluate import accuracy  # noqa: E402
from onnxslice.measure.stats import count_macs, count_params, fixed_input_shape  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.runtime import input_name, make_session  # noqa: E402
from onnxslice.slicing.budget import slice_to_budget  # noqa: E402
from onnxslice.slicing.groups import SelectionGroups  # noqa: E402
from onnxslice.surgery.restructure import restructure  # noqa: E402
from onnxslice.surgery.verify import verify  # noqa: E402

SAMPLE = (1, 1, 32, 32)


def to_onnx(module: torch.nn.Module) -> onnx.ModelProto:
    """The legacy export (opset 17, dynamic batch, BatchNorm folded) of ``module`` in eval mode, canonical."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(2, *SAMPLE[1:]),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return canonicalize(onnx.load_from_string(buffer.getvalue()))


def torch_pruning_onnx(base: torch.nn.Module, kind: str, budget: float) -> onnx.ModelProto:
    """``base`` pruned by Torch-Pruning (group ``kind`` importance, round_to 8, classifier kept whole) to ``budget``
    of its MACs, exported. The MACs are counted as for onnxslice's models (on the ONNX export), so both reach
    the budget by the same count; the pruning ratio is bisected (importance recomputed on each copy)."""
    import torch_pruning as tp

    example = torch.randn(*SAMPLE)
    base_macs = count_macs(to_onnx(base))
    x, y = (torch.from_numpy(a) for a in digits32("train").cap_per_class(32).arrays())

    def pruned(ratio: float) -> onnx.ModelProto:
        model = copy.deepcopy(base).eval()
        importance = (tp.importance.GroupMagnitudeImportance(p=2) if kind == "magnitude"
                      else tp.importance.GroupTaylorImportance())
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio, round_to=8,
                                      ignored_layers=[classifier])
        if kind == "taylor":
            torch.nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
        model.zero_grad()
        return to_onnx(model)

    low, high, best = 0.0, 0.95, None
    for _ in range(10):
        ratio = (low + high) / 2
        model = pruned(ratio)
        if count_macs(model) / base_macs > budget:
            low = ratio
        else:
            high, best = ratio, model
        if best is not None and budget - count_macs(best) / base_macs < 0.01:
            break
    return best


def onnxslice_model(model: onnx.ModelProto, profile, strategy: str, budget: float,
                    groups: SelectionGroups) -> onnx.ModelProto:
    """``model`` sliced by ``strategy`` to ``budget`` of its MACs (round_to 8) and restructured, verified."""
    piece = slice_to_budget(model, profile, "avg", strategy, target_macs=budget, groups=groups)
    pruned, _ = restructure(model, piece.kept())
    verify(model, pruned, piece.kept(), batch=2)
    return pruned


def latencies(models: dict[str, onnx.ModelProto], batch: int = 32, repeats: int = 10,
              rounds: int = 7) -> dict[str, float]:
    """Milliseconds per batch of each model (one thread): the quickest of ``rounds`` rounds, models alternating."""
    sessions = {name: make_session(model, "cpu", 1) for name, model in models.items()}
    first = next(iter(models.values()))
    feed = {input_name(first): np.random.default_rng(0).standard_normal(fixed_input_shape(first, batch),
                                                                       dtype=np.float32)}
    best = dict.fromkeys(models, np.inf)
    for session in sessions.values():
        session.run(None, feed)
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(repeats):
                session.run(None, feed)
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1000.0)
    return best


def run_budget(original: onnx.ModelProto, makers: dict[str, Callable[[], onnx.ModelProto]],
               tune: Callable[[onnx.ModelProto], onnx.ModelProto]) -> list[dict]:
    """One row per method: size ratios, accuracy before and after fine-tuning, latency ratios."""
    test = digits32("test")
    pruned, rows = {}, []
    for method, make in makers.items():
        start = time.perf_counter()
        pruned[method] = make()
        seconds = time.perf_counter() - start
        tuned = tune(pruned[method])
        rows.append({"method": method, "seconds": seconds,
                     "params": count_params(pruned[method]) / count_params(original),
                     "macs": count_macs(pruned[method]) / count_macs(original),
                     "before": accuracy(pruned[method], test, "cpu")["accuracy"],
                     "after": accuracy(tuned, test, "cpu")["accuracy"]})
    times = latencies({"original": original, **pruned})
    magnitude = times.get("TP magnitude", np.nan)
    for row in rows:
        row["latency"] = times[row["method"]] / times["original"]
        row["vs_tp"] = times[row["method"]] / magnitude
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v3_small"])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    train = digits32("train")
    options = FinetuneOptions(epochs=args.epochs, lr=args.lr)

    def tune(model: onnx.ModelProto) -> onnx.ModelProto:
        return finetune(model, train, options).model

    print(f"fine-tuning: {args.epochs} epochs, Adam lr {args.lr:g}, best epoch on a tenth of digits32:train; "
          "accuracy on digits32:test; latency ratio at batch 32, one onnxruntime thread (< 1: faster)")
    for name in args.models:
        torch.manual_seed(0)
        base = trained(name)
        original = to_onnx(base)
        with_path = ROOT / "models" / "cache" / f"{name}_deploy.onnx"
        write_model(original, with_path)
        profile = profile_model(with_path, train.cap_per_class(32), ["avg"], max_per_class=32, device="cpu",
                                progress=False, loaded=original)
        groups = SelectionGroups.of_model(original)
        print(f"\n{name}: original accuracy {accuracy(original, digits32('test'), 'cpu')['accuracy']:.4f}, "
              f"{count_params(original):,} params, {count_macs(original):,} MACs")
        print(f"{'budget':>6} {'method':<14}{'params':>7}{'MACs':>7}{'before':>8}{'after':>8}{'latency':>9}"
              f"{'vs TP mag':>10}{'prune s':>8}")
        for budget in args.budgets:
            makers = {
                "global": partial(onnxslice_model, original, profile, "global", budget, groups),
                "semantic": partial(onnxslice_model, original, profile, "semantic", budget, groups),
                "TP magnitude": partial(torch_pruning_onnx, base, "magnitude", budget),
                "TP taylor": partial(torch_pruning_onnx, base, "taylor", budget),
            }
            for row in run_budget(original, makers, tune):
                print(f"{budget:>6.2f} {row['method']:<14}{row['params']:>7.3f}{row['macs']:>7.3f}"
                      f"{row['before']:>8.4f}{row['after']:>8.4f}{row['latency']:>9.3f}{row['vs_tp']:>10.3f}"
                      f"{row['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
