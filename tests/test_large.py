"""Models over protobuf's 2 GB limit, without making one: the limit is lowered to 20 kB here.

Oracles: protobuf itself, simulated — with the limit lowered, ``ModelProto.SerializeToString`` raises above
it exactly as protobuf does above 2 GB, so any in-memory copy, shape inference, checker, constant folding
or onnxruntime session of a large model fails these tests; and the large path's results equal the normal
path's (the same JSON figures, the same outputs of the written models in onnxruntime, onnx's own shape
inference on the whole model). A genuine 2.25 GB model is run by benchmarks/large_model.py (too big for CI).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxslice import large
from onnxslice.data import load_data
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP

LIMIT = 20_000  #: bytes; the example models (0.2 to 0.7 MB) and their pruned versions are all above it


def limit_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower the size that counts as large, and make serialising (or measuring) a bigger model fail as protobuf
    does above 2 GB (upb: ``ByteSize`` serialises too; ``CopyFrom`` does not)."""
    monkeypatch.setattr(large, "EXTERNAL_DATA_BYTES", LIMIT)
    serialize, byte_size = onnx.ModelProto.SerializeToString, onnx.ModelProto.ByteSize

    def limited(method):
        def call(self: onnx.ModelProto, **kwargs: object):
            if byte_size(self) > LIMIT:
                raise ValueError(f"Message onnx.ModelProto exceeds maximum protobuf size of {LIMIT} bytes")
            return method(self, **kwargs)
        return call

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", limited(serialize))
    monkeypatch.setattr(onnx.ModelProto, "ByteSize", limited(byte_size))


def save_with_external_data(source, path) -> None:
    onnx.save(onnx.load(str(source)), str(path), save_as_external_data=True, location=f"{path.name}.data",
              size_threshold=1024)


def write_slice(model_path, path) -> None:
    """Every other neuron of each hidden layer."""
    scan = find_neuron_layers(load_model(model_path))
    Slice(sha256_of(model_path), {layer.name: LayerSlice(layer.size, list(range(0, layer.size, 2)))
                                  for layer in scan.hidden}).save(path)


def run_cli(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_commands(model, slice_path, folder) -> dict:
    folder.mkdir()
    pruned, masked = folder / "pruned.onnx", folder / "masked.onnx"
    return {
        "restructure": run_cli("restructure", str(model), "--slice", str(slice_path), "-o", str(pruned),
                               "--latency-batch", "2", "--device", "cpu"),
        "mask": run_cli("mask", str(model), "--slice", str(slice_path), "-o", str(masked)),
        "evaluate": run_cli("evaluate", str(model), "--data", "digits:test", "--device", "cpu"),
        "evaluate pruned": run_cli("evaluate", str(pruned), "--data", "digits:test", "--device", "cpu"),
    }


def file_outputs(path, x: np.ndarray) -> np.ndarray:
    """Outputs of a written model, opened by onnxruntime from its path (external data read from beside it)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("source", [MLP, CNN], ids=["mlp", "cnn"])
def test_commands_on_large_models_equal_the_normal_path(tmp_path, monkeypatch, source):
    """restructure, mask and evaluate of a model stored with external data: the same figures and the same
    written models with the limit lowered (every model above it) as without; large outputs keep external data."""
    model, slice_path = tmp_path / "model.onnx", tmp_path / "slice.json"
    save_with_external_data(source, model)
    write_slice(model, slice_path)
    normal = run_commands(model, slice_path, tmp_path / "normal")
    limit_protobuf(monkeypatch)
    big = run_commands(model, slice_path, tmp_path / "large")

    assert normal["restructure"]["external_data"] is None and normal["mask"]["external_data"] is None
    assert big["restructure"]["external_data"] == "pruned.onnx.data"
    assert big["mask"]["external_data"] == "masked.onnx.data"
    assert sorted(p.name for p in (tmp_path / "large").iterdir()) == [
        "masked.onnx", "masked.onnx.data", "pruned.onnx", "pruned.onnx.data"]
    same = {"restructure": ["params_before", "params_after", "macs_before", "macs_after", "max_abs_diff",
                            "layers", "channels_removed", "kept_whole"],
            "mask": ["params", "params_kept", "zeroed"],
            "evaluate": ["accuracy", "per_class", "samples", "params", "macs"],
            "evaluate pruned": ["accuracy", "per_class", "samples", "params", "macs"]}
    for command, keys in same.items():
        assert {k: big[command][k] for k in keys} == {k: normal[command][k] for k in keys}, command
    assert big["restructure"]["params_after"] < big["restructure"]["params_before"]

    x = load_data("digits:test").arrays()[0][:32].reshape(-1, *([1, 8, 8] if source == CNN else [64]))
    for name in ("pruned.onnx", "masked.onnx"):
        np.testing.assert_array_equal(file_outputs(tmp_path / "large" / name, x),
                                      file_outputs(tmp_path / "normal" / name, x))


def test_shapes_of_a_large_model_are_onnx_shape_inference_on_the_whole_model(monkeypatch):
    """large.infer_shapes (weight-free twin, shapes copied back) gives what onnx infers on the whole model,
    and leaves the weights in place."""
    model = onnx.load(str(CNN))
    del model.graph.value_info[:]
    expected = onnx.shape_inference.infer_shapes(model, data_prop=True)
    limit_protobuf(monkeypatch)
    inferred = large.infer_shapes(model)
    assert [str(v) for v in inferred.graph.value_info] == [str(v) for v in expected.graph.value_info]
    assert [str(v) for v in inferred.graph.output] == [str(v) for v in expected.graph.output]
    assert inferred.graph.initializer == model.graph.initializer
    assert len(large.without_weights(model).graph.initializer) == len(model.graph.initializer)
    assert len(large.without_weights(model).SerializeToString()) < LIMIT and large.is_large(model)


def test_missing_external_data_file_is_one_line_naming_it(tmp_path):
    """A model whose weights file is gone: exit 2, one line naming the file (onnx's own error message)."""
    model = tmp_path / "model.onnx"
    save_with_external_data(MLP, model)
    (tmp_path / "model.onnx.data").unlink()
    result = CliRunner().invoke(cli, ["evaluate", str(model), "--data", "digits:test"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"onnxslice: error: {model}: not a readable ONNX model")
    assert "model.onnx.data" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_foldable_part_over_the_limit_stays_unfolded_and_its_layer_is_kept(tmp_path, monkeypatch):
    """A weight computed by a Transpose: folded below the limit (a neuron layer), left unfolded above it (the
    layer is skipped with the reason, so never sliced); the model still runs and --json stays one JSON object."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (128, 64)), ("w2", (128, 10)))]
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])], weights)
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    normal = find_neuron_layers(load_model(path))
    assert [layer.name for layer in normal.hidden] == ["MatMul_1"]
    limit_protobuf(monkeypatch)
    big = find_neuron_layers(load_model(path))
    assert big.hidden == [] and "not a constant" in big.skipped["MatMul_1"]
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--data", "digits:test", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 540
