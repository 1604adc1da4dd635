"""`onnxslice incremental`: freeze the old task's critical neurons, learn a new task with the rest.

Oracles: the ONNX initializers of the original vs. the new model (critical neurons and the old categories'
classifier rows bit-identical); `onnxslice mask` of the original with the same slice (the old-task model must
give the same outputs on old-task data); counts of the replayed samples from the data itself; exit code 2.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP, export_onnx, random_npz
from tests.test_roundtrip import changed_neurons, mean_activation_slice

OLD, NEW = "0-4", "5-9"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def incremental_json(*args: str) -> dict:
    code, out, err = run("incremental", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def outputs(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def task_a(request, tmp_path_factory: pytest.TempPathFactory):
    """(model, slice of task A made on digits:train:0-4) for each example model."""
    path = {"mlp": MLP, "cnn": CNN}[request.param]
    piece = tmp_path_factory.mktemp("inc") / f"{request.param}.json"
    mean_activation_slice(path, load_data(f"digits:train:{OLD}").cap_per_class(20), keep=0.4).save(piece)
    return path, piece


def test_critical_neurons_are_frozen_and_the_old_task_model_equals_the_masked_original(tmp_path, task_a) -> None:
    """New model: the slice's neurons and the classifier rows of classes 0-4 bit-identical to the original's, the
    other neurons trained. Old-task model: on digits:test:0-4 its outputs equal `onnxslice mask`'s of the
    original with the same slice."""
    path, piece_path = task_a
    new, old, masked = tmp_path / "new.onnx", tmp_path / "old.onnx", tmp_path / "masked.onnx"
    result = incremental_json(str(path), "--slice", str(piece_path), "--data", f"digits:train:{NEW}",
                              "--max-per-class", "30", "--epochs", "2", "--weight-decay", "0.01",
                              "--old-eval-data", f"digits:test:{OLD}", "-o", str(new), "--old-task-out", str(old))
    piece = Slice.load(piece_path)
    original = load_model(path)
    layers = find_neuron_layers(original).layers
    for layer, changed in zip(layers, changed_neurons(original, load_model(new)), strict=True):
        frozen = np.zeros(layer.size, bool)
        frozen[list(range(5)) if layer.is_output else piece.layers[layer.name].kept] = True
        assert not changed[frozen].any(), f"{layer.name}: a frozen neuron moved"
        assert changed[~frozen].mean() > 0.5, f"{layer.name}: the free neurons were not trained"
    assert result["old_classes"] == [0, 1, 2, 3, 4]

    code, _, err = run("mask", str(path), "--slice", str(piece_path), "-o", str(masked))
    assert code == 0, err
    x, _ = load_data(f"digits:test:{OLD}").arrays()
    x = x.reshape(len(x), -1) if path == MLP else x
    np.testing.assert_allclose(outputs(old, x), outputs(masked, x), rtol=1e-6, atol=1e-6)
    assert 0 <= result["task_a"] <= 1 and 0 <= result["task_b"] <= 1
    assert result["mean"] == pytest.approx((result["task_a"] + result["task_b"]) / 2)
    assert_task_a_both_ways(result, new, old, path, max_per_class=30)


def assert_task_a_both_ways(result: dict, new, old, path, max_per_class: int | None = None) -> None:
    """Oracle: onnxruntime on the written models. task_a is the old-task model's accuracy on task A over every
    class; task_a_task_known the new model's with the prediction taken among classes 0-4 only; task_a_new_model
    the new model's over every class."""
    x, y = load_data(f"digits:test:{OLD}", max_per_class=max_per_class).arrays()
    x = x.reshape(len(x), -1) if path == MLP else x
    assert result["task_a"] == pytest.approx(float((outputs(old, x).argmax(1) == y).mean()))
    assert result["task_a_task_known"] == pytest.approx(float((outputs(new, x)[:, :5].argmax(1) == y).mean()))
    assert result["task_a_new_model"] == pytest.approx(float((outputs(new, x).argmax(1) == y).mean()))
    assert result["mean_task_known"] == pytest.approx((result["task_a_task_known"] + result["task_b"]) / 2)


def test_plain_retraining_and_replay(tmp_path, task_a) -> None:
    """--train all trains every neuron (TPR 1); --replay-fraction mixes that stratified share of old data; task A is
    reported both ways for this baseline too, its old-task model being the new model."""
    path, piece_path = task_a
    new = tmp_path / "new.onnx"
    result = incremental_json(str(path), "--slice", str(piece_path), "--data", f"digits:train:{NEW}",
                              "--replay", f"digits:train:{OLD}", "--replay-fraction", "0.1", "--epochs", "1",
                              "--train", "all", "--old-eval-data", f"digits:test:{OLD}", "-o", str(new))
    labels = load_data(f"digits:train:{OLD}").labels
    assert result["replay_samples"] == sum(round(0.1 * (labels == c).sum()) for c in range(5))
    assert result["samples"] == len(load_data(f"digits:train:{NEW}")) + result["replay_samples"]
    assert result["tpr"] == 1.0
    assert result["task_a"] == result["task_a_new_model"]  # nothing frozen: the new model serves task A
    assert_task_a_both_ways(result, new, new, path)


@pytest.mark.slow
def test_incremental_torchvision_resnet(tmp_path) -> None:
    """resnet18 (random weights, BatchNormalization kept) at 32x32: old-task model equals the masked original."""
    torch.manual_seed(0)
    path = export_onnx(torchvision.models.resnet18(num_classes=4), (3, 32, 32), tmp_path / "r18.onnx",
                       keep_batchnorm=True)
    old_data = random_npz(tmp_path / "old.npz", (3, 32, 32), classes=2, per_class=2)
    new_data = random_npz(tmp_path / "new.npz", (3, 32, 32), classes=4, per_class=2, seed=1)
    layers = {layer.name: LayerSlice(layer.size, list(range(0, layer.size, 2)), {"0": [], "1": []})
              for layer in find_neuron_layers(load_model(path)).hidden}
    Slice(model_sha256=sha256_of(path), layers=layers).save(tmp_path / "s.json")
    new, old = tmp_path / "new.onnx", tmp_path / "old.onnx"
    incremental_json(str(path), "--slice", str(tmp_path / "s.json"), "--data", str(new_data), "--epochs", "1",
                     "--batch-size", "4", "-o", str(new), "--old-task-out", str(old))
    code, _, err = run("mask", str(path), "--slice", str(tmp_path / "s.json"), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    x = np.load(old_data)["x"]
    np.testing.assert_allclose(outputs(old, x), outputs(tmp_path / "m.onnx", x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(outputs(new, x), outputs(path, x), atol=1e-5), "nothing was trained"


def test_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    """A slice of another model, labels beyond the classifier, --replay-fraction without --replay: exit 2, one line,
    nothing written."""
    piece = tmp_path / "mlp.json"
    Slice(model_sha256=sha256_of(MLP), layers={"/0/Gemm": LayerSlice(512, [0, 1])}).save(piece)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 64), np.float32), y=np.array([3, 11]))
    out = tmp_path / "new.onnx"
    cases = [(str(CNN), "digits", [], "made for another model"), (str(MLP), str(bad), [], "label 11"),
             (str(MLP), "digits", ["--replay-fraction", "0.1"], "--replay-fraction needs --replay")]
    for model, data, extra, message in cases:
        code, _, err = run("incremental", model, "--slice", str(piece), "--data", data, *extra, "-o", str(out))
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not out.exists()
