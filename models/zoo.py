"""PyTorch definitions of the example classifiers for scikit-learn's 8x8 digits."""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Sequential):
    """The paper's MLP: 64 features -> 512 -> 256 -> 10 logits, ReLU between layers. Input (N, 64)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Linear(64, 512), nn.ReLU(),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )


def conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """A 3x3 convolution (padding 1, no bias) followed by batch normalisation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN layers with ReLU between them; the block input is added before the final ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(channels, channels)
        self.conv2 = conv_bn(channels, channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class DigitsCNN(nn.Module):
    """Small residual CNN for input (N, 1, 8, 8): conv stem (8x8, 16 channels), a residual block,
    a stride-2 conv (4x4, 32 channels), then Flatten -> Linear(512, 64) -> ReLU -> Linear(64, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16), nn.ReLU(),
            ResidualBlock(16),
            conv_bn(16, 32, stride=2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsVGG(nn.Module):
    """A VGG-style CNN for input (N, 1, 8, 8), the paper's VGG16 / AlexNet pattern at the digits' scale: two
    blocks of two 3x3 conv+ReLU layers (32, then 64 channels) each followed by 2x2 max pooling, then a classifier
    of two 256-unit hidden layers (Flatten -> Linear(256, 256) -> ReLU -> Linear(256, 256) -> ReLU -> Linear(256,
    10)). No batch normalisation, like VGG16 and AlexNet."""

    def __init__(self) -> None:
        super().__init__()

        def block(in_channels: int, out_channels: int) -> list[nn.Module]:
            return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(1, 32), *block(32, 64))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, type[nn.Module]] = {"mlp": DigitsMLP, "cnn": DigitsCNN, "vgg": DigitsVGG}


def build(name: str) -> nn.Module:
    """A freshly initialised model by name: "mlp", "cnn" or "vgg"."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    return MODELS[name]()
