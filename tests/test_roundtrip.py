"""ONNX → PyTorch → ONNX round trip and masked training (onnxslice.maintain.roundtrip).

Oracles: onnxruntime on the original file (the round trip without training must reproduce it, rtol 1e-5);
the per-neuron tensors read straight from the ONNX initializers of the original and of the exported model
(frozen entries must be bit-identical after training with weight decay, trained ones must move).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

from onnxslice.data import DataSource
from onnxslice.files import sha256_of
from onnxslice.graph import NeuronLayer, constant_values, find_neuron_layers, load_model
from onnxslice.maintain.roundtrip import FrozenGuard, Trainable, export, train_masked
from onnxslice.maintain.training import TrainingOptions, neuron_vectors
from onnxslice.runtime import Runner, input_name, make_session
from onnxslice.slicing.artifact import LayerSlice, Slice
from tests.helpers import CNN, MLP, MODELS, export_onnx


def neuron_rows(model: onnx.ModelProto) -> list[list[np.ndarray]]:
    """Per neuron layer (in graph order), its per-neuron tensors read from the ONNX initializers with the neuron
    axis moved first: the weight (rows of Conv / Gemm transB=1, columns of MatMul / Gemm transB=0), and every
    constant of the node and its tail with one value per neuron (bias, BatchNormalization scale and shift...)."""
    constants = constant_values(model)
    nodes = {node.name: node for node in model.graph.node}
    result = []
    for layer in find_neuron_layers(model).layers:
        node = nodes[layer.name]
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        weight = constants[layer.weight]
        tensors = [weight if layer.op_type == "Conv" or trans_b else weight.T]
        for other in [node, *(nodes[name] for name in layer.tail)]:
            for name in other.input:
                if name != layer.weight and name in constants and constants[name].size == layer.size > 1:
                    tensors.append(constants[name].reshape(layer.size, -1))
        result.append(tensors)
    return result


def changed_neurons(before: onnx.ModelProto, after: onnx.ModelProto) -> list[np.ndarray]:
    """Per layer, a boolean per neuron: any of its tensors' entries differs (bit for bit)."""
    pairs = zip(neuron_rows(before), neuron_rows(after), strict=True)
    return [np.any([(a.reshape(len(a), -1) != b.reshape(len(b), -1)).any(axis=1) for a, b in zip(x, y, strict=True)],
                   axis=0) for x, y in pairs]


def mean_activation_slice(path, data: DataSource, keep: float = 0.5) -> Slice:
    """A hand-made slice: per hidden layer the ``keep`` fraction of neurons with the largest mean |activation| on
    ``data`` (onnxruntime); its per-category lists name the data's classes (the "old task")."""
    model = load_model(path)
    layers = find_neuron_layers(model).hidden
    runner = Runner.create(model, "cpu")
    x, _ = runner.prepare(data).arrays()
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.extend([onnx.ValueInfoProto(name=layer.output) for layer in layers])
    acts = make_session(probe, "cpu").run([layer.output for layer in layers], {input_name(model): x})
    chosen = {}
    for layer, act in zip(layers, acts, strict=True):
        axis = layer.channel_axis % act.ndim
        mean = np.abs(np.moveaxis(act, axis, 0).reshape(layer.size, -1)).mean(axis=1)
        kept = sorted(np.argsort(-mean, kind="stable")[:max(1, int(keep * layer.size))].tolist())
        chosen[layer.name] = LayerSlice(layer.size, kept, {str(c): kept for c in data.classes})
    return Slice(model_sha256=sha256_of(path), layers=chosen, strategy="mean-activation")


class MatMulMLP(nn.Module):
    """Explicit ``x @ W + b`` layers: the exporter writes MatMul + Add (weights and biases become buffers in
    onnx2torch, not nn.Parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(64, 24) * 0.2), nn.Parameter(torch.randn(24) * 0.1)
        self.w2, self.b2 = nn.Parameter(torch.randn(24, 10) * 0.2), nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2


def _probe(model: onnx.ModelProto, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random((5, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def matmul_mlp(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    return export_onnx(MatMulMLP(), (64,), tmp_path_factory.mktemp("mm") / "matmul.onnx")


@pytest.mark.parametrize("name, shape", [("mlp", (64,)), ("cnn", (1, 8, 8)), ("jax", (8, 8, 1)), ("matmul", (64,))])
def test_round_trip_without_training_reproduces_the_original(name: str, shape: tuple[int, ...], matmul_mlp) -> None:
    """Oracle: onnxruntime on the original file; the exported model agrees within rtol 1e-5."""
    path = {"mlp": MLP, "cnn": CNN, "jax": MODELS / "jax_cnn_digits.onnx", "matmul": matmul_mlp}[name]
    model = load_model(path)
    x = _probe(model, shape)
    exported = export(Trainable.from_onnx(model), x)
    expected = make_session(model, "cpu").run(None, {input_name(model): x})[0]
    got = make_session(exported, "cpu").run(None, {input_name(exported): x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [i.name for i in exported.graph.input] == [input_name(model)]
    assert [o.name for o in exported.graph.output] == [o.name for o in model.graph.output]


@pytest.mark.slow
def test_round_trip_of_a_torchvision_resnet_with_batchnorm(tmp_path) -> None:
    """Oracle: onnxruntime on the original resnet18 export (random weights, BatchNormalization kept as nodes)."""
    torch.manual_seed(0)
    path = export_onnx(torchvision.models.resnet18(num_classes=10), (3, 32, 32), tmp_path / "r18.onnx",
                       keep_batchnorm=True)
    model = load_model(path)
    x = _probe(model, (3, 32, 32))[:2]
    trainable = Trainable.from_onnx(model)
    assert any("BatchNormalization" in t.path for t in trainable.tensors["/conv1/Conv"])
    exported = export(trainable, x)
    np.testing.assert_allclose(make_session(exported, "cpu").run(None, {"input": x})[0],
                               make_session(model, "cpu").run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
    assert [a.size for a in find_neuron_layers(exported).layers] == [a.size for a in find_neuron_layers(model).layers]


@pytest.mark.parametrize("name", ["mlp", "matmul"])
def test_masked_training_moves_only_the_chosen_neurons(name: str, matmul_mlp) -> None:
    """Oracle: the ONNX initializers of the original vs. the exported model. Adam with weight decay runs over
    every neuron tensor; the neurons not chosen must be bit-identical, and every chosen neuron must move."""
    path = {"mlp": MLP, "matmul": matmul_mlp}[name]
    model = load_model(path)
    trainable = Trainable.from_onnx(model)
    layers: list[NeuronLayer] = trainable.scan.layers
    chosen = {layer.name: list(range(0, layer.size, 3)) for layer in layers}
    guard = FrozenGuard(trainable.module, trainable.masks(neuron_vectors(trainable.scan, chosen, default=False)))
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((64, 64)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 64))
    train_masked(trainable, guard, [x], y, TrainingOptions(epochs=2, lr=1e-2, batch_size=16, weight_decay=0.1))
    exported = export(trainable, x[:4].numpy())
    for layer, changed in zip(layers, changed_neurons(model, exported), strict=True):
        expected = np.zeros(layer.size, bool)
        expected[chosen[layer.name]] = True
        np.testing.assert_array_equal(changed, expected, err_msg=layer.name)
    assert guard.trained == sum(t.size // a.size * len(chosen[a.name]) for a, tensors in
                                zip(layers, neuron_rows(model), strict=True) for t in tensors)
