"""Loading canonicalises a graph once and finds its neuron layers, for exports of several frameworks.

Oracles: onnxruntime outputs of the file as written by the exporter (canonicalising must not change the
function), the exporter's node names, and the architecture each test model was built with.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from onnxslice.graph import find_neuron_layers, load_model
from tests.helpers import CNN, MLP, MODELS, export_onnx

JAX_CNN = MODELS / "jax_cnn_digits.onnx"


def _outputs(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def resnet_with_identities(tmp_path_factory) -> str:
    """torch's legacy exporter dedups equal initializers (the zero BN shifts) through Identity nodes."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("graph") / "resnet18.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=10), (3, 32, 32), path)
    return str(path)


@pytest.mark.parametrize(("path", "shape"), [(MLP, (64,)), (CNN, (1, 8, 8)), (JAX_CNN, (8, 8, 1))])
def test_canonical_form_computes_what_the_export_computes(path, shape):
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    np.testing.assert_allclose(_outputs(load_model(path), x), _outputs(str(path), x), rtol=1e-5, atol=1e-5)


def test_identity_nodes_are_removed_and_node_names_kept(resnet_with_identities):
    original = onnx.load(resnet_with_identities)
    assert any(n.op_type == "Identity" for n in original.graph.node)
    canonical = load_model(resnet_with_identities)
    assert not any(n.op_type == "Identity" for n in canonical.graph.node)
    assert {n.name for n in original.graph.node if n.op_type != "Identity"} == {n.name for n in canonical.graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(_outputs(canonical, x), _outputs(resnet_with_identities, x), rtol=1e-4, atol=1e-5)


def test_example_layers_match_their_architectures():
    mlp = find_neuron_layers(load_model(MLP))
    assert [(layer.size, layer.is_output) for layer in mlp.layers] == [(512, False), (256, False), (10, True)]
    cnn = find_neuron_layers(load_model(CNN))
    assert [layer.size for layer in cnn.hidden] == [16, 16, 16, 32, 64]
    assert [layer.op_type for layer in cnn.hidden] == ["Conv"] * 4 + ["Gemm"]
    # the residual block's second conv has no tail: its output meets the skip branch in Add
    assert cnn.hidden[2].tail == ()


def test_nhwc_jax_export_layers_follow_transposes_to_the_activation():
    """jax2onnx wraps each Conv in NCHW<->NHWC Transposes; the ReLU after the Transpose is the tail's end."""
    model = load_model(JAX_CNN)
    scan = find_neuron_layers(model)
    conv1, conv2, dense, output = scan.layers
    ops = {n.name: n.op_type for n in model.graph.node}
    assert [ops[name] for name in conv1.tail] == ["BatchNormalization", "Transpose", "Relu"]
    assert (conv1.channel_axis, conv2.channel_axis, dense.channel_axis) == (3, 3, -1)
    assert output.is_output and output.size == 10
    # SAME padding was made explicit (onnx2torch cannot read auto_pad)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert {a.name for a in conv.attribute} >= {"pads"} and "auto_pad" not in {a.name for a in conv.attribute}


def test_layers_whose_weight_is_computed_are_skipped_with_a_reason(tmp_path):
    class Bilinear(torch.nn.Module):
        def forward(self, x):
            return x @ x.transpose(0, 1)

    path = export_onnx(Bilinear(), (4,), tmp_path / "computed.onnx")
    scan = find_neuron_layers(load_model(path))
    assert scan.layers == [] and "not a constant" in next(iter(scan.skipped.values()))
