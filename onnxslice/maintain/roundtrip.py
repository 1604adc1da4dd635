"""ONNX → PyTorch → masked training → ONNX, with a neuron's parameters known by name.

A neuron's parameters are its incoming weights (its output row of a Gemm / its filter of a Conv / its
column of a MatMul weight), its bias, and the per-neuron constants of its element-wise tail
(BatchNormalization scale and shift, a split bias Add, a scale Mul, a PReLU slope). onnx2torch turns a
Gemm into ``nn.Linear`` and a Conv into ``nn.ConvNd`` (real parameters), but keeps the weight of a MatMul,
the operands of Add / Mul and the like as *buffers* in its ``initializers`` container; those that belong to
a neuron layer are turned into ``nn.Parameter`` here so they can be trained.

Masked training (:class:`FrozenGuard`) lets only the chosen neurons' entries move: gradients are masked by
hooks (so optimizer moments stay zero for frozen entries) and, after every optimizer step, frozen entries
are copied back from a saved copy — weight decay or momentum can therefore never move them, and the
frozen values in the exported ONNX are bit-identical to the original's. Every other parameter of the
module is frozen. Training runs in eval mode: BatchNormalization uses (and keeps) its running statistics.

The written model is a new export: its node names are the exporter's, not the original's. Neuron layers
of the two are matched by order (:func:`match_layers`: same count, op types and sizes, else an error), so
a slice of the original can be applied to the written model.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from onnxslice.errors import VerificationError
from onnxslice.graph import LayerScan, NeuronLayer, canonicalize, constant_values, consumers_of, find_neuron_layers
from onnxslice.graph_utils import attribute, opset_version
from onnxslice.maintain.training import TrainingOptions
from onnxslice.progress import progress_bar
from onnxslice.runtime import input_name, make_session, scores_index, scores_output
from onnxslice.torch_bridge import MAX_TORCH_OPSET, TorchModel, module_name, select_output, to_torch

#: The written model must match the trained PyTorch module on probe inputs within these tolerances.
EXPORT_RTOL, EXPORT_ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class NeuronTensor:
    """One tensor of a neuron layer inside the converted module: its parameter path and its neuron axis."""

    layer: str
    path: str
    axis: int


@dataclass
class Trainable:
    """A converted model ready for masked training: the module, its scores output and its neuron tensors."""

    model: onnx.ModelProto  #: the canonical original
    scan: LayerScan
    torch_model: TorchModel
    output_index: int  #: which of the module's outputs holds the class scores
    tensors: dict[str, list[NeuronTensor]]  #: layer name -> its tensors

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> Trainable:
        scan = find_neuron_layers(model)
        torch_model = to_torch(model)
        tensors = make_neuron_parameters(torch_model, model, scan.layers)
        return cls(model, scan, torch_model, scores_index(model), tensors)

    @property
    def module(self) -> nn.Module:
        return self.torch_model.module

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.module(x), self.output_index)

    def masks(self, trainable: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Element masks (True = may change) of every neuron tensor from per-layer 0/1 neuron vectors."""
        params = dict(self.module.named_parameters())
        masks: dict[str, torch.Tensor] = {}
        for name, layer_tensors in self.tensors.items():
            neurons = torch.from_numpy(np.asarray(trainable[name], bool))
            for tensor in layer_tensors:
                shape = [1] * params[tensor.path].dim()
                shape[tensor.axis] = -1
                masks[tensor.path] = neurons.reshape(shape).expand_as(params[tensor.path]).clone()
        return masks

    def layer_parameter_count(self) -> int:
        """All entries of the neuron layers' tensors: the denominator of the trained parameter ratio."""
        params = dict(self.module.named_parameters())
        return sum(params[t.path].numel() for tensors in self.tensors.values() for t in tensors)


def make_neuron_parameters(torch_model: TorchModel, model: onnx.ModelProto,
                           layers: list[NeuronLayer]) -> dict[str, list[NeuronTensor]]:
    """Find each layer's tensors in the converted module (its node and its tail's nodes) and make them
    parameters. Constants shared with nodes outside the layer are left alone (they stay frozen)."""
    module = torch_model.module
    calls = {node.target: node for node in module.graph.nodes if node.op == "call_module"}
    constants = constant_values(model)
    users = consumers_of(model)
    nodes = {node.name: node for node in model.graph.node}
    found: dict[str, list[NeuronTensor]] = {}
    for layer in layers:
        found[layer.name] = []
        for onnx_node in [nodes[layer.name], *(nodes[name] for name in layer.tail)]:
            target = module_name(onnx_node)
            owned = list(module.get_submodule(target).named_parameters(recurse=False))
            if owned:
                found[layer.name] += [NeuronTensor(layer.name, f"{target}.{name}", 0) for name, p in owned
                                      if p.dim() >= 1 and p.shape[0] == layer.size]
                continue
            for value_name, arg in zip(onnx_node.input, calls[target].args, strict=False):
                if value_name not in constants or not isinstance(arg, torch.fx.Node) or arg.op != "get_attr":
                    continue
                if len(users[value_name]) != 1:
                    continue
                axis = _neuron_axis(onnx_node, layer, constants[value_name], value_name)
                if axis is not None:
                    _promote_to_parameter(module, arg.target)
                    found[layer.name].append(NeuronTensor(layer.name, arg.target, axis))
    return found


def _neuron_axis(node: onnx.NodeProto, layer: NeuronLayer, value: np.ndarray, value_name: str) -> int | None:
    """The axis of ``value`` that indexes the layer's neurons, or None when it is not per neuron."""
    if node.name == layer.name and value_name == node.input[1] and value.ndim == 2:
        return 0 if node.op_type == "Gemm" and attribute(node, "transB", 0) else 1
    if value.size != layer.size or layer.size == 1:
        return None
    return int(np.argmax(value.shape))


def _promote_to_parameter(module: nn.Module, path: str) -> None:
    owner_path, _, attr = path.rpartition(".")
    owner = module.get_submodule(owner_path)
    if attr in owner._buffers:
        value = owner._buffers.pop(attr)
        owner.register_parameter(attr, nn.Parameter(value.detach().clone()))


class FrozenGuard:
    """Lets only the True entries of ``masks`` change: gradient hooks plus restoring frozen entries after
    each optimizer step. Parameters without a mask are frozen entirely."""

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.entries: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for path, param in module.named_parameters():
            mask = masks.get(path)
            if mask is None or not bool(mask.any()):
                param.requires_grad_(False)
                continue
            param.requires_grad_(True)
            if not bool(mask.all()):
                param.register_hook(lambda grad, m=mask: grad * m)
                self.entries.append((param, mask, param.detach().clone()))
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.trained = sum(int(m.sum()) for path, m in masks.items())

    @torch.no_grad()
    def restore(self) -> None:
        for param, mask, saved in self.entries:
            param.copy_(torch.where(mask, param, saved))


def train_masked(trainable: Trainable, guard: FrozenGuard, inputs: list[torch.Tensor], labels: torch.Tensor,
                 options: TrainingOptions) -> None:
    """Adam on the summed cross entropy over ``inputs`` (e.g. clean and adversarial versions of the same
    samples, all with ``labels``), in eval mode, only moving what ``guard`` allows; a bar per epoch on stderr
    when ``options.progress`` is set and stderr is a terminal."""
    if not guard.parameters:
        return
    optimizer = torch.optim.Adam(guard.parameters, lr=options.lr, weight_decay=options.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(options.seed)
    trainable.module.eval()
    with progress_bar(options.epochs, "train", "epoch", options.progress) as bar:
        for _ in range(options.epochs):
            total = 0.0
            for batch in torch.randperm(len(labels), generator=generator).split(options.batch_size):
                optimizer.zero_grad()
                loss = sum(loss_fn(trainable.scores(x[batch]), labels[batch]) for x in inputs)
                loss.backward()
                optimizer.step()
                guard.restore()
                total += float(loss.item()) * len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{total / max(len(labels), 1):.4f}")


def export(trainable: Trainable, example: np.ndarray) -> onnx.ModelProto:
    """Export the module (legacy exporter, the original's opset up to 17, its input and output names, a dynamic
    batch), canonicalise it, and check that onnxruntime reproduces the module on ``example``."""
    _expose_exporter_globals()
    like = trainable.model
    opset = opset_version(like, MAX_TORCH_OPSET)
    names_in, names_out = [input_name(like)], [out.name for out in like.graph.output]
    buffer = io.BytesIO()
    x = torch.from_numpy(np.ascontiguousarray(example, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trainable.module.eval(), (x,), buffer, dynamo=False,
                          opset_version=min(opset, MAX_TORCH_OPSET), input_names=names_in, output_names=names_out,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          dynamic_axes={name: {0: "batch"} for name in names_in + names_out})
    exported = canonicalize(onnx.load_from_string(buffer.getvalue()))
    onnx.checker.check_model(exported)
    check_matches(trainable, exported, example)
    return exported


def _expose_exporter_globals() -> None:
    """onnx2torch's modules with a custom export read ``torch.onnx.symbolic_helper.GLOBALS``, which newer torch
    keeps in ``torch.onnx._internal.torchscript_exporter._globals``; point the old name at it."""
    from torch.onnx import symbolic_helper

    if not hasattr(symbolic_helper, "GLOBALS"):
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        symbolic_helper.GLOBALS = GLOBALS


def check_matches(trainable: Trainable, exported: onnx.ModelProto, example: np.ndarray) -> float:
    """Max abs difference of the class scores between the module and the exported model; a mismatch beyond
    the tolerances is an internal error (never write a wrong model)."""
    with torch.no_grad():
        expected = trainable.scores(torch.from_numpy(example.astype(np.float32))).float().numpy()
    got = make_session(exported, "cpu").run([scores_output(exported)[0]],
                                            {input_name(exported): example.astype(np.float32)})[0]
    if not np.allclose(got, expected, rtol=EXPORT_RTOL, atol=EXPORT_ATOL):
        raise VerificationError(f"the exported model differs from the trained PyTorch module "
                           f"(max abs diff {np.abs(got - expected).max():.3g})")
    return float(np.abs(got - expected).max())


def match_layers(original: LayerScan, exported: LayerScan) -> dict[str, str]:
    """Original layer name -> the exported model's layer in the same position (op type and size must agree)."""
    pairs = list(zip(original.layers, exported.layers, strict=False))
    if len(original.layers) != len(exported.layers) or any(
            (a.op_type, a.size, a.is_output) != (b.op_type, b.size, b.is_output) for a, b in pairs):
        raise VerificationError("the exported model's neuron layers do not match the original's "
                           f"({[(a.op_type, a.size) for a in original.layers]} vs "
                           f"{[(b.op_type, b.size) for b in exported.layers]})")
    return {a.name: b.name for a, b in pairs}
