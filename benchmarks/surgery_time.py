"""Time of the ONNX surgery itself for resnet50 (goal: under 2 s), split by stage; one run on one machine.

The slice is a seeded random half of every hidden layer. Stages: shape folding (prepare), channel groups,
graph edits (restructure without the two before), and verification against the mask (not part of the goal).

    python benchmarks/surgery_time.py [--model resnet50] [--size 224] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxslice.graph import find_neuron_layers, load_model  # noqa: E402
from onnxslice.surgery.groups import channel_groups  # noqa: E402
from onnxslice.surgery.restructure import prepare, restructure  # noqa: E402
from onnxslice.surgery.verify import verify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = getattr(torchvision.models, args.model)(weights=None).eval()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        torch.onnx.export(module, (torch.randn(1, 3, args.size, args.size),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}})
        model = load_model(path)
    rng = np.random.default_rng(0)
    kept = {layer.name: sorted(rng.choice(layer.size, layer.size // 2, replace=False).tolist())
            for layer in find_neuron_layers(model).hidden}
    rows = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        prepared = prepare(model)
        folded = time.perf_counter()
        groups = channel_groups(prepared)
        grouped = time.perf_counter()
        pruned, report = restructure(model, kept, groups)
        edited = time.perf_counter()
        verify(model, pruned, kept, batch=1)
        verified = time.perf_counter()
        rows.append((folded - start, grouped - folded, edited - grouped, edited - start, verified - edited))
    best = np.min(np.array(rows), axis=0)
    print(f"{args.model} ({len(model.graph.node)} nodes, {len(find_neuron_layers(model).hidden)} hidden layers), "
          f"random half slice: {report.removed_fraction:.1%} of hidden channels removed; best of {args.repeats} runs")
    print(f"prepare {best[0]:.2f} s | groups {best[1]:.2f} s | edits {best[2]:.2f} s | "
          f"surgery total {best[3]:.2f} s (goal < 2 s) | verification {best[4]:.2f} s")


if __name__ == "__main__":
    main()
