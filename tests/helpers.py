"""Shared test helpers: exporting PyTorch modules to ONNX, the example models, small data sets."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MLP = MODELS / "mlp_digits.onnx"
CNN = MODELS / "cnn_digits.onnx"


def export_onnx(module: torch.nn.Module, sample_shape: tuple[int, ...], path: Path, opset: int = 17,
                keep_batchnorm: bool = False) -> Path:
    """Export ``module`` (eval mode) with the legacy exporter, a dynamic batch, input 'input', output 'logits'.

    ``keep_batchnorm`` keeps BatchNormalization nodes (inference mode) instead of folding them into the convs.
    """
    module = module.eval()
    example = torch.randn(2, *sample_shape)
    training = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], training=training,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def example_torch_model(name: str) -> torch.nn.Module:
    """The PyTorch original of models/<name>_digits.onnx (definitions in models/zoo.py, weights in .pt)."""
    sys.path.insert(0, str(MODELS))
    try:
        from zoo import build
    finally:
        sys.path.remove(str(MODELS))
    module = build(name)
    module.load_state_dict(torch.load(MODELS / f"{name}_digits.pt", weights_only=True))
    return module.eval()


def random_npz(path: Path, sample_shape: tuple[int, ...], classes: int = 10, per_class: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    x = rng.standard_normal((len(y), *sample_shape)).astype(np.float32)
    np.savez(path, x=x, y=y)
    return path


def sklearn_digits_mlp(path: Path, hidden: int = 32) -> Path:
    """A scikit-learn MLPClassifier trained briefly on digits, exported with skl2onnx (no ZipMap): a non-PyTorch
    export with ai.onnx.ml ops and a label output beside the probabilities. Input (N, 64) in [0, 1]."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warning: accuracy is not what these tests are about
        clf = MLPClassifier((hidden,), max_iter=60, random_state=0).fit(x, digits.target)
    model = to_onnx(clf, initial_types=[("input", FloatTensorType([None, 64]))],
                    options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(model.SerializeToString())
    return path


def resnet18_digits() -> torch.nn.Module:
    """torchvision resnet18 for 1-channel 32x32 digits: conv1 takes one input channel, 10 classes."""
    import torchvision

    module = torchvision.models.resnet18(weights=None, num_classes=10)
    module.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return module


def digits32(split: str):
    """scikit-learn's digits upscaled 4x (nearest) to 1 x 32 x 32, as a DataSource named ``digits32:<split>``."""
    from onnxslice.data import DataSource, load_digits

    x, y = load_digits(split).arrays()
    return DataSource.from_arrays(f"digits32:{split}", np.kron(x, np.ones((1, 1, 4, 4), np.float32)), y)
