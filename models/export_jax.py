"""Train a small Flax (JAX) CNN on digits and export it with jax2onnx: the non-PyTorch example model.

JAX is not a dependency of onnxslice; regenerate in a separate environment:

    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib flax optax jax2onnx scikit-learn
    /tmp/jaxenv/bin/python models/export_jax.py

The export shows what exporters other than PyTorch's do: an NHWC input with Transpose nodes around
every Conv, BatchNormalization kept as a node, a dynamic Shape→Gather→Concat→Reshape chain before
the first Gemm, and a recent opset. The data split equals onnxslice's 70% training part (``digits:train``
and ``digits:val``) / ``digits:test``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
from flax import nnx
from jax2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0


class DigitsJaxCNN(nnx.Module):
    """NHWC input (N, 8, 8, 1): conv+BN+ReLU, a residual conv, flatten, two dense layers."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, rngs=rngs)
        self.conv2 = nnx.Conv(16, 16, kernel_size=(3, 3), rngs=rngs)
        self.fc1 = nnx.Linear(8 * 8 * 16, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.conv2(x)) + x
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """onnxslice's fixed split (test 30%, stratified, seed 0), as NHWC float32 in [0, 1]."""
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    index = np.arange(len(bunch.target))
    train, test = train_test_split(index, test_size=0.3, random_state=0, stratify=bunch.target)
    train, test = np.sort(train), np.sort(test)
    return x[train], bunch.target[train], x[test], bunch.target[test]


def train(model: DigitsJaxCNN, x: np.ndarray, y: np.ndarray, epochs: int = 20) -> None:
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model: DigitsJaxCNN, optimizer: nnx.Optimizer, xb: jax.Array, yb: jax.Array) -> jax.Array:
        def loss_fn(model: DigitsJaxCNN) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(SEED)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            step(model, optimizer, jnp.asarray(x[batch]), jnp.asarray(y[batch]))
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    out = parser.parse_args().out_dir / "jax_cnn_digits.onnx"
    x_train, y_train, x_test, y_test = digits_split()
    model = DigitsJaxCNN(nnx.Rngs(SEED))
    train(model, x_train, y_train)
    accuracy = float((np.asarray(model(jnp.asarray(x_test))).argmax(1) == y_test).mean())
    exported = to_onnx(model, [("batch", 8, 8, 1)])
    onnx.checker.check_model(exported)
    onnx.save(exported, out)
    print(f"{out}: JAX test accuracy {accuracy:.4f}, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
