"""Profiling speed, measured in one run (these machines are noisy: read the ratios, not the seconds).

1. ``avg`` profiling vs plain onnxruntime inference of the same model over the same N samples (goal ≤ 1.3×),
   at N and at 10N samples.
2. ``taylor`` profiling vs one forward + backward pass of the original PyTorch model over the same N samples,
   differentiating each sample's own logit (goal ≤ 1.5×).

Every timing is end to end: loading the model, creating the session (and converting to PyTorch) included.
Each run is timed in a fresh Python process (as the command line runs it), after the same run on 64
samples has loaded what it uses (the data are made before the clock starts too). The runs take turns in
each of several rounds; a ratio is the median over rounds of the ratio within a round (robust to the slow
spells of a shared machine), the seconds are the best of the rounds.
Profiling also computes the CKA statistics H, from at most max_per_class samples per category ("kept",
read whole, one category at a time): a cost that does not grow with N, so the ratio falls as N grows. "pass
only" is the ratio with --max-per-class 1 (H nearly free), i.e. the streaming pass alone; "H s" is the
difference, the seconds spent on H and on reading the CKA samples whole at the default cap.

Models: the example CNN on digits (repeated to N samples) and a random-weight torchvision resnet18 at 32x32
on random data. Usage: python benchmarks/profile_speed.py [--samples N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import last_line_in_fresh_process, median_ratio  # noqa: E402

from onnxslice.data import DataSource, load_data  # noqa: E402
from onnxslice.graph import load_model  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.profiling.profiler import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PER_CLASS  # noqa: E402
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


def random_resnet18() -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights in every process
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def case(name: str, samples: int, folder: Path) -> tuple[Path, DataSource, torch.nn.Module, tuple[int, ...]]:
    """Model file, N samples of data, PyTorch original and sample shape of a benchmark case."""
    if name == "cnn_digits":
        return CNN, repeated(load_data("digits"), samples), example_torch_model("cnn"), (1, 8, 8)
    return folder / "resnet18.onnx", random_data(samples, (3, 32, 32)), random_resnet18(), (3, 32, 32)


def time_one(run: str, name: str, samples: int, folder: Path) -> float:
    """Seconds of one run of a case, in this process: the data are made, and the libraries the run uses loaded
    by the same run on 64 samples, before the clock starts."""
    torch.set_num_threads(1)
    seconds = 0.0
    for size in (64, samples):
        path, data, module, shape = case(name, size, folder)
        work = {
            "plain": partial(plain_inference, path, data),
            "avg": partial(profiling, path, data, "avg"),
            "avg pass": partial(profiling, path, data, "avg", 1),
            "f+b": partial(forward_backward, module, data, shape),
            "taylor": partial(profiling, path, data, "taylor"),
            "taylor pass": partial(profiling, path, data, "taylor", 1),
        }[run]
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
    return seconds


def in_fresh_process(run: str, name: str, samples: int, folder: Path) -> float:
    """Seconds of a run timed in a new Python process, as the command line runs it (nothing left from others)."""
    return float(last_line_in_fresh_process(__file__, "--one", run, name, str(samples), str(folder)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2560, help="N for resnet18; the CNN gets 8N")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=4, metavar=("RUN", "CASE", "N", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run, name, samples, folder = args.one
        print(time_one(run, name, int(samples), Path(folder)))
        return
    folder = Path(tempfile.mkdtemp())
    export_onnx(random_resnet18(), (3, 32, 32), folder / "resnet18.onnx")
    print(f"threads: torch 1, onnxruntime default; batch {DEFAULT_BATCH_SIZE}; max_per_class {DEFAULT_MAX_PER_CLASS}; "
          f"{args.repeats} rounds, every run in a fresh process")
    print(f"{'model':<15} {'N':>6} {'kept':>5} | {'plain s':>7} {'avg s':>7} {'ratio':>6} {'pass only':>10} "
          f"{'H s':>5} | {'f+b s':>7} {'taylor s':>8} {'ratio':>6} {'pass only':>10}")
    for name, samples in (("cnn_digits", 8 * args.samples), ("resnet18 32x32", args.samples)):
        for scale in (1, 10):
            names = ["plain", "avg", "avg pass"] + (["f+b", "taylor", "taylor pass"] if scale == 1 else [])
            times: dict[str, list[float]] = {run: [] for run in names}
            for _ in range(args.repeats):  # the runs take turns, so that a slow spell of the machine hits them all
                for run in names:
                    times[run].append(in_fresh_process(run, name.split()[0], scale * samples, folder))
            best = {run: min(seconds) for run, seconds in times.items()}
            ratio = {run: median_ratio(times[run], times["f+b" if "taylor" in run else "plain"]) for run in names}
            kept = sum(np.minimum(np.bincount(np.arange(scale * samples) % 10), DEFAULT_MAX_PER_CLASS))
            line = (f"{name:<15} {scale * samples:>6} {kept:>5} | {best['plain']:>7.2f} {best['avg']:>7.2f} "
                    f"{ratio['avg']:>5.2f}x {ratio['avg pass']:>9.2f}x {best['avg'] - best['avg pass']:>5.2f} |")
            if scale == 1:
                line += (f" {best['f+b']:>7.2f} {best['taylor']:>8.2f} {ratio['taylor']:>5.2f}x "
                         f"{ratio['taylor pass']:>9.2f}x")
            print(line, flush=True)


if __name__ == "__main__":
    main()
