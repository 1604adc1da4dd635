"""Exports people make beyond a float32 model with a dynamic batch: a fixed batch size, float16 weights, and
bfloat16 or float16 weights cast to float32 in the graph (mixed-precision exports; a model that computes in bfloat16
is refused: onnxruntime's CPU provider has no bfloat16 Conv, Gemm, MatMul or Relu).

Oracles: the same PyTorch network exported with a dynamic batch in float32 — its accuracy and its profile (computed
by the code paths every other test covers) — against which the static-batch export must agree exactly in accuracy
and to float32 rounding in contributions, and the float16 export to float16 rounding; for the low-precision
weights, the float32 original's accuracy and the masked model's outputs.
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

from onnxslice.data import load_data
from onnxslice.graph import load_model
from onnxslice.large import FLOAT_TYPES
from onnxslice.measure.evaluate import evaluate
from onnxslice.precision import STORED_KEY, restore_stored_types
from onnxslice.profiling import profile_model
from onnxslice.profiling.artifact import Profile
from onnxslice.runtime import make_session, run_session
from onnxslice_cli.main import cli
from tests.helpers import CNN


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


BFLOAT16, FLOAT16 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16
#: the spacing of the values of a type just above 1 (its relative rounding is half of it)
EPSILON = {BFLOAT16: 2.0**-7, FLOAT16: 2.0**-10}


def _stored_in(source: Path, out: Path, stored: int) -> Path:
    """``source`` as a mixed-precision export writes it: each float32 weight stored in ``stored`` and cast to float32
    where it is used, the input and the output in ``stored`` too."""
    model = onnx.load(str(source))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        values = onnx.numpy_helper.to_array(init).astype(onnx.helper.tensor_dtype_to_np_dtype(stored))
        casts.append(onnx.helper.make_node("Cast", [f"{init.name}_stored"], [init.name], to=onnx.TensorProto.FLOAT))
        init.CopyFrom(onnx.numpy_helper.from_array(values, f"{init.name}_stored"))
    (given,), (given_out,) = graph.input, graph.output
    for node in graph.node:
        node.input[:] = [f"{name}_float" if name == given.name else name for name in node.input]
        node.output[:] = [f"{name}_float" if name == given_out.name else name for name in node.output]
    nodes = [onnx.helper.make_node("Cast", [given.name], [f"{given.name}_float"], to=onnx.TensorProto.FLOAT), *casts,
             *graph.node, onnx.helper.make_node("Cast", [f"{given_out.name}_float"], [given_out.name], to=stored)]
    del graph.node[:]
    graph.node.extend(nodes)
    given.type.tensor_type.elem_type = given_out.type.tensor_type.elem_type = stored
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("stored", [BFLOAT16, FLOAT16], ids=["bfloat16", "float16"])
def test_weights_stored_in_low_precision_go_through_the_chain_and_stay_in_it(stored, tmp_path):
    """The digits CNN with its weights, input and output in bfloat16 (float16) through evaluate -> profile (avg,
    taylor) -> slice -> mask -> restructure (verified) -> evaluate on the command line. Oracles: the float32
    original's accuracy (within 1 point: the weights are rounded to 8 significant bits); the masked model written
    from the same slice, whose outputs the restructured model's must equal within two steps of the type at the
    output's scale; the written files' declared types."""
    model = _stored_in(CNN, tmp_path / "model.onnx", stored)
    runs = {
        "evaluate": ["evaluate", str(model), "--data", "digits:test", "--baseline", str(CNN)],
        "profile": ["profile", str(model), "--data", "digits:train", "--metric", "avg", "--metric", "taylor", "-q",
                    "-o", str(tmp_path / "p.npz")],
        "slice": ["slice", str(model), "--profile", str(tmp_path / "p.npz"), "--metric", "taylor", "--strategy",
                  "global", "--ratio", "0.5", "-o", str(tmp_path / "s.json")],
        "mask": ["mask", str(model), "--slice", str(tmp_path / "s.json"), "-o", str(tmp_path / "masked.onnx")],
        "restructure": ["restructure", str(model), "--slice", str(tmp_path / "s.json"), "--data", "digits:test",
                        "--latency-seconds", "0", "-o", str(tmp_path / "pruned.onnx")],
        "evaluate pruned": ["evaluate", str(tmp_path / "pruned.onnx"), "--data", "digits:test", "--baseline",
                            str(tmp_path / "masked.onnx")],
    }
    results = {}
    for step, args in runs.items():
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, (step, result.stderr)
        results[step] = json.loads(result.stdout)
    assert abs(results["evaluate"]["accuracy"] - results["evaluate"]["baseline"]["accuracy"]) <= 0.01
    profile = Profile.load(tmp_path / "p.npz")
    assert all(profile.contribution(metric, layer).dtype in (np.float32, np.float64)
               for metric in ("avg", "taylor") for layer in profile.layers)
    assert results["restructure"]["channels_removed"] > 0

    masked, pruned = (onnx.load(str(tmp_path / name)) for name in ("masked.onnx", "pruned.onnx"))
    for written in (masked, pruned):
        assert written.graph.input[0].type.tensor_type.elem_type == stored
        assert written.graph.output[0].type.tensor_type.elem_type == stored
        assert {init.data_type for init in written.graph.initializer if init.data_type in FLOAT_TYPES} == {stored}
        assert STORED_KEY not in {prop.key for prop in written.metadata_props}
    x = load_data("digits:test").arrays()[0].reshape(-1, 1, 8, 8)
    want, got = (run_session(make_session(written, "cpu"), x)[0].astype(np.float32) for written in (masked, pruned))
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * EPSILON[stored] * np.abs(want).max())
    again = results["evaluate pruned"]
    assert abs(again["accuracy"] - again["baseline"]["accuracy"]) <= 0.01


def test_finetune_of_bfloat16_weights_writes_a_checked_model_with_bfloat16_scores(tmp_path):
    """Fine-tuning trains float32 parameters and writes them as float32 (trained values are not bfloat16), from a
    float32 input to the bfloat16 scores. Oracles: finetune's own check of the export against the trained module
    before writing (else exit 1), and its contract: the written epoch is never below the model given."""
    model = _stored_in(CNN, tmp_path / "model.onnx", BFLOAT16)
    result = CliRunner().invoke(cli, ["finetune", str(model), "--data", "digits:train", "--epochs", "1",
                                      "--max-per-class", "20", "--json", "-o", str(tmp_path / "tuned.onnx")])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accuracy_after"] >= report["accuracy_before"]
    assert onnx.load(str(tmp_path / "tuned.onnx")).graph.output[0].type.tensor_type.elem_type == BFLOAT16


def test_written_weights_take_the_stored_type_where_it_holds_their_values_exactly():
    """Oracle: the values themselves — a float32 weight that bfloat16 holds exactly is stored in it (with a Cast),
    one it does not (a value restructure computed) stays float32, unchanged, so the model computes the same."""
    exact, inexact = np.array([1.0, -0.5, 3.0], np.float32), np.array([0.1, 1 / 3], np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "exact"], ["y"]), onnx.helper.make_node("Mul", ["y", "inexact"], ["z"])],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [3])],
        [onnx.numpy_helper.from_array(exact, "exact"), onnx.numpy_helper.from_array(inexact[[0, 1, 1]], "inexact")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.metadata_props.add(key=STORED_KEY, value=json.dumps([BFLOAT16]))
    restored = restore_stored_types(model)
    types = {init.name: init.data_type for init in restored.graph.initializer}
    assert types == {"exact__bfloat16": BFLOAT16, "inexact": onnx.TensorProto.FLOAT}
    assert not restored.metadata_props
    x = np.array([0.25, 2.0, -1.0], np.float32)
    got = make_session(restored, "cpu").run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, (x + exact) * inexact[[0, 1, 1]])


@pytest.mark.parametrize(("network", "op"), [
    (_network, "Conv"),
    (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval(), "Gemm"),
], ids=["conv", "dense"])
def test_a_model_that_computes_in_bfloat16_is_refused_in_one_line_naming_the_file_and_the_op(network, op, tmp_path):
    """``module.bfloat16()`` exported as is: onnxruntime's CPU provider has no bfloat16 kernel for the op (Conv's
    schema before opset 22 allows no bfloat16 at all). Oracle: onnxruntime's own refusal, named."""
    path = tmp_path / "bf16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network().bfloat16(), (torch.randn(2, 1, 8, 8).bfloat16(),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--data", "digits:test"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr and op in result.stderr and "bfloat16" in result.stderr


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
