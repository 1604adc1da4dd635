"""Models in bfloat16: the two forms onnxslice handles, and the edits that let it run and write them.

numpy has no bfloat16 (onnx reads such tensors as ``ml_dtypes.bfloat16`` arrays) and onnxruntime's Python API
exchanges no bfloat16 array, while its CPU provider computes few ops in bfloat16 (onnxruntime 1.32: not Conv,
MatMul, Gemm, Relu, Add or Mul). So:

* A model that **computes** in bfloat16 (``model.bfloat16()`` exported as is) is refused when loaded, with
  onnxruntime's message naming the op (``onnxslice.graph.load_model``).
* A model that **stores** low-precision weights cast to float32 inside the graph, and may take and give bfloat16
  (how mixed-precision exports look), works: the canonical form folds each ``Cast(weight)`` into a float32 weight
  and records the stored type (:func:`record_stored_types`); a model written from it stores its weights in that
  type again (:func:`restore_stored_types`). Sessions take and give float32 (:func:`float_boundaries`).
"""

from __future__ import annotations

import json

import numpy as np
import onnx

from onnxslice.graph_utils import attribute

BFLOAT16 = onnx.TensorProto.BFLOAT16
#: Initializer types a weight may be stored in and cast from to float32.
STORED_TYPES = (BFLOAT16, onnx.TensorProto.FLOAT16)
#: Model metadata key of the record: a JSON list of the types the model stores weights in.
STORED_KEY = "onnxslice.stored_types"


def record_stored_types(model: onnx.ModelProto) -> None:
    """Record (in the model's metadata, in place) the types of the float16 or bfloat16 initializers that are cast to
    float32, before constant folding turns them into float32 weights."""
    stored = {init.name: init.data_type for init in model.graph.initializer if init.data_type in STORED_TYPES}
    types = {stored[node.input[0]] for node in model.graph.node
             if node.op_type == "Cast" and node.input[0] in stored and attribute(node, "to") == onnx.TensorProto.FLOAT}
    if types:
        model.metadata_props.add(key=STORED_KEY, value=json.dumps(sorted(types)))


def restore_stored_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each float32 initializer whose values a recorded type holds exactly stored in that type and
    cast to float32 in the graph (sliced and masked weights are; values restructure computes, such as a bias that
    absorbs a removed channel's constant output, stay float32): the written model computes exactly what was
    verified. The record is removed; a model without one is returned as it is."""
    entry = next((prop for prop in model.metadata_props if prop.key == STORED_KEY), None)
    if entry is None:
        return model
    types = json.loads(entry.value)
    restored = onnx.ModelProto()
    restored.CopyFrom(model)
    props = [prop for prop in restored.metadata_props if prop.key != STORED_KEY]
    del restored.metadata_props[:]
    restored.metadata_props.extend(props)
    casts = []
    for init in restored.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = onnx.numpy_helper.to_array(init)
        for stored_type in types:
            stored = values.astype(onnx.helper.tensor_dtype_to_np_dtype(stored_type))
            if np.array_equal(stored.astype(np.float32), values):
                name = f"{init.name}__{onnx.helper.tensor_dtype_to_string(stored_type).split('.')[-1].lower()}"
                casts.append(onnx.helper.make_node("Cast", [name], [init.name], f"{name}__cast",
                                                   to=onnx.TensorProto.FLOAT))
                init.CopyFrom(onnx.numpy_helper.from_array(stored, name))
                break
    nodes = [*casts, *restored.graph.node]
    del restored.graph.node[:]
    restored.graph.node.extend(nodes)
    return restored


def float_boundaries(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` taking float32 where it takes bfloat16 and giving float32 where it gives bfloat16 (a Cast at each
    such input and output; names unchanged), for onnxruntime's Python API; the values computed are those of the
    model fed the inputs rounded to bfloat16. A model without bfloat16 inputs or outputs is returned as it is."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers and elem_type(v) == BFLOAT16]
    outputs = [v for v in model.graph.output if elem_type(v) == BFLOAT16]
    if not inputs and not outputs:
        return model
    bounded = onnx.ModelProto()
    bounded.CopyFrom(model)
    graph = bounded.graph
    renamed = {v.name: f"{v.name}__bfloat16" for v in [*inputs, *outputs]}
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    float32 = onnx.TensorProto.FLOAT
    nodes = [onnx.helper.make_node("Cast", [v.name], [renamed[v.name]], f"{v.name}__to_bfloat16", to=BFLOAT16)
             for v in inputs]
    nodes += graph.node
    nodes += [onnx.helper.make_node("Cast", [renamed[v.name]], [v.name], f"{v.name}__to_float", to=float32)
              for v in outputs]
    del graph.node[:]
    graph.node.extend(nodes)
    for value in [*graph.input, *graph.output]:
        if value.name in renamed:
            value.type.tensor_type.elem_type = float32
    return bounded


def elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0

