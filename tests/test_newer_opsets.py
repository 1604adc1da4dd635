"""Graphs of opsets 18–23 (PyTorch's dynamo exporter) through onnx2torch, and display names from the exporters.

Oracles: onnxruntime on the original graph — the rewritten graph (older ops) and the converted PyTorch module must
both reproduce it on random inputs; for the end-to-end checks, the legacy export (opset 17) of the same module,
whose Taylor contributions the dynamo export must reproduce and whose layers must get the same display names.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxslice.data import load_data
from onnxslice.graph import canonicalize, find_neuron_layers, load_model
from onnxslice.older_ops import rewrite_newer_ops
from onnxslice.profiling import profile_model
from onnxslice.runtime import make_session
from onnxslice.torch_bridge import to_torch
from onnxslice_cli.main import cli
from tests.helpers import export_onnx


def _graph(op: str, attributes: dict, shape: list[int], opset: int, outputs: int = 1,
           extra: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """x (shape) -> op -> y0..yn, extra constants as further inputs; canonicalised (shapes inferred)."""
    extra = extra or {}
    names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, ["x", *extra], names, name="the_op", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              [numpy_helper.from_array(v, k) for k, v in extra.items()])
    return canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return make_session(model, "cpu").run(None, {"x": x})


CASES = {
    "gelu": ("Gelu", {}, [4, 9], 20, 1, None),
    "gelu-tanh": ("Gelu", {"approximate": "tanh"}, [4, 9], 20, 1, None),
    "split-num-outputs": ("Split", {"axis": 1, "num_outputs": 3}, [4, 7], 18, 3, None),
    "split-sizes": ("Split", {"axis": -1}, [4, 7], 18, 2, {"split": np.array([2, 5], np.int64)}),
    "rms-last-axis": ("RMSNormalization", {"epsilon": 1e-3}, [4, 3, 6], 23, 1,
                      {"scale": np.linspace(0.5, 2, 6, dtype=np.float32)}),
    "rms-axis-1": ("RMSNormalization", {"axis": 1}, [4, 3, 6], 23, 1,
                   {"scale": np.linspace(0.5, 2, 18, dtype=np.float32).reshape(3, 6)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_rewritten_op_and_its_converted_module_equal_onnxruntime_on_the_original(case):
    op, attributes, shape, opset, outputs, extra = CASES[case]
    original = _graph(op, attributes, shape, opset, outputs, extra)
    x = np.random.default_rng(0).normal(0, 2, shape).astype(np.float32)
    want = _run(original, x)
    rewritten = rewrite_newer_ops(onnx.ModelProto.FromString(original.SerializeToString()))
    assert op not in {node.op_type for node in rewritten.graph.node}
    assert "the_op" in {node.name for node in rewritten.graph.node}  # the first output's producer keeps the name
    onnx.checker.check_model(rewritten, full_check=True)
    for got, expected in zip(_run(rewritten, x), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        converted = to_torch(original).module(torch.from_numpy(x))
    for got, expected in zip(converted if outputs > 1 else [converted], want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


class _Mlp(torch.nn.Module):
    """LayerNorm, Linear→GELU→Linear: at opset 20 the dynamo exporter writes Gelu and LayerNormalization."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm, self.fc1, self.act, self.fc2 = (torch.nn.LayerNorm(64), torch.nn.Linear(64, 32), torch.nn.GELU(),
                                                   torch.nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _dynamo_export(net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(path), dynamo=True, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1024)}})
    return path


@pytest.fixture(scope="module")
def mlp_exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mlp")
    net = _Mlp().eval()
    return {"dynamo": _dynamo_export(net, torch.randn(2, 64), folder / "dynamo20.onnx", opset=20),
            "legacy": export_onnx(net, (64,), folder / "legacy17.onnx")}


def _torch_taylor(net: _Mlp, x: np.ndarray, category: int) -> np.ndarray:
    """Taylor contributions of the GELU outputs on the PyTorch original: mean over samples of |a · ∂logit/∂a|."""
    captured = []
    handle = net.act.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = net(torch.from_numpy(x.reshape(len(x), -1)))
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(logits[:, category].sum(), captured)
    return (captured[0] * gradient).abs().mean(0).detach().numpy()


def test_profile_taylor_of_an_opset_20_dynamo_export_equals_taylor_on_the_pytorch_original(mlp_exports, tmp_path):
    dynamo = load_model(mlp_exports["dynamo"])
    assert dynamo.opset_import[0].version == 20 and "Gelu" in {node.op_type for node in dynamo.graph.node}
    result = CliRunner().invoke(cli, ["profile", str(mlp_exports["dynamo"]), "--data", "digits:test:0-2",
                                      "--metric", "taylor", "--metric", "deeplift", "-q", "-o",
                                      str(tmp_path / "p.npz")])
    assert result.exit_code == 0, result.output
    data = load_data("digits:test:0-2")
    got = profile_model(mlp_exports["dynamo"], data, ["taylor"], 8, "cpu", progress=False)
    assert len(got.layers) == 1  # fc1 observed after its GELU
    x, y = data.arrays()
    for category in (0, 1, 2):
        want = _torch_taylor(_Mlp().eval(), x[y == category].astype(np.float32), category)
        np.testing.assert_allclose(got.contribution("taylor", got.layers[0], category), want, rtol=1e-4, atol=1e-7)


def test_the_round_trip_of_an_opset_20_graph_reproduces_it(mlp_exports):
    """Convert, export again (legacy exporter, opset 17) and compare with onnxruntime on the original
    (:func:`export` verifies the module against its export, itself an onnxruntime oracle)."""
    from onnxslice.maintain.roundtrip import Trainable, export

    original = load_model(mlp_exports["dynamo"])
    x = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    written = export(Trainable.from_onnx(original), x)
    np.testing.assert_allclose(make_session(written, "cpu").run(None, {"input": x})[0],
                               make_session(original, "cpu").run(None, {"input": x})[0], rtol=1e-4, atol=1e-5)


def test_layers_of_both_exporters_are_shown_by_module_path(mlp_exports):
    """Oracle: the module paths of the PyTorch module (fc1, fc2), whichever exporter wrote the names."""
    for path in mlp_exports.values():
        listing = json.loads(CliRunner().invoke(cli, ["profile", str(path), "--list-layers", "--json"]).stdout)
        assert [layer["display"] for layer in listing["layers"]] == ["fc1", "fc2"]


@pytest.mark.slow
def test_inspect_of_a_dynamo_resnet18_shows_module_paths(tmp_path):
    """Oracle: torchvision's module paths (``layer1.0.conv1``), equal to those read from the legacy export of the
    same network; slice.json stays keyed by node name and carries the display name."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=4).eval()
    dynamo = _dynamo_export(net, torch.randn(2, 3, 32, 32), tmp_path / "dynamo.onnx")
    legacy = export_onnx(net, (3, 32, 32), tmp_path / "legacy.onnx")
    names = {kind: [layer.display for layer in find_neuron_layers(load_model(path)).layers]
             for kind, path in (("dynamo", dynamo), ("legacy", legacy))}
    assert names["dynamo"] == names["legacy"] and "layer1.0.conv1" in names["dynamo"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(16, 3, 32, 32)).astype(np.float32), y=np.arange(16) % 4)
    sliced = CliRunner().invoke(cli, ["slice", str(dynamo), "--data", str(tmp_path / "data.npz"), "--metric", "avg",
                                      "--strategy", "global", "--ratio", "0.5", "-o", str(tmp_path / "s.json")])
    assert sliced.exit_code == 0, sliced.output
    layers = json.loads((tmp_path / "s.json").read_text())["layers"]
    assert all(name.startswith("node_") for name in layers)
    assert {layer["display"] for layer in layers.values()} >= {"layer1.0.conv1", "layer4.1.conv1"}
    shown = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s.json")])
    assert shown.exit_code == 0 and "layer1.0.conv1" in shown.output and "node_Conv_296" in shown.output


def test_legacy_names_of_nested_sequentials_become_module_paths():
    """Oracle: the PyTorch original's named_modules (a Sequential inside a block: ``features.2.conv1.0``)."""
    from tests.helpers import CNN, example_torch_model

    modules = [name for name, module in example_torch_model("cnn").named_modules()
               if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)]
    assert [layer.display for layer in find_neuron_layers(load_model(CNN)).layers] == modules


# -- ops that pass the version converter unchanged, and shapes onnx2torch needs (the export corpus, issue 16) -------

def _pad_graph(opset: int, mode: str, axes: bool = False) -> onnx.ModelProto:
    """x (N, 3, 5) -> Pad (constant pads, optionally ``axes``) -> Relu: the dynamo exporter's window padding in
    Swin, at the opset it writes (20)."""
    consts = {"pads": np.array([1, 2] if axes else [0, 0, 1, 0, 0, 2], np.int64)}
    inputs = ["x", "pads"]
    if mode == "constant":
        consts["value"] = np.array(0.5, np.float32)
        inputs.append("value")
    if axes:
        consts["axes"] = np.array([2], np.int64)
        inputs += [""] * (3 - len(inputs)) + ["axes"]
    nodes = [helper.make_node("Pad", inputs, ["p"], name="the_pad", mode=mode),
             helper.make_node("Relu", ["p"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_a_pad_of_opset_20_converts_to_pytorch_and_equals_onnxruntime(mode):
    """Oracle: onnxruntime on the original opset-20 graph. onnx's version converter has no adapter for Pad from
    opset 19 down, so the node passes it under a private domain (it means the same at opset 13) and comes back."""
    from onnxslice.torch_bridge import _supported_opset

    original = _pad_graph(20, mode)
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    with torch.no_grad():
        got = to_torch(original).module(torch.from_numpy(x)).numpy()
    want = _run(original, x)[0]
    assert want.shape == (2, 3, 8)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    older = _supported_opset(onnx.ModelProto.FromString(original.SerializeToString()))
    assert [(o.domain, o.version) for o in older.opset_import] == [("", 17)]
    assert [(n.op_type, n.domain) for n in older.graph.node] == [("Pad", ""), ("Relu", "")]
    onnx.checker.check_model(older, full_check=True)
    np.testing.assert_allclose(_run(older, x)[0], want, rtol=1e-6)


def test_a_pad_with_axes_is_not_passed_through_and_the_error_names_the_converter():
    """A Pad with ``axes`` (opset 18) does not mean the same at opset 17: it is left to the converter, which
    refuses it — an InputError naming the opsets, not a wrong model."""
    from onnxslice.errors import InputError

    with pytest.raises(InputError, match="cannot convert opset 20 down to 17"):
        to_torch(_pad_graph(20, "constant", axes=True))


def test_a_layer_normalization_behind_computed_pads_converts_with_its_scales_shape():
    """Oracle: onnxruntime. Pads computed at run time (as the legacy exporter writes Swin's patch merging) leave
    the LayerNormalization input's shape unknown to shape inference; onnx2torch read it as 0 and failed at run
    time ('normalized_shape = [0]'); the normalised dims come from the constant scale instead."""
    rng = np.random.default_rng(0)
    consts = {"scale": rng.uniform(0.5, 2, 6).astype(np.float32), "bias": rng.normal(size=6).astype(np.float32),
              "zero": np.array([0], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),  # pads computed from x: all zero
             helper.make_node("Gather", ["shape", "zero"], ["n"], name="n"),
             helper.make_node("Sub", ["n", "n"], ["z"], name="z"),
             helper.make_node("Concat", ["z", "z", "z", "z", "z", "z"], ["pads"], name="pads", axis=0),
             helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
             helper.make_node("LayerNormalization", ["p", "scale", "bias"], ["y"], name="norm", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    shapes = {info.name: info.type.tensor_type.shape for info in model.graph.value_info}
    assert not shapes["p"].dim[-1].HasField("dim_value")  # the case: shape inference cannot say
    x = rng.normal(size=(3, 4, 6)).astype(np.float32)
    with torch.no_grad():
        got = to_torch(model).module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run(model, x)[0], rtol=1e-5, atol=1e-6)
