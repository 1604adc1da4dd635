"""Profiling on Ray: 2 workers against 1, measured in one run (read the ratios, not the seconds).

resnet18 (torchvision, random weights, one input channel, 10 classes; models/digits32.py) at 32×32, Taylor
contributions (the PyTorch pass), on scikit-learn's digits upscaled to 32×32 (all 1,797 samples, saved as a .npz
that every worker opens itself). A local Ray of 2 CPUs is started once (its start-up is timed and stated apart);
then, in turns over several rounds, the same profile is measured in 1 shard (one worker, one CPU) and in 2 shards
(two workers), and in this process without Ray (onnxruntime and PyTorch on every core) for reference. A warm-up
profile first starts both workers and imports what they use, as every run after the first finds them. Goal: 2
workers at least 1.5× as fast as 1 on the 2-core machine. Each sharded profile is checked against the one-process
one (H identical).

    python benchmarks/profile_ray.py [--rounds 3] [--samples 1797]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))
from digits32 import build, digits32  # noqa: E402
from timing import median_ratio  # noqa: E402

import onnxslice as osl  # noqa: E402
from tests.helpers import export_onnx  # noqa: E402

METRICS = ["taylor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1797, help="the first N digits (at most 1797)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(Path(folder), args.rounds, args.samples)


def measure(folder: Path, rounds: int, samples: int) -> None:
    """Time the profiles of resnet18 in ``folder`` on the first ``samples`` digits and print the ratios."""
    torch.manual_seed(0)
    model = export_onnx(build("resnet18"), (1, 32, 32), folder / "resnet18.onnx")
    x, y = digits32("all").arrays()
    np.savez(folder / "digits32.npz", x=x[:samples], y=y[:samples])
    np.savez(folder / "warmup.npz", x=x[:40], y=y[:40])
    data = str(folder / "digits32.npz")

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    startup = time.perf_counter() - start
    start = time.perf_counter()
    osl.profile(model, str(folder / "warmup.npz"), METRICS, device="cpu", ray="local", shards=2)
    warmup = time.perf_counter() - start

    runs = {"1 worker": {"ray": "local", "shards": 1}, "2 workers": {"ray": "local", "shards": 2},
            "no Ray": {}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    profiles = {}
    for _ in range(rounds):  # the runs take turns, so that a slow spell of the machine hits them all
        for name, settings in runs.items():
            start = time.perf_counter()
            profiles[name] = osl.profile(model, data, METRICS, device="cpu", **settings)
            times[name].append(time.perf_counter() - start)
    ray.shutdown()
    for name in ("1 worker", "2 workers"):
        for layer, statistics in profiles["no Ray"].similarity.items():
            assert all(np.array_equal(a.centred, b.centred)
                       for a, b in zip(profiles[name].similarity[layer], statistics, strict=True)), (name, layer)

    best = {name: min(seconds) for name, seconds in times.items()}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}")
    print(f"resnet18 32x32, taylor, {len(y[:samples])} samples (max_per_class 128), local Ray of 2 CPUs, "
          f"{rounds} rounds (best seconds; ratios: median over rounds)")
    print(f"Ray start-up (ray.init, local, 2 CPUs): {startup:.2f} s; then the warm-up profile of 40 samples, which "
          f"starts the 2 workers and their imports: {warmup:.2f} s")
    for name in runs:
        print(f"{name:<10} {best[name]:7.2f} s")
    print(f"speed-up, 2 workers over 1: {median_ratio(times['1 worker'], times['2 workers']):.2f}x (goal >= 1.5x)")
    with_startup = [t + startup for t in times["2 workers"]]
    print(f"2 workers over one process without Ray: {median_ratio(times['no Ray'], times['2 workers']):.2f}x; "
          f"with Ray's start-up counted: {median_ratio(times['no Ray'], with_startup):.2f}x")


if __name__ == "__main__":
    main()
