"""Slicing from a saved profile: how long `onnxslice slice --profile` takes on the example models.

Profiles each example model once on digits:train (not timed), then times, best of a few runs:
loading the profile and selecting (semantic Θ = 0.95 with every category, global and category-wise
R = 0.5), and the whole command in-process (hash and load the model, load the profile, select,
write slice.json). Goal: well under a second.

    python benchmarks/slice_speed.py [--max-per-class 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from click.testing import CliRunner
from timing import best_time

from onnxslice.data import load_data
from onnxslice.profiling import Profile, profile_model
from onnxslice.slicing.strategies import make_strategy, select
from onnxslice_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": ROOT / "models" / "mlp_digits.onnx", "cnn": ROOT / "models" / "cnn_digits.onnx"}
CASES = [("semantic", {"theta": 0.95}), ("global", {"ratio": 0.5}), ("category", {"ratio": 0.5})]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-class", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | strategy | load profile + select (s) | whole `slice --profile` command (s) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, model in MODELS.items():
            profile_path = Path(folder) / f"{name}.npz"
            profile_model(model, load_data("digits:train"), ["avg", "taylor"], args.max_per_class, "cpu",
                          progress=False).save(profile_path)
            for strategy, option in CASES:
                chosen = make_strategy(strategy, **option)
                api = best_time(lambda c=chosen, p=profile_path: select(Profile.load(p), "taylor", c), args.repeats)
                flag, value = next(iter(option.items()))
                command = ["slice", str(model), "--profile", str(profile_path), "--metric", "taylor",
                           "--strategy", strategy, f"--{flag}", str(value), "-o", str(Path(folder) / "s.json")]

                def run_command(command=command) -> None:
                    result = CliRunner().invoke(cli, command)
                    assert result.exit_code == 0, result.output

                whole = best_time(run_command, args.repeats)
                print(f"| {name} | {strategy} {flag}={value} | {api:.4f} | {whole:.4f} |")


if __name__ == "__main__":
    main()
