"""Latency of restructured resnet18 by --round-to and size budget (onnxruntime CPU, one run on one machine).

torchvision resnet18 for 1-channel 32x32 digits (conv1 with one input channel, 10 classes; random weights:
latency does not depend on them), profiled with ``avg`` on a few digits. For each budget (fraction of the
original's MACs) and each N of --round-to, a global and a semantic slice are made to that budget, restructured
(verified against the mask) and timed; the script prints the latency ratio to the original (< 1: faster),
measured in this one run, and the channel counts of the stream. The default --round-to is chosen from this.

    python benchmarks/round_to_latency.py [--budgets 0.9 0.7 0.5 0.3] [--round-to 1 4 8 16] [--batch 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxslice.errors import InputError  # noqa: E402
from onnxslice.graph import load_model  # noqa: E402
from onnxslice.measure.stats import count_macs, fixed_input_shape  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.runtime import input_name, make_session  # noqa: E402
from onnxslice.slicing.budget import slice_to_budget  # noqa: E402
from onnxslice.slicing.groups import SelectionGroups  # noqa: E402
from onnxslice.surgery.restructure import restructure  # noqa: E402
from onnxslice.surgery.verify import verify  # noqa: E402
from tests.helpers import digits32, export_onnx, resnet18_digits  # noqa: E402


def interleaved_latency(first: onnx.ModelProto, second: onnx.ModelProto, batch: int, repeats: int,
                        rounds: int) -> tuple[float, float]:
    """Milliseconds per batch of each model, rounds alternating between them (a shared machine drifts)."""
    sessions = [make_session(model, "cpu", 1) for model in (first, second)]
    feed = {input_name(first): np.random.default_rng(0).standard_normal(fixed_input_shape(first, batch),
                                                                       dtype=np.float32)}
    best = [np.inf, np.inf]
    for session in sessions:
        session.run(None, feed)
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            for _ in range(repeats):
                session.run(None, feed)
            best[index] = min(best[index], (time.perf_counter() - start) / repeats * 1000.0)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3])
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--strategies", nargs="+", default=["global", "semantic"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(resnet18_digits(), (1, 32, 32), Path(folder) / "resnet18.onnx")
        model = load_model(path)
        profile = profile_model(str(path), digits32("train").cap_per_class(8), ["avg"], max_per_class=8,
                                device="cpu", progress=False)
    groups = SelectionGroups.of_model(model)
    print(f"resnet18 1x32x32, batch {args.batch}, 1 onnxruntime thread; latency ratio = restructured / original, "
          f"ms per batch: the quickest of {args.rounds} rounds of {args.repeats} runs, the two models alternating")
    print(f"{'strategy':<10}{'budget':>7}{'round_to':>9}{'MACs':>8}{'original':>9}{'pruned':>9}{'ratio':>8}"
          "  stream channels")
    for strategy in args.strategies:
        for budget in args.budgets:
            for round_to in args.round_to:
                try:
                    piece = slice_to_budget(model, profile, "avg", strategy, target_macs=budget, round_to=round_to,
                                            groups=groups)
                except InputError as exc:
                    print(f"{strategy:<10}{budget:>7.2f}{round_to:>9}  {exc}", flush=True)
                    continue
                pruned, report = restructure(model, piece.kept())
                verify(model, pruned, piece.kept(), batch=2)
                original, latency = interleaved_latency(model, pruned, args.batch, args.repeats, args.rounds)
                stream = [after for name, (_, after) in report.channels.items() if "downsample" in name]
                print(f"{strategy:<10}{budget:>7.2f}{round_to:>9}{count_macs(pruned) / count_macs(model):>8.3f}"
                      f"{original:>9.2f}{latency:>9.2f}{latency / original:>8.3f}  {stream}", flush=True)


if __name__ == "__main__":
    main()
