"""The paper's view of a slice: non-critical neurons zeroed where their consumers read them.

Shapes are unchanged. A ``Mul`` by a 0/1 vector along the neuron axis is inserted after each
layer's observed activation, and every consumer reads the masked tensor instead. This is what
evaluation of a slice runs and the oracle that restructuring is checked against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.errors import InputError
from onnxslice.graph import NeuronLayer, export_graph, find_neuron_layers
from onnxslice.graph_utils import replace_uses


def neuron_mask(layer: NeuronLayer, kept: Sequence[int], rank: int) -> np.ndarray:
    """A 0/1 float32 array that broadcasts along ``layer``'s neuron axis of a rank-``rank`` tensor."""
    mask = np.zeros(layer.size, np.float32)
    mask[list(kept)] = 1.0
    if layer.channel_axis == -1:
        return mask
    return mask.reshape((layer.size,) + (1,) * (rank - layer.channel_axis - 1))


def mask_model(model: onnx.ModelProto, kept: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """Zero every neuron of the named layers that is not in ``kept[layer]``; other layers untouched."""
    layers = find_neuron_layers(model).by_name()
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    for name, indices in kept.items():
        if name not in layers:
            raise InputError(f"cannot mask {name!r}: not a neuron layer of the model")
        layer = layers[name]
        if len(indices) == layer.size:
            continue
        if layer.is_output:
            raise InputError(f"cannot mask {name!r}: it is the output layer (its neurons are the categories)")
        activation = tensors[layer.output]
        rank = len(activation.shape) if activation.shape is not None else (2 if layer.channel_axis == -1 else 4)
        masked = gs.Variable(f"{layer.output}__masked", dtype=activation.dtype, shape=activation.shape)
        values = neuron_mask(layer, indices, rank).astype(activation.dtype or np.float32)  # the tensor's own type
        constant = gs.Constant(f"{layer.output}__mask", values)
        replace_uses(activation, masked)
        graph.nodes.append(gs.Node("Mul", f"{name}__mask", inputs=[activation, constant], outputs=[masked]))
    graph.toposort()
    return export_graph(graph, like=model)
