"""Check a restructured model before it is written: ONNX checker, onnxruntime, and equality with the mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxslice.large import check_model
from onnxslice.runtime import input_name, make_session
from onnxslice.stats import fixed_input_shape
from onnxslice.surgery.mask import mask_model

#: Allowed max |restructured - masked| relative to the largest |masked output| on the probe inputs.
RELATIVE_TOLERANCE = 1e-4


class VerificationError(Exception):
    """The restructured model is not what the mask computes (our failure, not the user's input)."""


@dataclass(frozen=True)
class Verification:
    max_abs_diff: float
    output_scale: float  #: largest |output| of the masked model on the probe inputs


def probe_inputs(model: onnx.ModelProto, batch: int = 4, seed: int = 0) -> np.ndarray:
    """Standard-normal inputs of the model's input shape (dynamic axes: ``batch`` first, then 1)."""
    return np.random.default_rng(seed).standard_normal(fixed_input_shape(model, batch)).astype(np.float32)


def verify(original: onnx.ModelProto, pruned: onnx.ModelProto, kept: Mapping[str, Sequence[int]],
           device: str = "cpu", batch: int = 4, seed: int = 0) -> Verification:
    """Raise VerificationError unless ``pruned`` passes the checker, runs, and matches the masked original."""
    try:
        check_model(pruned, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VerificationError(f"the restructured model fails the ONNX checker: {_first_line(exc)}") from None
    x = probe_inputs(original, batch, seed)
    reference = _run(mask_model(original, kept), x, device, "the masked model")
    result = _run(pruned, x, device, "the restructured model")
    diff, scale = 0.0, 0.0
    for ref, out in zip(reference, result, strict=True):
        if ref.shape != out.shape:
            raise VerificationError(f"the restructured model outputs shape {out.shape}, the masked one {ref.shape}")
        diff = max(diff, float(np.max(np.abs(ref.astype(np.float64) - out), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(ref), initial=0.0)))
    if not diff <= RELATIVE_TOLERANCE * max(scale, 1e-6):
        raise VerificationError(f"the restructured model differs from the masked one by {diff:.3g} "
                                f"(output scale {scale:.3g}); nothing written")
    return Verification(diff, scale)


def _run(model: onnx.ModelProto, x: np.ndarray, device: str, what: str) -> list[np.ndarray]:
    try:
        return make_session(model, device).run(None, {input_name(model): x})
    except Exception as exc:  # noqa: BLE001 - any failure to load or run is a failed verification
        raise VerificationError(f"onnxruntime cannot run {what}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
