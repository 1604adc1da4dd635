"""Time of `onnxslice slice --target-macs` from a saved profile on resnet18 (goal: <= 5 s), one run on one machine.

torchvision resnet18 for 1-channel 32x32 digits (random weights), profiled once (``--metric``, default taylor,
on a few digits per class); then the whole command — Python start-up, loading, the channel groups, ranking and
the bisection — is timed as a subprocess for each strategy, next to `slice --theta/--ratio` (no budget) for
scale. No model runs inside the bisection: sizes come from the groups' size terms.

    python benchmarks/budget_speed.py [--metric taylor] [--target 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import onnxslice as osl  # noqa: E402
from tests.helpers import digits32, export_onnx, resnet18_digits  # noqa: E402

ONNXSLICE = str(Path(sys.executable).with_name("onnxslice"))


def timed(*args: str) -> tuple[float, dict]:
    start = time.perf_counter()
    run = subprocess.run([ONNXSLICE, *args, "--json"], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(run.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="taylor")
    parser.add_argument("--target", type=float, default=0.5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model = export_onnx(resnet18_digits(), (1, 32, 32), folder / "resnet18.onnx")
        osl.profile(model, digits32("train").cap_per_class(8), [args.metric], max_per_class=8,
                    device="cpu").save(folder / "profile.npz")
        print(f"resnet18 1x32x32, profile metric {args.metric}; wall time of the whole command (s)")
        for strategy, option in (("global", ["--ratio", "0.5"]), ("semantic", ["--theta", "0.95"]),
                                 ("category", ["--ratio", "0.5"])):
            common = [str(model), "--profile", str(folder / "profile.npz"), "--strategy", strategy]
            plain, _ = timed("slice", *common, *option, "-o", str(folder / f"{strategy}_plain.json"))
            budget, result = timed("slice", *common, "--target-macs", str(args.target),
                                   "-o", str(folder / f"{strategy}_budget.json"))
            print(f"{strategy:<9} --target-macs {args.target}: {budget:5.2f} s (reached {result['macs_fraction']:.3f})"
                  f"   without a budget: {plain:5.2f} s   budget / plain {budget / plain:.2f}", flush=True)


if __name__ == "__main__":
    main()
