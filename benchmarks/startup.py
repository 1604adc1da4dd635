"""Start-up time of the command line against Python importing numpy (goal: `onnxslice --version` <= 2x).

Each command runs in a fresh process; the commands take turns for ``--rounds`` rounds and each one's quickest
round counts (the machine is shared and noisy), so the printed ratios are taken in one run.

    python benchmarks/startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved  # noqa: E402

ONNXSLICE = str(Path(sys.executable).with_name("onnxslice"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    commands = {
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "python -c 'import onnxslice'": [sys.executable, "-c", "import onnxslice"],
        "onnxslice --version": [ONNXSLICE, "--version"],
        "onnxslice --help": [ONNXSLICE, "--help"],
        "onnxslice slice --help": [ONNXSLICE, "slice", "--help"],
    }
    best = interleaved(rounds, {name: lambda c=command: subprocess.run(c, check=True, capture_output=True)
                                for name, command in commands.items()})
    numpy = best["python -c 'import numpy'"]
    print(f"quickest of {rounds} fresh processes each; ratio to python -c 'import numpy'")
    for name, seconds in best.items():
        print(f"{name:<32}{seconds:>8.3f} s{seconds / numpy:>8.2f}x")


if __name__ == "__main__":
    main()
