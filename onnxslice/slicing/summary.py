"""What a slice keeps: per-layer sizes, the fraction of neurons, and the fraction of parameters.

The parameter fraction counts the masked model's *effective* parameters: a dropped neuron loses its
incoming weights (its output row, bias and per-neuron tail constants), and every consumer layer loses
the input columns that the masking turns into exact zeros. Which columns those are is read off the
masked model itself rather than from a graph analysis: on random probe inputs, an input channel of a
neuron layer is dropped when it is identically zero in the masked model but not in the original (a
Flatten turns a channel into a block of columns, an Add with an unmasked branch keeps it, and so on).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.graph import NeuronLayer, constant_values, find_neuron_layers
from onnxslice.graph_utils import attribute
from onnxslice.large import copy_model
from onnxslice.measure.stats import count_params, fixed_input_shape
from onnxslice.runtime import make_session, run_session
from onnxslice.slicing.artifact import Slice
from onnxslice.surgery.mask import mask_model

PROBE_SAMPLES = 4
POSITIVE_OFFSET = 0.01


def layer_table(piece: Slice) -> list[dict]:
    """Per layer: its node name and display name, kept / size, the kept ratio, and the number kept per category."""
    return [{"layer": name, "display": layer.display or name, "size": layer.size, "kept": len(layer.kept),
             "ratio": len(layer.kept) / layer.size,
             "per_category": {c: len(kept) for c, kept in layer.per_category.items()}}
            for name, layer in piece.layers.items()]


def neuron_fraction(piece: Slice) -> float:
    """Kept neurons over all neurons of the sliced layers."""
    return sum(len(layer.kept) for layer in piece.layers.values()) / sum(layer.size for layer in piece.layers.values())


def parameter_fraction(model: onnx.ModelProto, piece: Slice, seed: int = 0) -> dict:
    """``params`` of the model, ``params_kept`` effective in the masked model, and their ratio ``fraction``."""
    kept = piece.kept()
    layers = find_neuron_layers(model).layers
    dropped_inputs = _dropped_input_channels(model, kept, layers, seed)
    constants = constant_values(model)
    nodes = {node.name: node for node in model.graph.node}
    params = count_params(model)
    removed = 0
    for layer in layers:
        keep_out = np.zeros(layer.size, bool)
        keep_out[kept.get(layer.name, range(layer.size))] = True
        removed += _removed_weights(nodes[layer.name], constants[layer.weight], keep_out, dropped_inputs[layer.name])
        per_neuron = [name for node in [nodes[layer.name], *(nodes[t] for t in layer.tail)] for name in node.input
                      if name != layer.weight and name in constants and constants[name].size == layer.size]
        removed += len(per_neuron) * int((~keep_out).sum())
    return {"params": params, "params_kept": params - removed, "fraction": (params - removed) / params}


def _dropped_input_channels(model: onnx.ModelProto, kept: dict[str, list[int]], layers: list[NeuronLayer],
                            seed: int) -> dict[str, np.ndarray]:
    """Per layer, a boolean over its input channels: cut off by the masking.

    Read on the model's *positive twin* (every float constant replaced by its magnitude plus a small
    offset) fed with positive inputs: activation functions then pass every channel, so a channel that
    is zero in the masked twin but not in the twin is zero because of the mask, not because a ReLU
    happened to be inactive on the probe.
    """
    twin = copy_model(model)
    for init in twin.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            value = np.abs(onnx.numpy_helper.to_array(init)) + POSITIVE_OFFSET
            init.CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), init.name))
    shape = fixed_input_shape(model, batch=PROBE_SAMPLES)
    probe = np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(np.float32)
    seen: dict[str, list[np.ndarray]] = {}
    for variant in (twin, mask_model(twin, kept)):
        nodes = {node.name: node for node in variant.graph.node}
        values = _read_tensors(variant, [nodes[layer.name].input[0] for layer in layers], probe)
        for layer, value in zip(layers, values, strict=True):
            channels = np.moveaxis(value, 1 if layer.op_type == "Conv" else -1, 0)
            seen.setdefault(layer.name, []).append(channels.reshape(len(channels), -1).any(axis=1))
    return {name: live & ~masked_live for name, (live, masked_live) in seen.items()}


def _read_tensors(model: onnx.ModelProto, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
    extended = copy_model(model)
    present = {out.name for out in extended.graph.output}
    extended.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in dict.fromkeys(names)
                                 if name not in present)
    return run_session(make_session(extended, "cpu"), probe, names)


def _removed_weights(node: onnx.NodeProto, weight: np.ndarray, keep_out: np.ndarray, drop_in: np.ndarray) -> int:
    """Weight entries of dropped output neurons or dropped input channels."""
    if node.op_type == "Conv":
        group = attribute(node, "group", 1)
        out_channels, in_per_group = weight.shape[:2]
        per_group = out_channels // group
        in_index = (np.arange(out_channels)[:, None] // per_group) * in_per_group + np.arange(in_per_group)[None, :]
        live = keep_out[:, None] & ~drop_in[in_index]
        return int(weight.size - live.sum() * int(np.prod(weight.shape[2:])))
    in_features = weight.size // len(keep_out)
    if len(drop_in) != in_features:  # an input layout we do not read (e.g. Gemm transA): count columns as live
        drop_in = np.zeros(in_features, bool)
    return int(weight.size - np.outer(~drop_in, keep_out).sum())
