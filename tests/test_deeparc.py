"""The DeepArc baseline: layer CKA, modules, and bypassing redundant layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxslice.compression.deeparc import bypass, deeparc, modules_of, why_not_removable
from onnxslice.data import load_data
from onnxslice.graph import constant_values, find_neuron_layers, load_model
from onnxslice.measure.stats import count_params
from onnxslice.profiling.similarity import linear_cka
from onnxslice.runtime import make_session
from tests.helpers import CNN, MLP, export_onnx


def test_linear_cka_equals_the_feature_space_formula():
    """Oracle: Kornblith et al. (2019) Eq. 5 on centred features, ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F); CKA is 1 for
    a representation and its rotated, scaled copy."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 7))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(expected)
    rotation, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    assert linear_cka(x, 3.0 * x @ rotation + 1.0) == pytest.approx(1.0)


def test_modules_group_consecutive_similar_layers():
    """Oracle: by hand — similarities a-b 0.995, b-c 0.5, c-d 0.999 give modules [a, b], [c, d]."""
    assert modules_of(["a", "b", "c", "d"], [0.995, 0.5, 0.999], 0.99) == [["a", "b"], ["c", "d"]]


class _Chain(torch.nn.Module):
    def __init__(self, with_second: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 3)
        self.with_second = with_second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        if self.with_second:
            x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def test_bypassing_a_layer_equals_the_model_built_without_it(tmp_path):
    """Oracle: PyTorch — the same network exported without conv2 (same weights) computes what the bypassed
    ONNX model computes."""
    full = load_model(export_onnx(_Chain(True), (1, 8, 8), tmp_path / "full.onnx"))
    without = load_model(export_onnx(_Chain(False), (1, 8, 8), tmp_path / "without.onnx"))
    second = find_neuron_layers(full).layers[1]
    assert why_not_removable(full, second) is None
    bypassed = bypass(full, [second])
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    ours = make_session(bypassed, "cpu").run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, make_session(without, "cpu").run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    assert count_params(bypassed) == count_params(without)


def test_mlp_layers_cannot_be_removed_without_a_sewing_layer():
    """Oracle: the MLP's shapes, 64 -> 512 -> 256 -> 10 (paper §5.2: DeepArc cannot shrink the MLP); with every
    layer in one module, 512 -> 256 is reported and the classifier is never removed."""
    result = deeparc(load_model(MLP), load_data("digits:train").cap_per_class(10), threshold=0.0, device="cpu")
    assert result.modules == [result.layers] and result.removed == []
    assert "sewing layer" in result.kept["/2/Gemm"] and result.kept["/4/Gemm"] == "classifier output layer"
    assert count_params(result.model) == count_params(load_model(MLP))


def test_deeparc_removes_the_residual_convs_of_the_cnn():
    """Oracle: parameter arithmetic — with all layers in one module, the two 16 -> 16 convs of the residual block
    are the only layers whose input and output shapes agree; removing them removes exactly their weights and
    biases, and the result still runs."""
    model = load_model(CNN)
    result = deeparc(model, load_data("digits:train").cap_per_class(10), threshold=0.0, device="cpu")
    assert result.removed == ["/features/features.2/conv1/conv1.0/Conv", "/features/features.2/conv2/conv2.0/Conv"]
    constants = constant_values(model)
    nodes = {node.name: node for node in model.graph.node}
    removed = sum(constants[name].size for layer in result.removed for name in nodes[layer].input[1:])
    assert count_params(result.model) == count_params(model) - removed
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert make_session(result.model, "cpu").run(None, {"input": x})[0].shape == (2, 10)
