"""Neuron-layer detection on exports that are not PyTorch's: scikit-learn via skl2onnx, and hand-written graphs
in the styles of other exporters (MatMul + Add bias, BatchNorm split into Mul / Add, a non-per-neuron Add).

Oracles: the architecture each graph was built with, numpy on the weights stored in the file, and
onnx2torch's own list of unsupported ops (ArrayFeatureExtractor of the ai.onnx.ml domain).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.graph import constant_values, find_neuron_layers, load_model
from onnxslice.profiling import profile_model
from onnxslice_cli.profile_cmd import profile as profile_command
from tests.helpers import sklearn_digits_mlp


@pytest.fixture(scope="module")
def sklearn_mlp(tmp_path_factory) -> str:
    return str(sklearn_digits_mlp(tmp_path_factory.mktemp("sklearn") / "sklearn_mlp.onnx", hidden=32))


def test_sklearn_mlp_layers_are_found_beside_ml_ops_and_the_label_output(sklearn_mlp):
    model = load_model(sklearn_mlp)
    assert {n.domain for n in model.graph.node} >= {"ai.onnx.ml"}
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    hidden, output = find_neuron_layers(model).layers
    ops = {n.name: n.op_type for n in model.graph.node}
    assert (hidden.op_type, hidden.size, hidden.is_output) == ("MatMul", 32, False)
    assert [ops[name] for name in hidden.tail] == ["Add", "Relu"]
    assert (output.size, output.is_output) == (10, True)


def test_sklearn_mlp_activation_metrics_work_and_equal_numpy_on_the_stored_weights(sklearn_mlp):
    data = load_data("digits:test:0-3")
    profile = profile_model(sklearn_mlp, data, ["avg", "var"], max_per_class=6, progress=False)
    model = load_model(sklearn_mlp)
    layer = find_neuron_layers(model).hidden[0]
    node = next(n for n in model.graph.node if n.name == layer.name)
    bias_node = next(n for n in model.graph.node if n.name == layer.tail[0])
    constants = constant_values(model)
    x, labels = data.arrays()
    hidden = np.maximum(x.reshape(len(x), 64) @ constants[node.input[1]] + constants[bias_node.input[1]], 0)
    for c in profile.categories:
        np.testing.assert_allclose(profile.contribution("avg", layer.name, c), hidden[labels == c].mean(0),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(profile.contribution("var", layer.name), hidden.var(0), rtol=1e-4, atol=1e-6)
    assert profile.similarity_matrix(layer.name, 0).shape == (32, 32)


def test_gradient_metrics_on_an_op_onnx2torch_cannot_convert_fail_with_one_line_naming_it(sklearn_mlp, tmp_path):
    data = load_data("digits:test:0-1", max_per_class=4)
    with pytest.raises(InputError, match=r"op ArrayFeatureExtractor \(node 'ArrayFeatureExtractor'\) is not "
                                         r"supported by onnx2torch"):
        profile_model(sklearn_mlp, data, ["avg", "taylor"], progress=False)
    out = tmp_path / "p.npz"
    result = CliRunner().invoke(profile_command, [sklearn_mlp, "--data", "digits:test:0-1", "--metric", "deeplift",
                                                  "-o", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("onnxslice: error:") and "ArrayFeatureExtractor" in result.output
    assert list(tmp_path.iterdir()) == []


def _exporter_style_model(path) -> str:
    """Conv(4) -> Mul(scale) -> Add(shift) -> Relu  [BatchNorm split into Mul/Add, as tf2onnx writes it]
    -> Conv(3) -> Add(a full (3, 6, 6) tensor, not a per-channel bias) -> Flatten
    -> MatMul(108 x 5) -> Add(bias) -> Tanh  [a Keras Dense] -> MatMul(5 x 2) -> Add -> logits."""
    rng = np.random.default_rng(0)
    constants = {
        "w1": rng.standard_normal((4, 1, 3, 3)), "scale": rng.random((4, 1, 1)) + 0.5,
        "shift": rng.standard_normal((4, 1, 1)), "w2": rng.standard_normal((3, 4, 3, 3)),
        "field": rng.standard_normal((3, 6, 6)), "w3": rng.standard_normal((108, 5)) * 0.1,
        "b3": rng.standard_normal(5), "w4": rng.standard_normal((5, 2)), "b4": rng.standard_normal(2),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "scale"], ["m1"], "bn_scale"),
        helper.make_node("Add", ["m1", "shift"], ["a1"], "bn_shift"),
        helper.make_node("Relu", ["a1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2"),
        helper.make_node("Add", ["c2", "field"], ["a2"], "add_field"),
        helper.make_node("Flatten", ["a2"], ["f"], "flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["d1"], "dense"),
        helper.make_node("Add", ["d1", "b3"], ["d2"], "dense_bias"),
        helper.make_node("Tanh", ["d2"], ["d3"], "tanh"),
        helper.make_node("MatMul", ["d3", "w4"], ["o1"], "logits_matmul"),
        helper.make_node("Add", ["o1", "b4"], ["logits"], "logits_bias"),
    ]
    graph = helper.make_graph(
        nodes, "exporter_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in constants.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_tails_follow_split_batchnorm_and_matmul_bias_but_stop_at_a_non_per_neuron_add(tmp_path):
    scan = find_neuron_layers(load_model(_exporter_style_model(tmp_path / "style.onnx")))
    layers = scan.by_name()
    assert [layer.name for layer in scan.hidden] == ["conv1", "conv2", "dense"]
    assert layers["conv1"].tail == ("bn_scale", "bn_shift", "relu1") and layers["conv1"].output == "r1"
    assert layers["conv2"].tail == () and layers["conv2"].output == "c2"
    assert layers["dense"].tail == ("dense_bias", "tanh") and layers["dense"].channel_axis == -1
    assert layers["logits_matmul"].is_output and layers["logits_matmul"].output == "logits"


def test_list_layers_prints_each_layer_once_with_its_size(tmp_path):
    result = CliRunner().invoke(profile_command, [_exporter_style_model(tmp_path / "style.onnx"), "--list-layers"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert [(row[0], row[2], row[3]) for row in rows] == [
        ("conv1", "4", "hidden"), ("conv2", "3", "hidden"), ("dense", "5", "hidden"), ("logits_matmul", "2", "output")]
