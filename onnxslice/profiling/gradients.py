"""The PyTorch twin of an ONNX model, for the metrics that need gradients of a category's score.

The canonical graph is converted with onnx2torch (:mod:`onnxslice.torch_bridge`); each neuron layer's
observed activation is the output of the submodule of its tail's last node, so the same tensors that
onnxruntime reads are hooked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx
import torch

from onnxslice.graph import NeuronLayer
from onnxslice.profiling.similarity import as_samples_neurons_positions
from onnxslice.runtime import scores_index
from onnxslice.torch_bridge import select_output, to_torch


class ScoresOf(torch.nn.Module):
    """A converted model reduced to its class-score output (captum needs one output tensor)."""

    def __init__(self, module: torch.nn.Module, output_index: int) -> None:
        super().__init__()
        self.module = module
        self.output_index = output_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.module(x), self.output_index)


def torch_device(device: str) -> torch.device:
    """CUDA when asked for or available ("auto"), else the CPU."""
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


class GradientPass:
    """Runs batches through the PyTorch twin with the category's own score as the target."""

    def __init__(self, model: onnx.ModelProto, layers: list[NeuronLayer], device: str = "auto") -> None:
        converted = to_torch(model)
        self.device = torch_device(device)
        self.model = ScoresOf(converted.module, scores_index(model)).to(self.device).eval()
        self.modules = {layer.name: converted.activation_module(layer) for layer in layers}

    def batch(self, x: np.ndarray, labels: np.ndarray) -> GradientBatch:
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return GradientBatch(self, inputs, torch.from_numpy(labels.astype(np.int64)).to(self.device))


@dataclass
class GradientBatch:
    """One batch in PyTorch; activations and gradients of all layers come from one forward-backward pass."""

    owner: GradientPass
    inputs: torch.Tensor
    targets: torch.Tensor  #: each sample's category: the index of the score that is differentiated

    @property
    def model(self) -> torch.nn.Module:
        return self.owner.model

    def module(self, layer: NeuronLayer) -> torch.nn.Module:
        return self.owner.modules[layer.name]

    def as_numpy(self, tensor: torch.Tensor, layer: NeuronLayer) -> np.ndarray:
        """A per-layer tensor (its samples on ``layer.batch_axis``) as float32 (n, C, S), like the onnxruntime
        activations."""
        return as_samples_neurons_positions(tensor.detach().cpu().numpy(), layer.channel_axis, layer.batch_axis)

    def activation_and_gradient(self, layer: NeuronLayer) -> tuple[np.ndarray, np.ndarray]:
        """The layer's activation and the gradient of each sample's target score with respect to it, (n, C, S)."""
        activation, gradient = self._activations_and_gradients[layer.name]
        return self.as_numpy(activation, layer), self.as_numpy(gradient, layer)

    @cached_property
    def _activations_and_gradients(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
                captured[name] = output
            return hook

        handles = [module.register_forward_hook(keep(name)) for name, module in self.owner.modules.items()]
        try:
            with torch.enable_grad():
                scores = self.model(self.inputs)
                target = scores.gather(1, self.targets[:, None]).sum()  # samples are independent: per-sample grads
                names = list(captured)
                grads = torch.autograd.grad(target, [captured[name] for name in names], allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        return {name: (captured[name], torch.zeros_like(captured[name]) if grad is None else grad)
                for name, grad in zip(names, grads, strict=True)}
