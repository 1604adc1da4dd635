"""The DeepArc baseline: layer CKA, modules, bypassing redundant layers and sewing over them.

Oracles: Kornblith et al.'s CKA formula; PyTorch models built without the removed layers; spans that are
linear maps of their input (their sewing layer must reproduce them, so the sewn model computes what the
original does); parameter arithmetic from the ONNX initializers; the ONNX checker and onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from onnxslice.compression.deeparc import Span, deeparc, fit_linear, modules_of, sew_spans, span_of
from onnxslice.data import DataSource, load_data
from onnxslice.graph import constant_values, find_neuron_layers, load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.measure.stats import count_params
from onnxslice.profiling.similarity import linear_cka
from onnxslice.runtime import make_session
from onnxslice_cli.main import cli
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
    span = span_of(full, [second])
    assert isinstance(span, Span) and span.sewing is None
    bypassed, sewing = sew_spans(full, [span], None)
    assert sewing == []
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    ours = make_session(bypassed, "cpu").run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, make_session(without, "cpu").run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    assert count_params(bypassed) == count_params(without)


def test_without_sewing_the_mlp_layers_cannot_be_removed():
    """Oracle: the MLP's shapes, 64 -> 512 -> 256 -> 10; with sewing off and every layer in one module,
    512 -> 256 is kept with its reason and the classifier is never removed."""
    result = deeparc(load_model(MLP), load_data("digits:train").cap_per_class(10), threshold=0.0, device="cpu",
                     sew=False)
    assert result.modules == [result.layers] and result.removed == []
    assert "sewing layer" in result.kept["/2/Gemm"] and result.kept["/4/Gemm"] == "classifier output layer"
    assert count_params(result.model) == count_params(load_model(MLP))


def test_sewing_over_the_mlp_layer_keeps_its_size():
    """At threshold 0.95 the MLP is one module (its layer CKAs are 0.96 and 0.99): /2/Gemm (512 -> 256) is
    removed and a 512 -> 256 Gemm sewn in its place. Oracles: the ONNX checker and onnxruntime run the result;
    parameter arithmetic from the initializers — the removed layer's weights and bias out, the sewing layer's
    in, which for one dense layer is the same count (the paper's §5.2: DeepArc does not shrink the MLP)."""
    model = load_model(MLP)
    data = load_data("digits:train").cap_per_class(64)
    result = deeparc(model, data, threshold=0.95, device="cpu")
    assert result.removed == ["/2/Gemm"]
    [sewing] = result.sewing
    assert sewing["op"] == "Gemm" and sewing["replaces"] == ["/2/Gemm"] and sewing["params"] == 512 * 256 + 256
    onnx.checker.check_model(result.model, full_check=True)
    x, y = data.arrays()
    logits = make_session(result.model, "cpu").run(None, {"input": x.reshape(len(x), -1)})[0]
    assert logits.shape == (len(x), 10) and (logits.argmax(1) == y).mean() > 0.9
    constants = constant_values(model)
    removed = sum(constants[name].size for name in next(n for n in model.graph.node if n.name == "/2/Gemm").input[1:])
    assert count_params(result.model) == count_params(model) - removed + sewing["params"] == count_params(model)
    assert result.to_json()["params_removed"] == removed - sewing["params"] == 0


class _LinearSpan(torch.nn.Module):
    """8 -> 32 (ReLU) -> 32 -> 6 -> 3: the two middle layers have no activation, so what leaves them is a linear
    function of what enters them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.middle, self.last, self.out = (torch.nn.Linear(8, 32), torch.nn.Linear(32, 32),
                                                        torch.nn.Linear(32, 6), torch.nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.last(self.middle(torch.relu(self.first(x)))))


class _LinearConvSpan(torch.nn.Module):
    """A 1x1 conv without activation after a 3x3 conv: per pixel, a linear map of its input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.pointwise = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1)
        self.fc = torch.nn.Linear(8 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pointwise(torch.relu(self.conv(x))).flatten(1))


def test_a_fitted_linear_map_reproduces_linear_activations():
    """Oracle: activations made as x Aᵀ + c; least squares recovers A and c and reproduces y to 1e-5."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 12)).astype(np.float32)
    a, c = rng.standard_normal((5, 12)), rng.standard_normal(5)
    y = (x @ a.T + c).astype(np.float32)
    weight, bias, r2 = fit_linear(x, y)
    np.testing.assert_allclose(x @ weight.T + bias, y, atol=1e-5)
    np.testing.assert_allclose(weight, a, atol=1e-5)
    assert r2 == pytest.approx(1.0)


@pytest.mark.parametrize(("module", "shape", "op", "saved"), [
    (_LinearSpan(), (8,), "Gemm", 32 * 32 + 32),  # 32 -> 32 -> 6 replaced by one 32 -> 6 Gemm
    (_LinearConvSpan(), (1, 6, 6), "Conv", 0),  # 4 -> 8 1x1 conv replaced by a 4 -> 8 1x1 conv
])
def test_a_sewing_layer_over_a_linear_span_computes_what_the_span_did(tmp_path, module, shape, op, saved):
    """With every layer in one module, the span after the first layer (up to the classifier) is linear in its
    input: the sewn model's logits equal the original's to 1e-5 on held-out inputs (oracle: onnxruntime on the
    original), and the parameters fall by the removed layers' count less the sewing layer's."""
    model = load_model(export_onnx(module, shape, tmp_path / "m.onnx"))
    rng = np.random.default_rng(1)
    data = DataSource.from_arrays("random", rng.standard_normal((300, *shape)).astype(np.float32),
                                  rng.integers(0, 3, 300))
    result = deeparc(model, data, threshold=-1.0, device="cpu")
    [sewing] = result.sewing
    assert sewing["op"] == op and result.removed == sewing["replaces"] == [layer.name for layer in
                                                                           find_neuron_layers(model).layers[1:-1]]
    onnx.checker.check_model(result.model, full_check=True)
    x = rng.standard_normal((20, *shape)).astype(np.float32)
    original, sewn = (make_session(m, "cpu").run(None, {"input": x})[0] for m in (model, result.model))
    np.testing.assert_allclose(sewn, original, atol=1e-5, rtol=1e-5)
    assert count_params(model) - count_params(result.model) == result.to_json()["params_removed"] == saved


def test_sweep_reports_the_sewing_layer(tmp_path):
    """`onnxslice sweep --strategies deeparc`: the DeepArc point names the sewn layer, its parameters and the net
    parameters removed (0 for the MLP), and the accuracy is that of the sewn model (oracle: evaluated here)."""
    result = CliRunner().invoke(cli, ["sweep", str(MLP), "--data", "digits:train", "--eval-data", "digits:val",
                                      "--strategies", "deeparc", "--deeparc-threshold", "0.95", "--json"])
    assert result.exit_code == 0, result.stderr
    [point] = json.loads(result.stdout)["points"]
    assert point["removed"] == ["/2/Gemm"] and point["sewing"][0]["params"] == 512 * 256 + 256
    assert point["params_removed"] == 0 and point["compression"] == 0.0
    sewn = deeparc(load_model(MLP), load_data("digits:train").cap_per_class(64), 0.95, "cpu").model
    assert point["accuracy"] == pytest.approx(accuracy(sewn, load_data("digits:val"), "cpu")["accuracy"])


def test_deeparc_removes_the_residual_convs_of_the_cnn():
    """Oracle: parameter arithmetic — with all layers in one module, the two 16 -> 16 convs of the residual block
    are bypassed as one span (same shapes); the stride-2 conv (16x8x8 -> 32x4x4) cannot be sewn by a 1x1 conv
    and stays; the 512 -> 64 classifier.1 is sewn by a Gemm of its own size. The parameters fall by exactly the
    residual convs' weights and biases, and the result still runs."""
    model = load_model(CNN)
    result = deeparc(model, load_data("digits:train").cap_per_class(10), threshold=0.0, device="cpu")
    convs = ["/features/features.2/conv1/conv1.0/Conv", "/features/features.2/conv2/conv2.0/Conv"]
    assert result.removed == [*convs, "/classifier/classifier.1/Gemm"]
    assert "no sewing layer" in result.kept["/features/features.3/features.3.0/Conv"]
    [sewing] = result.sewing
    assert sewing["replaces"] == ["/classifier/classifier.1/Gemm"] and sewing["params"] == 512 * 64 + 64
    constants = constant_values(model)
    nodes = {node.name: node for node in model.graph.node}
    removed = sum(constants[name].size for layer in convs for name in nodes[layer].input[1:])
    assert count_params(result.model) == count_params(model) - removed
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert make_session(result.model, "cpu").run(None, {"input": x})[0].shape == (2, 10)
