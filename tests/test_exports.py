"""Exports people make beyond a float32 model with a dynamic batch: a fixed batch size, and float16 weights.

Oracles: the same PyTorch network exported with a dynamic batch in float32 — its accuracy and its profile (computed
by the code paths every other test covers) — against which the static-batch export must agree exactly in accuracy
and to float32 rounding in contributions, and the float16 export to float16 rounding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from onnxslice.data import load_data
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import evaluate
from onnxslice.profiling import profile_model


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()


def _export(net: torch.nn.Module, path: Path, dynamic: bool, half: bool = False) -> Path:
    x = torch.randn(1, 1, 8, 8)
    net, x = (net.half(), x.half()) if half else (net, x)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    return {"dynamic": _export(_network(), folder / "dynamic.onnx", dynamic=True),
            "static": _export(_network(), folder / "static.onnx", dynamic=False),
            "fp16": _export(_network(), folder / "fp16.onnx", dynamic=True, half=True)}


def test_a_static_batch_of_one_evaluates_and_profiles_like_the_dynamic_export(exports):
    data = load_data("digits:test:0-4")
    dynamic, static = load_model(exports["dynamic"]), load_model(exports["static"])
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert evaluate(static, data, "cpu")["accuracy"] == evaluate(dynamic, data, "cpu")["accuracy"]
    want = profile_model(exports["dynamic"], data, ["avg"], 4, "cpu", progress=False)
    got = profile_model(exports["static"], data, ["avg"], 4, "cpu", progress=False)
    for layer in want.layers:
        np.testing.assert_allclose(got.contribution("avg", layer), want.contribution("avg", layer), rtol=1e-5)


def test_a_float16_model_takes_float32_data_and_profiles_in_float32(exports):
    data = load_data("digits:test:0-4")
    fp16 = load_model(exports["fp16"])
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    result = evaluate(fp16, data, "cpu")
    assert abs(result["accuracy"] - evaluate(load_model(exports["dynamic"]), data, "cpu")["accuracy"]) <= 0.02
    got = profile_model(exports["fp16"], data, ["avg"], 4, "cpu", progress=False)
    want = profile_model(exports["dynamic"], data, ["avg"], 4, "cpu", progress=False)
    for layer in want.layers:
        assert got.contribution("avg", layer).dtype != np.float16
        np.testing.assert_allclose(got.contribution("avg", layer), want.contribution("avg", layer), rtol=2e-2,
                                   atol=2e-3)



@pytest.mark.parametrize("kind", ["fp16", "static"])
def test_slice_mask_and_restructure_keep_the_users_type_and_batch(exports, kind, tmp_path):
    """Oracle: the written models' declared input type and shape equal the original's; restructure verifies
    itself against the mask (its own oracle) before writing."""
    from click.testing import CliRunner

    from onnxslice_cli.main import cli

    model = str(exports[kind])
    steps = [["slice", model, "--data", "digits:test", "--metric", "avg", "--strategy", "global", "--ratio", "0.5",
              "--round-to", "1", "-o", str(tmp_path / "s.json")],
             ["mask", model, "--slice", str(tmp_path / "s.json"), "-o", str(tmp_path / "masked.onnx")],
             ["restructure", model, "--slice", str(tmp_path / "s.json"), "-o", str(tmp_path / "pruned.onnx"),
              "--data", "digits:test"]]
    for args in steps:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.stderr)
    original = onnx.load(model).graph.input[0].type.tensor_type
    for name in ("masked.onnx", "pruned.onnx"):
        written = onnx.load(str(tmp_path / name)).graph.input[0].type.tensor_type
        assert written.elem_type == original.elem_type and written.shape == original.shape
    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    assert sum(np.prod(i.dims) for i in pruned.graph.initializer) < sum(
        np.prod(i.dims) for i in onnx.load(model).graph.initializer)


class _PooledNet(torch.nn.Module):
    """Conv-BN-ReLU, Conv-ReLU, spatial mean, ``view(-1, C)`` into a Linear: the dynamo exporter writes the view as
    a Reshape to the constant (-1, 16), whose batch axis shape inference cannot name."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.fc = torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.fc(x.mean((2, 3), keepdim=True).view(-1, 16))


@pytest.mark.slow
def test_the_dynamo_export_loses_the_same_channels_as_the_legacy_one(tmp_path):
    """Oracle: the legacy export of the same module (its Flatten is understood) — the same slice removes the same
    number of channels from both, and each restructured model equals its masked original (verify)."""
    from onnxslice.graph import find_neuron_layers
    from onnxslice.surgery.restructure import restructure
    from onnxslice.surgery.verify import verify

    torch.manual_seed(0)
    net, x = _PooledNet().eval(), torch.randn(2, 1, 8, 8)
    legacy = _export(net, tmp_path / "legacy.onnx", dynamic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp_path / "dynamo.onnx"), dynamo=True, input_names=["input"],
                          output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1024)}})
    removed = []
    for path in (legacy, tmp_path / "dynamo.onnx"):
        model = load_model(path)
        kept = {layer.name: list(range(0, layer.size, 2)) for layer in find_neuron_layers(model).hidden}
        pruned, report = restructure(model, kept)
        verify(model, pruned, kept)
        removed.append(report.channels_removed)
    assert removed[0] == removed[1] == 4 + 8
