"""`onnxslice mask`: non-critical neurons zeroed where their consumers read them, shapes unchanged.

Oracle: the PyTorch originals of the example models with forward hooks that zero the same neurons of
the same activations (after each layer's ReLU; for the residual block's second conv, before the Add),
run on real digits — independent of the ONNX rewrite.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice.files import sha256_of
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP, example_torch_model

#: ONNX layer name -> path of the PyTorch submodule whose output is the layer's observed activation
OBSERVED = {
    "mlp": {"/0/Gemm": "1", "/2/Gemm": "3"},
    "cnn": {"/features/features.0/features.0.0/Conv": "features.1",
            "/features/features.2/conv1/conv1.0/Conv": "features.2.conv1",
            "/features/features.2/conv2/conv2.0/Conv": "features.2.conv2",
            "/features/features.3/features.3.0/Conv": "features.4",
            "/classifier/classifier.1/Gemm": "classifier.2"},
}
SIZES = {"mlp": [512, 256], "cnn": [16, 16, 16, 32, 64]}


def torch_masked_logits(name: str, kept: dict[str, list[int]], x: np.ndarray) -> np.ndarray:
    """Logits of the PyTorch original with the non-kept neurons of each observed activation zeroed by hooks."""
    module = example_torch_model(name)
    modules = dict(module.named_modules())
    for (layer, path), size in zip(OBSERVED[name].items(), SIZES[name], strict=True):
        mask = torch.zeros(size)
        mask[kept[layer]] = 1.0
        mask = mask.reshape(-1, 1, 1) if path.startswith("features") else mask
        # the residual block's ReLU module is used twice: hook conv1 and apply its ReLU (idempotent) there
        activation = torch.relu if path == "features.2.conv1" else (lambda out: out)
        modules[path].register_forward_hook(lambda _m, _i, out, mask=mask, f=activation: f(out) * mask)
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def random_slice(model_path, name: str, seed: int) -> Slice:
    rng = np.random.default_rng(seed)
    layers = {layer: LayerSlice(size, sorted(rng.choice(size, size // 3, replace=False).tolist()))
              for layer, size in zip(OBSERVED[name], SIZES[name], strict=True)}
    return Slice(sha256_of(model_path), layers, metric="avg", strategy="global", ratio=1 / 3)


@pytest.mark.parametrize(("name", "model_path", "shape"), [("mlp", MLP, (-1, 64)), ("cnn", CNN, (-1, 1, 8, 8))])
def test_mask_command_matches_pytorch_with_zeroed_activations(tmp_path, name, model_path, shape):
    piece = random_slice(model_path, name, seed=0)
    piece.save(tmp_path / "s.json")
    out = tmp_path / "masked.onnx"
    result = CliRunner().invoke(cli, ["mask", str(model_path), "--slice", str(tmp_path / "s.json"), "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sum(report["zeroed"].values()) == sum(s - s // 3 for s in SIZES[name])
    x, _ = load_data("digits:test", max_per_class=10).arrays()
    x = x.reshape(shape)
    masked = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    expected = torch_masked_logits(name, piece.kept(), x)
    np.testing.assert_allclose(masked, expected, rtol=1e-4, atol=1e-4)
    original = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(masked - original).max() > 1e-2  # the masking did change something
    written = onnx.load(str(out))
    before = onnx.load(str(model_path))
    assert [d.dim_value for d in written.graph.output[0].type.tensor_type.shape.dim][1:] == \
        [d.dim_value for d in before.graph.output[0].type.tensor_type.shape.dim][1:]


def test_mask_refuses_a_slice_of_another_model_and_overwriting(tmp_path):
    piece = random_slice(MLP, "mlp", seed=1)
    piece.save(tmp_path / "s.json")
    out = tmp_path / "masked.onnx"
    other = CliRunner().invoke(cli, ["mask", str(CNN), "--slice", str(tmp_path / "s.json"), "-o", str(out)])
    assert other.exit_code == 2 and "another model" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert not out.exists()
    self_overwrite = CliRunner().invoke(cli, ["mask", str(MLP), "--slice", str(tmp_path / "s.json"), "-o", str(MLP)])
    assert self_overwrite.exit_code == 2 and "overwrite" in self_overwrite.stderr
    (tmp_path / "bad.json").write_text('{"format": "onnxslice.slice/1", "model_sha256": "x", "layers": {"a": 1}}')
    bad = CliRunner().invoke(cli, ["mask", str(MLP), "--slice", str(tmp_path / "bad.json"), "-o", str(out)])
    assert bad.exit_code == 2 and "bad.json" in bad.stderr and not out.exists()
