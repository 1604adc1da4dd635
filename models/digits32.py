"""torchvision classifiers trained here on scikit-learn's digits upscaled to 1 x 32 x 32 (seeded, CPU).

No weights are downloaded: the architectures are built with random weights, their first convolution takes one
channel, and they are trained for a few minutes on the bundled digits. A trained module is cached under
models/cache/ (ignored by git), keyed by architecture, epochs and seed, so that the benchmarks that compare
pruning methods on the same trained model train it once.

    python models/digits32.py resnet18 mobilenet_v3_small   # train (or load) and print test accuracy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxslice.data import DataSource, load_digits  # noqa: E402

CACHE = Path(__file__).resolve().parent / "cache"

#: architecture -> epochs of training that reach >= 90% test accuracy
EPOCHS = {"resnet18": 5, "mobilenet_v3_small": 30}


def build(name: str) -> nn.Module:
    """A torchvision architecture with random weights, one input channel and 10 classes."""
    import torchvision

    if name == "resnet18":
        module = torchvision.models.resnet18(weights=None, num_classes=10)
        module.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif name == "mobilenet_v3_small":
        module = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
        module.features[0][0] = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1, bias=False)
    else:
        raise ValueError(f"unknown architecture {name!r} (choose from {', '.join(EPOCHS)})")
    return module


def upscale(x: np.ndarray) -> np.ndarray:
    """Digits images (N, 1, 8, 8) upscaled 4x (nearest) to (N, 1, 32, 32)."""
    return np.kron(x, np.ones((1, 1, 4, 4), np.float32))


def digits32(split: str) -> DataSource:
    """The digits of ``split`` ("train", "val", "test", "all") upscaled 4x (nearest), named ``digits32:<split>``."""
    x, y = load_digits(split).arrays()
    return DataSource.from_arrays(f"digits32:{split}", upscale(x), y)


def train(module: nn.Module, data: DataSource, epochs: int, lr: float = 1e-3, batch_size: int = 64,
          seed: int = 0) -> nn.Module:
    """``module`` trained in place with Adam and cross-entropy (BatchNorm in training mode); returned in eval mode."""
    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in data.arrays())
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=order).split(batch_size):
            if len(batch) < 2:  # BatchNorm needs two samples in training mode
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(x[batch]), y[batch]).backward()
            optimizer.step()
    return recalibrate_batchnorm(module, x, batch_size)


def recalibrate_batchnorm(module: nn.Module, x: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """``module`` in eval mode with every BatchNorm's running statistics set to the exact average over ``x``.

    torchvision's mobilenet_v3 keeps running statistics with momentum 0.01, which lag far behind the weights
    after a few hundred steps (eval-mode accuracy 73% where train mode gives 97%)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    module.train()
    with torch.no_grad():
        for batch in x.split(batch_size):
            module(batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return module.eval()


def test_accuracy(module: nn.Module) -> float:
    """Fraction of digits32:test classified correctly."""
    x, y = (torch.from_numpy(a) for a in digits32("test").arrays())
    with torch.no_grad():
        return float((module.eval()(x).argmax(1) == y).float().mean())


def trained(name: str, epochs: int | None = None, seed: int = 0) -> nn.Module:
    """The architecture ``name`` trained on digits32:train (from the cache when it was trained before)."""
    epochs = EPOCHS[name] if epochs is None else epochs
    path = CACHE / f"{name}_e{epochs}_s{seed}_bn_train{len(load_digits('train'))}.pt"  # not one that saw digits:val
    module = build(name)
    if path.exists():
        module.load_state_dict(torch.load(path, weights_only=True))
        return module.eval()
    torch.manual_seed(seed)
    module = train(build(name), digits32("train"), epochs, seed=seed)
    CACHE.mkdir(exist_ok=True)
    torch.save(module.state_dict(), path)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(EPOCHS))
    for name in parser.parse_args().names:
        print(f"{name}: test accuracy {test_accuracy(trained(name)):.4f}")


if __name__ == "__main__":
    main()
