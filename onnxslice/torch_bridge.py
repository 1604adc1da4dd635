"""ONNX → PyTorch with onnx2torch, for the stages that need gradients or training.

The canonical graph (see :mod:`onnxslice.graph`) is converted; opsets newer than onnx2torch knows
are first converted down with onnx's version converter, after the ops it cannot convert down are rewritten
(:mod:`onnxslice.older_ops`). Each ONNX node becomes one submodule, so a neuron layer or a tail node is
found by its ONNX node name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnx
import torch
from onnx import version_converter

from onnxslice.errors import InputError
from onnxslice.graph import NeuronLayer, constant_values
from onnxslice.graph_utils import opset_version
from onnxslice.older_ops import hide_unchanged_ops, restore_hidden_ops, rewrite_newer_ops

#: Newest default-domain opset that onnx2torch 1.5.x converts reliably.
MAX_TORCH_OPSET = 17


def module_name(node: onnx.NodeProto | str) -> str:
    """The submodule name onnx2torch gives an ONNX node (dots are not allowed in torch names)."""
    name = node if isinstance(node, str) else node.name
    return name.replace(".", "/").lstrip("/")


@dataclass
class TorchModel:
    """A PyTorch module converted from an ONNX model, with lookups by ONNX node name."""

    module: torch.fx.GraphModule

    def submodule(self, node_name: str) -> torch.nn.Module:
        return self.module.get_submodule(module_name(node_name))

    def activation_module(self, layer: NeuronLayer) -> torch.nn.Module:
        """The submodule whose output is the layer's observed activation (the end of its tail)."""
        return self.submodule(layer.tail[-1] if layer.tail else layer.name)


def select_output(outputs: torch.Tensor | tuple | list, index: int) -> torch.Tensor:
    """Output ``index`` of a converted module's forward (a module with one output returns it bare)."""
    return outputs[index] if isinstance(outputs, tuple | list) else outputs


def to_torch(model: onnx.ModelProto) -> TorchModel:
    """Convert a canonical ONNX model; an op onnx2torch cannot convert is an InputError naming it."""
    from onnx2torch import convert
    from onnx2torch.node_converters.cast import TENSOR_TYPE_TO_TORCH_TYPE

    TENSOR_TYPE_TO_TORCH_TYPE.setdefault(onnx.TensorProto.BFLOAT16, torch.bfloat16)  # a bfloat16 model's I/O Casts
    model = _without_needless_allowzero(_supported_opset(onnx.ModelProto.FromString(model.SerializeToString())))
    _layer_norm_shapes(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = convert(model)
    except NotImplementedError as exc:
        raise InputError(f"cannot convert the model to PyTorch (needed for gradients and training): "
                         f"{_describe(exc, model)}") from None
    return TorchModel(module.eval())


def _supported_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = opset_version(model, MAX_TORCH_OPSET)
    if opset <= MAX_TORCH_OPSET:
        return model
    model = rewrite_newer_ops(model)
    hide_unchanged_ops(model)
    try:
        return restore_hidden_ops(version_converter.convert_version(model, MAX_TORCH_OPSET))
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise InputError(f"cannot convert opset {opset} down to {MAX_TORCH_OPSET} for onnx2torch: {exc}") from None


def _without_needless_allowzero(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop Reshape's ``allowzero=1`` where the constant target shape has no zero (it then means nothing);
    onnx2torch refuses the attribute."""
    constants = constant_values(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in constants or 0 in constants[node.input[1]]:
            continue
        keep = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        del node.attribute[:]
        node.attribute.extend(keep)
    return model


def _layer_norm_shapes(model: onnx.ModelProto) -> None:
    """Fill the unknown normalised dims of each LayerNormalization input from its constant scale's shape (in place).

    onnx2torch builds ``nn.LayerNorm`` with the shape recorded for the input (an unknown dim read as 0), which
    shape inference cannot always give: e.g. behind a Pad whose pads are computed (Swin's patch merging, legacy
    export). The spec gives the scale the normalised shape, ``X.shape[axis:]``.
    """
    constants = constant_values(model)
    infos = {info.name: info for info in [*model.graph.value_info, *model.graph.input]}
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        info = infos.get(node.input[0])
        if info is None or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        normalised = dims[axis:] if -len(dims) <= axis < len(dims) else []
        scale = constants[node.input[1]].shape
        if len(normalised) != len(scale):
            continue
        for dim, size in zip(normalised, scale, strict=True):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.dim_value = int(size)


def _describe(exc: NotImplementedError, model: onnx.ModelProto) -> str:
    """Name the op (and its first node) that onnx2torch has no converter for."""
    text = str(exc)
    for node in model.graph.node:
        if f"operation_type='{node.op_type}'" in text and f"domain='{node.domain}'" in text:
            return f"op {node.op_type} (node {node.name!r}) is not supported by onnx2torch"
    return text.splitlines()[0] if text else "unsupported operation"
