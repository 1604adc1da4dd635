"""Check a restructured model before it is written: ONNX checker, onnxruntime, and equality with the mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxslice.data import DataSource
from onnxslice.errors import VerificationError, first_line
from onnxslice.large import check_model
from onnxslice.measure.stats import fixed_input_shape
from onnxslice.runtime import input_shape, make_session, run_session
from onnxslice.surgery.mask import mask_model

#: Allowed max |restructured - masked| relative to the largest |masked output| on the probe inputs.
RELATIVE_TOLERANCE = 1e-4
#: The masked model's outputs must vary across the probes by at least this fraction of their scale; else the
#: comparison says little (random-weight deep nets can output ~1e-11 whatever the input).
MIN_RELATIVE_SPREAD = 1e-2
#: Factors tried on standard-normal probes until the outputs vary enough (ReLU-like nets scale with the input).
PROBE_SCALES = (1.0, 1e2, 1e4, 1e6)


@dataclass(frozen=True)
class Verification:
    max_abs_diff: float
    output_scale: float  #: largest |output| of the masked model on the probe inputs
    probes: str  #: what the probe inputs were, e.g. "4 data samples" or "4 standard-normal inputs x100"
    informative: bool  #: whether the outputs varied enough across the probes for the comparison to mean much


def probe_inputs(model: onnx.ModelProto, batch: int = 4, seed: int = 0) -> np.ndarray:
    """``batch`` standard-normal inputs of the model's sample shape (dynamic axes other than the batch: 1)."""
    shape = [batch, *fixed_input_shape(model, batch)[1:]]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def probe_samples(data: DataSource, model: onnx.ModelProto, batch: int = 4) -> np.ndarray:
    """The first ``batch`` samples of ``data``, shaped for the model's input."""
    data = data.shaped_for(input_shape(model))
    return data.samples(np.arange(min(batch, len(data))))


def verify(original: onnx.ModelProto, pruned: onnx.ModelProto, kept: Mapping[str, Sequence[int]],
           device: str = "cpu", batch: int = 4, seed: int = 0, samples: np.ndarray | None = None) -> Verification:
    """Raise VerificationError unless ``pruned`` passes the checker, runs, and matches the masked original.

    The probes are ``samples`` (real data, when given) and then standard-normal inputs scaled up until the masked
    model's outputs vary across them (see :data:`MIN_RELATIVE_SPREAD`); when none do, the result says the
    comparison was not informative rather than calling it a verification.
    """
    try:
        check_model(pruned, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VerificationError(f"the restructured model fails the ONNX checker: {first_line(exc)}") from None
    masked = _session(mask_model(original, kept), device, "the masked model")
    candidates = [(f"{len(samples)} data samples", samples)] if samples is not None else []
    normal = probe_inputs(original, batch, seed)
    candidates += [(f"{batch} standard-normal inputs" + (f" x{factor:g}" if factor != 1 else ""), normal * factor)
                   for factor in PROBE_SCALES]
    probes, x, reference = _first_varying(masked, candidates)
    result = _run(_session(pruned, device, "the restructured model"), x, "the restructured model")
    diff, scale = 0.0, 0.0
    for ref, out in zip(reference, result, strict=True):
        if ref.shape != out.shape:
            raise VerificationError(f"the restructured model outputs shape {out.shape}, the masked one {ref.shape}")
        diff = max(diff, float(np.max(np.abs(ref.astype(np.float64) - out), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(ref), initial=0.0)))
    if not diff <= RELATIVE_TOLERANCE * max(scale, 1e-30):
        raise VerificationError(f"the restructured model differs from the masked one by {diff:.3g} "
                                f"(output scale {scale:.3g}); nothing written")
    return Verification(diff, scale, probes, _varies(reference))


def _first_varying(masked: ort.InferenceSession, candidates: list[tuple[str, np.ndarray]]
                   ) -> tuple[str, np.ndarray, list[np.ndarray]]:
    """The first probes on which the masked model's outputs vary (else the last tried), with those outputs."""
    for candidate in candidates:
        reference = _run(masked, candidate[1], "the masked model")
        if _varies(reference):
            break
    return *candidate, reference


def _varies(outputs: list[np.ndarray]) -> bool:
    """Whether the float outputs differ between probes by at least MIN_RELATIVE_SPREAD of their largest value."""
    floats = [o.astype(np.float64) for o in outputs if o.dtype.kind == "f" and o.ndim and len(o) > 1]
    scale = max((float(np.max(np.abs(o))) for o in floats), default=0.0)
    spread = max((float(np.max(np.ptp(o, axis=0))) for o in floats), default=0.0)
    return scale > 0 and np.isfinite(scale) and spread >= MIN_RELATIVE_SPREAD * scale


def _session(model: onnx.ModelProto, device: str, what: str) -> ort.InferenceSession:
    try:
        return make_session(model, device)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a failed verification
        raise VerificationError(f"onnxruntime cannot load {what}: {first_line(exc)}") from None


def _run(session: ort.InferenceSession, x: np.ndarray, what: str) -> list[np.ndarray]:
    try:
        return run_session(session, x)
    except Exception as exc:  # noqa: BLE001 - any failure to run is a failed verification
        raise VerificationError(f"onnxruntime cannot run {what}: {first_line(exc)}") from None
