"""Latency of restructured models vs their MAC reduction (onnxruntime, CPU, one run on one machine).

For each model, a slice keeps the first half of every hidden layer's channels (so coupled layers agree
and the whole network halves); the script restructures it (verified against the mask) and prints
MACs, parameters and measured latency before and after, and speed-up / MAC reduction (goal >= 0.8).

    python benchmarks/restructure_latency.py [--models resnet18 vgg16] [--size 224] [--batch 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxslice.graph import find_neuron_layers, load_model  # noqa: E402
from onnxslice.measure.stats import count_macs, count_params, measure_latency  # noqa: E402
from onnxslice.surgery.restructure import restructure  # noqa: E402
from onnxslice.surgery.verify import verify  # noqa: E402


def export(name: str, size: int, folder: Path) -> Path:
    module = getattr(torchvision.models, name)(weights=None, num_classes=1000).eval()
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"input {args.size}x{args.size}, batch {args.batch}, {args.threads} onnxruntime thread(s), "
          f"{args.repeats} timed runs after warm-up; slice: first half of every hidden layer")
    print(f"{'model':<10}{'MACs before':>14}{'MACs after':>14}{'params ratio':>14}{'ms before':>11}{'ms after':>10}"
          f"{'MAC reduction':>15}{'speed-up':>10}{'speed-up/MAC red.':>19}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model = load_model(export(name, args.size, Path(folder)))
            kept = {layer.name: list(range(layer.size // 2)) for layer in find_neuron_layers(model).hidden}
            pruned, _ = restructure(model, kept)
            verify(model, pruned, kept, batch=1)
            macs = count_macs(model), count_macs(pruned)
            params = count_params(model), count_params(pruned)
            before = measure_latency(model, args.batch, args.repeats, "cpu", threads=args.threads)
            after = measure_latency(pruned, args.batch, args.repeats, "cpu", threads=args.threads)
            reduction, speedup = macs[0] / macs[1], before / after
            print(f"{name:<10}{macs[0]:>14,}{macs[1]:>14,}{params[1] / params[0]:>14.3f}{before:>11.2f}{after:>10.2f}"
                  f"{reduction:>15.2f}{speedup:>10.2f}{speedup / reduction:>19.2f}", flush=True)


if __name__ == "__main__":
    main()
