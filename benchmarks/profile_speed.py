"""Profiling speed, measured in one run (these machines are noisy: read the ratios, not the seconds).

1. ``avg`` profiling vs plain onnxruntime inference of the same model over the same N samples (goal ≤ 1.3×),
   at N and at 10N samples.
2. ``taylor`` profiling vs one forward + backward pass of the original PyTorch model over the same N samples,
   differentiating each sample's own logit (goal ≤ 1.5×).

Every timing is end to end: loading the model, creating the session (and converting to PyTorch) included.
The runs take turns in each of several rounds; a ratio is the median over rounds of the ratio within a
round (robust to the slow spells of a shared machine), the seconds are the best of the rounds.
Profiling also computes the CKA statistics H once at the end, from at most max_per_class samples per
category ("kept"): a cost that does not grow with N, so the ratio falls as N grows. "pass only" is the ratio
with --max-per-class 1 (H nearly free), i.e. the streaming pass alone; "H s" is the difference, the seconds
spent on H at the default cap.

Models: the example CNN on digits (repeated to N samples) and a random-weight torchvision resnet18 at 32x32
on random data. Usage: python benchmarks/profile_speed.py [--samples N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import median_ratio, rounds  # noqa: E402

from onnxslice.data import DataSource, load_data  # noqa: E402
from onnxslice.graph import load_model  # noqa: E402
from onnxslice.profile import profile_model  # noqa: E402
from onnxslice.profile.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS  # noqa: E402
from onnxslice.runtime import Runner  # noqa: E402
from tests.helpers import CNN, example_torch_model, export_onnx  # noqa: E402


def plain_inference(path: Path, data: DataSource) -> None:
    runner = Runner.create(load_model(path), "cpu")
    for _ in runner.scores(runner.prepare(data), DEFAULT_BATCH_SIZE):
        pass


def forward_backward(module: torch.nn.Module, data: DataSource, shape: tuple[int, ...]) -> None:
    for x, labels in data.batches(DEFAULT_BATCH_SIZE):
        scores = module(torch.from_numpy(x.reshape(len(x), *shape)))
        scores.gather(1, torch.from_numpy(labels)[:, None]).sum().backward()


def profiling(path: Path, data: DataSource, metric: str, max_per_class: int = DEFAULT_MAX_PER_CLASS) -> None:
    profile_model(path, data, [metric], max_per_class, device="cpu", progress=False)


def repeated(source: DataSource, samples: int) -> DataSource:
    """``samples`` samples cycling through ``source`` (labels stay balanced), produced on demand."""
    index = np.arange(samples) % len(source)
    return source.subset(index, f"{source.name} x{samples}")


def random_data(samples: int, shape: tuple[int, ...]) -> DataSource:
    x = np.random.default_rng(0).standard_normal((samples, *shape)).astype(np.float32)
    return DataSource.from_arrays("random", x, np.arange(samples) % 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560, help="N for resnet18; the CNN gets 8N")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    resnet_path = export_onnx(resnet, (3, 32, 32), Path(tempfile.mkdtemp()) / "resnet18.onnx")
    digits = load_data("digits")
    cases = [
        ("cnn_digits", CNN, lambda n: repeated(digits, n), 8 * args.samples, example_torch_model("cnn"), (1, 8, 8)),
        ("resnet18 32x32", resnet_path, lambda n: random_data(n, (3, 32, 32)), args.samples, resnet, (3, 32, 32)),
    ]
    print(f"threads: torch 1, onnxruntime default; batch {DEFAULT_BATCH_SIZE}; max_per_class {DEFAULT_MAX_PER_CLASS}")
    print(f"{'model':<15} {'N':>6} {'kept':>5} | {'plain s':>7} {'avg s':>7} {'ratio':>6} {'pass only':>10} "
          f"{'H s':>5} | {'f+b s':>7} {'taylor s':>8} {'ratio':>6} {'pass only':>10}")
    for name, path, make_data, samples, module, shape in cases:
        for scale in (1, 10):
            data = make_data(scale * samples)
            runs = {
                "plain": partial(plain_inference, path, data),
                "avg": partial(profiling, path, data, "avg"),
                "avg pass": partial(profiling, path, data, "avg", 1),
            }
            if scale == 1:
                runs |= {
                    "f+b": partial(forward_backward, module, data, shape),
                    "taylor": partial(profiling, path, data, "taylor"),
                    "taylor pass": partial(profiling, path, data, "taylor", 1),
                }
            times = rounds(args.repeats, runs)
            best = {run: min(seconds) for run, seconds in times.items()}
            kept = sum(min(int(n), DEFAULT_MAX_PER_CLASS) for n in np.bincount(data.labels))
            ratio = {run: median_ratio(times[run], times["f+b" if "taylor" in run else "plain"]) for run in runs}
            line = (f"{name:<15} {len(data):>6} {kept:>5} | {best['plain']:>7.2f} {best['avg']:>7.2f} "
                    f"{ratio['avg']:>5.2f}x {ratio['avg pass']:>9.2f}x {best['avg'] - best['avg pass']:>5.2f} |")
            if scale == 1:
                line += (f" {best['f+b']:>7.2f} {best['taylor']:>8.2f} {ratio['taylor']:>5.2f}x "
                         f"{ratio['taylor pass']:>9.2f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
