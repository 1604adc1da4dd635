"""Small readers and one edit of ONNX graphs that every stage shares: attributes, the opset, shapes, nodes by
name, and rewiring a tensor's readers.

Kept apart from :mod:`onnxslice.graph` (canonical form and neuron layers) so that modules below it
(:mod:`onnxslice.runtime`, :mod:`onnxslice.measure.stats`) can use them without importing onnx-graphsurgeon.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

#: Domain names of the default ONNX operator set.
ONNX_DOMAINS = ("", "ai.onnx")


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of ``node``'s attribute ``name`` (an int, float, bytes, list, ...), else ``default``."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def opset_version(model: onnx.ModelProto, default: int | None = None) -> int | None:
    """The version of the default ONNX operator set the model imports, else ``default``."""
    return next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), default)


def data_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph's inputs that are not initializers (older exporters list the weights among the inputs)."""
    initializers = {init.name for init in graph.initializer}
    return [info for info in graph.input if info.name not in initializers]


def node_named(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    """The node called ``name`` (canonical models have unique node names)."""
    found = next((node for node in graph.node if node.name == name), None)
    if found is None:
        raise KeyError(f"no node named {name!r}")
    return found


def dims(info: onnx.ValueInfoProto) -> list[int | str | None]:
    """A tensor's shape: an int per static axis, the symbol (e.g. 'batch') or None per dynamic one; empty when
    the shape (even the rank) is unknown."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in info.type.tensor_type.shape.dim]


def tensor_shapes(graph: onnx.GraphProto) -> dict[str, list[int | str | None]]:
    """The :func:`dims` of the graph's inputs, inferred intermediate tensors and outputs whose rank is known."""
    return {info.name: dims(info) for info in [*graph.input, *graph.value_info, *graph.output]
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")}


def static(shape: list[int | str | None] | None) -> list[int] | None:
    """``shape`` when every axis is static, else None."""
    return shape if shape is not None and all(isinstance(d, int) for d in shape) else None


def vector_length(shape: list[int | str | None] | None) -> int | None:
    """The static length of a 1-D tensor's shape, else None."""
    return shape[0] if shape is not None and len(shape) == 1 and isinstance(shape[0], int) else None


def concat_piece(lengths: Iterable[int | None], axis: int) -> tuple[int, int] | None:
    """Which piece of a shape built by Concat holds entry ``axis``, and the entry's index in it (None when a
    piece before it has an unknown length)."""
    offset = 0
    for piece, length in enumerate(lengths):
        if length is None:
            return None
        if axis < offset + length:
            return piece, axis - offset
        offset += length
    return None


def replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every node that reads ``old`` read ``new`` instead (onnx-graphsurgeon tensors); ``old``'s producer and
    graph outputs are left as they are."""
    for reader in list(old.outputs):
        for i, tensor in enumerate(reader.inputs):
            if tensor is old:
                reader.inputs[i] = new
