"""Train the example digits classifiers and export them to ONNX.

Usage: ``python models/train.py [--out-dir models]``. Seeded and deterministic on CPU; writes
``mlp_digits.onnx`` and ``cnn_digits.onnx`` (plus the PyTorch state dicts ``*.pt`` when under 1 MB),
checks each ONNX model against its PyTorch model and prints its test accuracy under onnxruntime.
:func:`train` also trains torchvision's resnet18 on the digits upscaled to 32 x 32 (``models/digits32.py``),
with any seed and the best epoch chosen on validation data (``benchmarks/paper`` trains its models with it).
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from digits32 import build as build_torchvision
from digits32 import upscale
from torch import nn
from zoo import MODELS, build

from onnxslice.data import digits_split, load_digits

SEED = 0
EPOCHS = {"mlp": 30, "cnn": 30, "vgg": 30, "resnet18": 8}
BUNDLED = ("mlp", "cnn")
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
MAX_STATE_DICT_BYTES = 1 << 20
MAX_ABS_DIFF = 1e-4


def model_input(name: str, x: np.ndarray) -> np.ndarray:
    """The digits images (N, 1, 8, 8) as the model takes them: flattened to (N, 64) for the MLP, upscaled to
    (N, 1, 32, 32) for resnet18."""
    if name == "mlp":
        return x.reshape(len(x), 64)
    return upscale(x) if name == "resnet18" else x


def train(name: str, x: np.ndarray, y: np.ndarray, seed: int = SEED,
          val: tuple[np.ndarray, np.ndarray] | None = None) -> nn.Module:
    """A model of this name seeded with ``seed`` and trained with Adam on (x, y) for a fixed number of epochs;
    with ``val`` the weights of the epoch most accurate on it, else those of the last epoch."""
    torch.manual_seed(seed)
    model = build(name) if name in MODELS else build_torchvision(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    shuffle = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for _ in range(EPOCHS[name]):
        model.train()
        for batch in torch.randperm(len(labels), generator=shuffle).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss_fn(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
        if val is not None:
            with torch.no_grad():
                score = float((model.eval()(torch.from_numpy(val[0])).argmax(1).numpy() == val[1]).mean())
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def export(model: nn.Module, example: np.ndarray, path: Path) -> None:
    """Export with the legacy TorchScript exporter at opset 17, with a dynamic batch axis."""
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(model, (torch.from_numpy(example),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_all, y_all = load_digits("all").arrays()
    splits = digits_split(y_all)
    training_part = np.sort(np.concatenate([splits["train"], splits["val"]]))  # the 70% the bundled models saw
    x_train, y_train = x_all[training_part], y_all[training_part]
    x_test, y_test = load_digits("test").arrays()

    for name in BUNDLED:
        train_in, test_in = model_input(name, x_train), model_input(name, x_test)
        model = train(name, train_in, y_train)
        onnx_path = args.out_dir / f"{name}_digits.onnx"
        export(model, test_in[:4], onnx_path)
        onnx.checker.check_model(onnx.load(onnx_path), full_check=True)

        with torch.no_grad():
            expected = model(torch.from_numpy(test_in)).numpy()
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"input": test_in})[0]
        diff = float(np.abs(logits - expected).max())
        if diff >= MAX_ABS_DIFF:
            raise SystemExit(f"{onnx_path}: ONNX logits differ from PyTorch by {diff:.2e}")
        accuracy = float((logits.argmax(axis=1) == y_test).mean())
        print(f"{onnx_path}: test accuracy {accuracy:.4f} ({len(y_test)} samples), "
              f"max |onnx - torch| = {diff:.1e}, {onnx_path.stat().st_size} bytes")

        pt_path = args.out_dir / f"{name}_digits.pt"
        torch.save(model.state_dict(), pt_path)
        if pt_path.stat().st_size >= MAX_STATE_DICT_BYTES:
            pt_path.unlink()
            print(f"{pt_path}: not kept (state dict of 1 MB or more)")
        else:
            print(f"{pt_path}: {pt_path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
