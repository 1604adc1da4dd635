"""What the paper scripts share: the seeded models, their data, mean ± std cells, verdict rows and Markdown."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from onnxslice.compression.sweep import parse_values
from onnxslice.data import DataSource, load_data
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.profiling import profile_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.strategies import make_strategy, select
from onnxslice.slicing.summary import parameter_fraction
from onnxslice.surgery.mask import mask_model

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: trained models, keyed by architecture, seed, task and a hash of the training code (ignored by git)
CACHE = HERE / "cache"
#: table name -> architecture (models/zoo.py, models/digits32.py): the paper's MLP, a VGG-style CNN (two conv
#: blocks and two 256-unit hidden layers, the pattern of the paper's VGG16 / AlexNet), torchvision's resnet18
ARCHITECTURES = {"MLP": "mlp", "VGG": "vgg", "resnet18": "resnet18"}
SEEDS = (0, 1, 2, 3, 4)
TRAIN, VAL, TEST = "train", "val", "test"
METRIC = "taylor"

sys.path.insert(0, str(ROOT / "models"))
from train import export, model_input, train  # noqa: E402


def quiet_torch() -> None:
    """One thread: these scripts run beside other work on small machines."""
    torch.set_num_threads(1)


def data(arch: str, split: str, classes: str | None = None, max_per_class: int | None = None) -> DataSource:
    """The digits ``split`` ("train", "val", "test"; ``classes`` such as "0-4") as ``arch`` takes them: 8 x 8,
    or upscaled to 32 x 32 (named ``digits32:…``) for resnet18."""
    spec = f"digits:{split}" + (f":{classes}" if classes else "")
    source = load_data(spec, max_per_class=max_per_class)
    if arch != "resnet18":
        return source
    x, y = source.arrays()
    return DataSource.from_arrays(spec.replace("digits", "digits32", 1), model_input(arch, x), y)


def training_code_hash() -> str:
    """A short hash of the code that trains the models (models/train.py and what it imports from models/)."""
    digest = hashlib.sha256()
    for name in ("train.py", "zoo.py", "digits32.py"):
        digest.update((ROOT / "models" / name).read_bytes())
    return digest.hexdigest()[:10]


def trained_model(arch: str, seed: int, classes: str | None = None) -> Path:
    """ONNX of ``arch`` trained by models/train.py with ``seed`` on digits:train (only ``classes`` when given),
    the best epoch chosen on digits:val (the same classes); cached under ``CACHE``."""
    task = f"_c{classes}" if classes else ""
    path = CACHE / f"{arch}_s{seed}{task}_{training_code_hash()}.onnx"
    if path.exists():
        return path
    started = time.perf_counter()
    (x, y), val = (load_data(f"digits:{split}" + (f":{classes}" if classes else "")).arrays() for split in (TRAIN, VAL))
    module = train(arch, model_input(arch, x), y, seed, (model_input(arch, val[0]), val[1]))
    CACHE.mkdir(exist_ok=True)
    export(module, model_input(arch, x[:2]), path)
    print(f"trained {path.relative_to(ROOT)} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def mean_std(values: Sequence[float | None], kind: str = "percent") -> str:
    """``mean ± std`` over the seeds (sample std): fractions as percentages (``kind`` "percent"), differences of
    fractions as signed percentage points ("points") or plain numbers ("number"); "—" when nothing was
    measured, the count when some seeds gave no value."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "—"
    mean, std = float(np.mean(measured)), float(np.std(measured, ddof=1)) if len(measured) > 1 else 0.0
    text = {"percent": f"{100 * mean:.2f} ± {100 * std:.2f}%", "points": f"{100 * mean:+.2f} ± {100 * std:.2f} pt",
            "number": f"{mean:.3g} ± {std:.2g}"}[kind]
    return text + (f" ({len(measured)}/{len(values)} seeds)" if len(measured) < len(values) else "")


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the measured values (None when none was)."""
    measured = [v for v in values if v is not None]
    return float(np.mean(measured)) if measured else None


def verdicts(rows: list[list[object]]) -> str:
    """The verdict table: claim, setting, the paper's figure, ours (mean ± std over the seeds), holds or not."""
    return table(["claim", "model", "paper", "here (mean ± std over seeds)", "verdict"],
                 [[*row[:4], "—" if row[4] is None else "holds" if row[4] else "does not hold"] for row in rows])


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
    return (f"Regenerate with `{command_line()}` (code at commit {commit} plus the working tree; CPU, onnxruntime, "
            f"torch on one thread; measured {time.strftime('%Y-%m-%d')}).")


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

