"""A genuine model over protobuf's 2 GB limit through `restructure`, `mask` and `evaluate` of the API.

The model is models/mlp_digits.onnx with ``--dead`` planted dead neurons appended to its first hidden layer
(zero weights and bias before the ReLU, random weights where the next layer reads them): 2.25 GB of
weights with the default 1,750,000, saved with external data. Its slice keeps the 512 original neurons,
so the pruned model is the original MLP again and every accuracy must equal the original's. Prints wall
time and peak memory (RSS) of each job (what the command of the same name does: load, one API call, write),
run one at a time in a child process.

    python benchmarks/large_model.py [--dead 1750000] [--folder /tmp/onnxslice-large]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
import onnxslice as osl  # noqa: E402
from onnxslice.files import sha256_of  # noqa: E402
from onnxslice.large import tensor_bytes  # noqa: E402
from onnxslice.slicing.artifact import LayerSlice, Slice  # noqa: E402

ORIGINAL = ROOT / "models" / "mlp_digits.onnx"


def build(dead: int, path: Path) -> int:
    """mlp_digits with ``dead`` dead neurons after the 512 of its first Gemm (weights stored transposed);
    returns the bytes of its weights."""
    model = onnx.load(str(ORIGINAL))
    inits = {init.name: init for init in model.graph.initializer}
    w1, b1, w2 = (onnx.numpy_helper.to_array(inits[name]) for name in ("0.weight", "0.bias", "2.weight"))
    rng = np.random.default_rng(0)
    grown = {
        "0.weight": np.concatenate([w1, np.zeros((dead, w1.shape[1]), np.float32)]),
        "0.bias": np.concatenate([b1, np.zeros(dead, np.float32)]),
        "2.weight": np.concatenate([w2, rng.standard_normal((w2.shape[0], dead), np.float32)], axis=1),
    }
    for name, value in grown.items():
        inits[name].CopyFrom(onnx.numpy_helper.from_array(value, name))
    del grown, w1, b1, w2
    weights = sum(tensor_bytes(init) for init in model.graph.initializer)
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=1024)
    return weights


def restructure(model: str, slice_path: str, out: str) -> dict:
    """``onnxslice restructure --latency-batch 1 --device cpu``: the sizes, latency, verification, weights file."""
    loaded = osl.load(model)
    result = osl.restructure(loaded, osl.load_slice(slice_path, loaded), device="cpu", latency_batch=1,
                             latency_seconds=2.0)
    return {**result.to_json(), "external_data": result.model.save(out)}


def mask(model: str, slice_path: str, out: str) -> dict:
    """``onnxslice mask``: the parameters the masked model still uses, and its weights file."""
    loaded = osl.load(model)
    piece = osl.load_slice(slice_path, loaded)
    return {**osl.kept_fraction(loaded, piece), "external_data": osl.mask(loaded, piece).save(out)}


def evaluate(model: str) -> dict:
    """``onnxslice evaluate --data digits:test --device cpu``."""
    return osl.evaluate(model, "digits:test", "cpu")


def run(job: str, *args: str) -> tuple[dict, float, float]:
    """One job of this module in a child process: its result, wall seconds and peak RSS in GB."""
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import large_model; "
            f"print(json.dumps(large_model.{job}(*{args!r}), default=float))")
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{job} failed")
    return json.loads(stdout), seconds, usage.ru_maxrss * 1024 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dead", type=int, default=1_750_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/onnxslice-large"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    big, slice_path = args.folder / "big.onnx", args.folder / "slice.json"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:  # a child process: its
        weights = pool.submit(build, args.dead, big).result()  # memory would count in every command's peak RSS
    print(f"model: {weights / 1e9:.3f} GB of weights (protobuf's limit is {2**31 / 1e9:.3f} GB)", flush=True)
    Slice(sha256_of(big), {"/0/Gemm": LayerSlice(512 + args.dead, list(range(512)))}).save(slice_path)
    pruned, masked = args.folder / "pruned.onnx", args.folder / "masked.onnx"
    rows = [
        ("restructure", run("restructure", str(big), str(slice_path), str(pruned))),
        ("mask", run("mask", str(big), str(slice_path), str(masked))),
        ("evaluate big", run("evaluate", str(big))),
        ("evaluate pruned", run("evaluate", str(pruned))),
        ("evaluate original", run("evaluate", str(ORIGINAL))),
    ]
    print(f"{'job':<20}{'wall s':>8}{'peak RSS GB':>13}  result")
    for name, (result, seconds, rss) in rows:
        keys = ("params_before", "params_after", "external_data", "max_abs_diff") if name == "restructure" else (
            ("params", "params_kept", "external_data") if name == "mask" else ("accuracy", "params", "macs"))
        print(f"{name:<20}{seconds:>8.1f}{rss:>13.2f}  " + ", ".join(f"{k}={result[k]}" for k in keys))
    print(f"files: {', '.join(f'{p.name} {p.stat().st_size / 1e9:.3f} GB' for p in sorted(args.folder.iterdir()))}")
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
