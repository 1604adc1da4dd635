"""Peak memory of profiling at N and at 10N samples, measured in one run (goal: ratio ≤ 1.2).

Each measurement runs in a fresh process. Two figures per run:
- traced: peak of the Python and numpy allocations made during ``profile_model`` (tracemalloc);
- RSS growth: peak resident set size of the process minus its current size just before profiling (includes
  onnxruntime's own buffers, which tracemalloc does not see).
The data are generated batch by batch (random, fixed seed per batch), so the data source itself
holds nothing but the labels. N is twice the CKA samples (10 categories × max_per_class), so that at N as at
10N profiling has both of its phases: the CKA samples read whole, one category at a time, then the other
samples through a session that outputs only spatial means.

A second line shows the absolute memory for a model with large activations (resnet18 at 224x224, about
9.5 MB of observed activations a sample), where one category's CKA samples are what memory holds.

Usage: python benchmarks/profile_memory.py [--samples N] [--metric M]...
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import last_line_in_fresh_process  # noqa: E402

from onnxslice.data import DataSource  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.profiling.profiler import DEFAULT_MAX_PER_CLASS  # noqa: E402
from tests.helpers import CNN, export_onnx  # noqa: E402


def generated(samples: int, shape: tuple[int, ...], classes: int = 10) -> DataSource:
    """Random samples made on demand; a batch depends only on its first index."""

    def load(idx: np.ndarray) -> np.ndarray:
        return np.random.default_rng(int(idx[0])).random((len(idx), *shape), dtype=np.float32)

    return DataSource(f"generated x{samples}", np.arange(samples) % classes, load, shape)


def child(model: str, shape: tuple[int, ...], samples: int, metrics: list[str], cap: int) -> None:
    torch.set_num_threads(1)
    data = generated(samples, shape)
    profile_model(model, data.subset(np.arange(20)), metrics, device="cpu", progress=False)  # warm up the imports
    before = current_rss_kb()
    tracemalloc.start()
    start = time.perf_counter()
    profile_model(model, data, metrics, cap, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"traced_mb": traced / 2**20, "rss_growth_mb": (after - before) / 2**10, "seconds": seconds}))


def current_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def measure(model: str, shape: tuple[int, ...], samples: int, metrics: list[str],
            cap: int = DEFAULT_MAX_PER_CLASS) -> dict:
    return json.loads(last_line_in_fresh_process(__file__, "--child", model, ",".join(map(str, shape)), str(samples),
                                                 str(cap), *metrics))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, shape, samples, cap, *metrics = sys.argv[2:]
        child(model, tuple(int(d) for d in shape.split(",")), int(samples), metrics, int(cap))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20 * DEFAULT_MAX_PER_CLASS, help="N (10 categories)")
    parser.add_argument("--metric", dest="metrics", action="append", help="default: avg and taylor")
    args = parser.parse_args()
    metrics = args.metrics or ["avg", "taylor"]
    resnet = torchvision_resnet18((3, 32, 32))
    print(f"metrics {', '.join(metrics)}; max_per_class {DEFAULT_MAX_PER_CLASS}; 10 categories")
    print(f"{'model':<15} {'N':>6} {'10N':>6} | {'traced MB N':>11} {'10N':>7} {'ratio':>6} | "
          f"{'RSS growth MB N':>15} {'10N':>7} {'ratio':>6}")
    for name, model, shape in (("cnn_digits", str(CNN), (1, 8, 8)), ("resnet18 32x32", resnet, (3, 32, 32))):
        small = measure(model, shape, args.samples, metrics)
        large = measure(model, shape, 10 * args.samples, metrics)
        print(f"{name:<15} {args.samples:>6} {10 * args.samples:>6} | {small['traced_mb']:>11.1f} "
              f"{large['traced_mb']:>7.1f} {large['traced_mb'] / small['traced_mb']:>5.2f}x | "
              f"{small['rss_growth_mb']:>15.1f} {large['rss_growth_mb']:>7.1f} "
              f"{large['rss_growth_mb'] / max(small['rss_growth_mb'], 1e-9):>5.2f}x")
    shape, cap = (3, 224, 224), 32
    print(f"\nresnet18 224x224, avg, N = {20 * cap}, max_per_class {cap}, 10 categories")
    result = measure(torchvision_resnet18(shape), shape, 20 * cap, ["avg"], cap)
    print(f"traced {result['traced_mb']:.1f} MB | RSS growth {result['rss_growth_mb']:.1f} MB | "
          f"{result['seconds']:.1f} s")


def torchvision_resnet18(shape: tuple[int, ...]) -> str:
    import torchvision

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "resnet18.onnx"
    return str(export_onnx(torchvision.models.resnet18(weights=None, num_classes=10), shape, path))


if __name__ == "__main__":
    main()
