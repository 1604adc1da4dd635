"""Verification of a restructured model means something even when the model's outputs are tiny or constant.

Oracles: hand-built two-layer models whose outputs are known in closed form — outputs of order 1e-12 that still
depend on the input (a wrong model must be caught: its difference is 100% of the output), and outputs that do not
depend on the input at all (no comparison can tell models apart there: the result must say so).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslice.errors import VerificationError
from onnxslice.surgery.verify import verify


def _mlp(w1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> onnx.ModelProto:
    """input (N, 4) -> Gemm(w1) -> Relu -> Gemm(w2, b2) -> logits (N, 3)."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2")],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2"),
         numpy_helper.from_array(b2.astype(np.float32), "b2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


RNG = np.random.default_rng(0)
W1, W2 = RNG.standard_normal((4, 5)), RNG.standard_normal((5, 3))
KEEP_ALL = {"fc1": list(range(5))}


def test_tiny_outputs_that_depend_on_the_input_are_compared_relatively():
    original = _mlp(W1 * 1e-6, W2 * 1e-6, np.zeros(3))  # outputs ~1e-12
    wrong = _mlp(W1 * 1e-6, -W2 * 1e-6, np.zeros(3))  # every output's sign flipped
    check = verify(original, original, KEEP_ALL)
    assert check.informative and check.max_abs_diff == 0.0 and 0 < check.output_scale < 1e-10
    with pytest.raises(VerificationError, match="differs from the masked one"):
        verify(original, wrong, KEEP_ALL)


def test_outputs_that_ignore_the_input_are_reported_as_not_informative():
    original = _mlp(np.zeros((4, 5)), W2, np.array([1.0, 2.0, 3.0]))  # logits = b2 whatever the input
    check = verify(original, original, KEEP_ALL)
    assert not check.informative
    assert check.probes.endswith("x1e+06")  # every probe scale was tried


def test_scaled_probes_are_used_when_plain_ones_hardly_move_the_output():
    original = _mlp(W1 * 1e-5, W2, np.array([1.0, 2.0, 3.0]))  # varying part ~1e-5 of a constant 3
    check = verify(original, original, KEEP_ALL)
    assert check.informative and check.probes == "4 standard-normal inputs x10000"


def test_data_samples_are_the_first_probes():
    original = _mlp(W1, W2, np.zeros(3))
    samples = RNG.standard_normal((4, 4)).astype(np.float32)
    assert verify(original, original, KEEP_ALL, samples=samples).probes == "4 data samples"
