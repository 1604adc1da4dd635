"""Models over protobuf's 2 GB limit: the whole-model operations that would serialise them go through here.

Protobuf refuses to serialise (and, with upb, even to measure: ``ByteSize``) a model over 2 GB, so when
:func:`is_large` says so (weights over :data:`EXTERNAL_DATA_BYTES`, just under the limit) copies use
``CopyFrom``; shape inference runs on a *weight-free twin* (float initializers over 1 KB emptied, which
shape inference never reads) and the inferred shapes are copied back; the checker, onnxruntime and
writing go through a file whose weights are saved as external data. Below the limit nothing changes.
Constant folding (:func:`onnxslice.graph.fold_constants`) leaves a part it cannot serialise unfolded.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import onnx

from onnxslice.files import output_mode, write_atomically
from onnxslice.precision import restore_stored_types

#: Models larger than this are inferred, checked, run and saved through files with external data.
EXTERNAL_DATA_BYTES = 2**31 - 2**26

#: Initializers larger than this go to the external data file, and are emptied in the weight-free twin.
WEIGHT_BYTES = 1024

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}

T = TypeVar("T")


def is_large(model: onnx.ModelProto) -> bool:
    """Whether the weights of the main graph exceed :data:`EXTERNAL_DATA_BYTES` (counted from types and dims:
    ``ByteSize()`` serialises the model, and fails above 2 GB)."""
    return sum(tensor_bytes(init) for init in model.graph.initializer) > EXTERNAL_DATA_BYTES


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's values held in memory (0 for a reference to external data not loaded)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy that works at any size (``FromString(SerializeToString())`` fails over 2 GB)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def save_model(model: onnx.ModelProto, path: str | Path, data_name: str | None = None) -> Path:
    """Save ``model``; a large one keeps its weights in ``data_name`` (default ``<file name>.data``) in the
    same folder."""
    path = Path(path)
    if is_large(model):  # a copy: onnx.save turns the tensors it writes out into references, in place
        onnx.save(copy_model(model), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data_name or f"{path.name}.data", size_threshold=WEIGHT_BYTES)
    else:
        onnx.save(model, str(path))
    return path


def write_model(model: onnx.ModelProto, out: Path) -> str | None:
    """Write all-or-nothing, weights in the types the original stored them in (:mod:`onnxslice.precision`); a large
    model gets its weights in ``<output>.data`` (returned) beside it."""
    model = restore_stored_types(model)
    if not is_large(model):
        write_atomically(out, lambda tmp: save_model(model, tmp))
        return None
    data_name = f"{out.name}.data"
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        save_model(model, Path(folder) / out.name, data_name)  # both files complete before either is moved
        for name, target in ((data_name, out.parent / data_name), (out.name, out)):
            os.chmod(Path(folder) / name, output_mode(target))
            os.replace(Path(folder) / name, target)
    return data_name


def through_file(model: onnx.ModelProto, use: Callable[[bytes | str], T]) -> T:
    """``use(serialised model)``, or for a large model ``use(path)`` of the model saved with external data in a
    temporary folder (the ONNX checker and onnxruntime accept either; onnxruntime reads the weights when the
    session is made, so the folder may go once ``use`` returns)."""
    if not is_large(model):
        return use(model.SerializeToString())
    with tempfile.TemporaryDirectory(prefix="onnxslice.") as folder:
        return use(str(save_model(model, Path(folder) / "model.onnx")))


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """The ONNX checker, through a file for a large model."""
    through_file(model, lambda given: onnx.checker.check_model(given, full_check=full_check))


def infer_shapes(model: onnx.ModelProto, data_prop: bool = True) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes``; a large model is inferred on its weight-free twin and the shapes
    (``value_info`` and the typed outputs) are copied onto a copy of the model."""
    if not is_large(model):
        return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    inferred = onnx.shape_inference.infer_shapes(without_weights(model), data_prop=data_prop)
    result = copy_model(model)
    for field in ("value_info", "output"):
        del getattr(result.graph, field)[:]
        getattr(result.graph, field).extend(getattr(inferred.graph, field))
    return result


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every float initializer over :data:`WEIGHT_BYTES` emptied (names, types and dims kept,
    marked as external data so that nothing can read them as values): small enough to serialise."""
    twin = onnx.ModelProto()
    graph = model.graph
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(twin, field, getattr(model, field))
    for field in ("opset_import", "metadata_props", "functions"):
        getattr(twin, field).extend(getattr(model, field))
    twin.graph.name = graph.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(twin.graph, field).extend(getattr(graph, field))
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES and tensor_bytes(init) > WEIGHT_BYTES:
            stub = twin.graph.initializer.add(name=init.name, data_type=init.data_type, dims=init.dims,
                                              data_location=onnx.TensorProto.EXTERNAL)
            stub.external_data.add(key="location", value="weights-not-loaded")
        else:
            twin.graph.initializer.append(init)
    return twin


def external_data_files(path: str | Path) -> list[Path]:
    """The external data files an ONNX file refers to (none when it cannot be read: loading it will say why)."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not our job here: load_model reports an unreadable model
        return []
    locations = {entry.value for tensor in model.graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
                 for entry in tensor.external_data if entry.key == "location"}
    return [path.parent / location for location in sorted(locations)]
