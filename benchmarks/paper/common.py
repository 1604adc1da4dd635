"""What the paper scripts share: the bundled models, Markdown tables, and where results go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from onnxslice.compression.sweep import parse_values
from onnxslice.data import DataSource
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.profiling import profile_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.strategies import make_strategy, select
from onnxslice.slicing.summary import parameter_fraction
from onnxslice.surgery.mask import mask_model

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODELS = {"MLP-digits": ROOT / "models" / "mlp_digits.onnx", "CNN-digits": ROOT / "models" / "cnn_digits.onnx"}
TRAIN, VAL, TEST = "digits:train", "digits:val", "digits:test"
METRIC = "taylor"


def quiet_torch() -> None:
    """One thread: these scripts run beside other work on small machines."""
    torch.set_num_threads(1)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; floats in [0, 1] are shown as percentages."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{100 * value:.2f}%" if 0.0 <= value <= 1.0 else f"{value:.3g}"
        return "—" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])


def provenance() -> str:
    """The command and commit that produced a table."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"Regenerate with `{command_line()}` (code at commit {commit} plus the working tree; CPU, onnxruntime)."


def write(path: Path, text: str) -> None:
    path.write_text(text.rstrip() + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def choose_slice(path: Path, train: DataSource, val: DataSource, budget: float) -> tuple[float, float, float, Slice]:
    """The paper's "optimal configuration of RQ1": of the semantic slices (metric Taylor, profiled on ``train``)
    at Θ = 0.90..0.99, the one whose masked model removes the most parameters while its accuracy on ``val``
    (the data the choice is made on) stays within ``budget`` of the original's. Returns (Θ, fraction removed,
    masked accuracy on ``val``, slice); the slice at Θ = 0.99 when none stays within the budget."""
    model = load_model(path)
    original = accuracy(model, val, "cpu")["accuracy"]
    profile = profile_model(path, train, [METRIC], 128, "cpu", progress=False)
    candidates = []
    for theta in parse_values("0.90:0.99:0.01", "--thetas"):
        piece = select(profile, METRIC, make_strategy("semantic", theta=theta))
        removed = 1.0 - parameter_fraction(model, piece)["fraction"]
        masked = accuracy(mask_model(model, piece.kept()), val, "cpu")["accuracy"]
        candidates.append((theta, removed, masked, piece))
    within = [c for c in candidates if c[2] >= original - budget]
    return max(within, key=lambda c: c[1]) if within else candidates[-1]

