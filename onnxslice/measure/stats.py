"""Model size and cost: parameters, multiply-accumulates and measured onnxruntime latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from onnxslice.graph_utils import attribute, dims, static
from onnxslice.large import FLOAT_TYPES, without_weights
from onnxslice.runtime import input_name, input_shape, make_session, session_input_type

#: Default bound of a command's latency measurement of each model, in seconds.
DEFAULT_LATENCY_SECONDS = 2.0


def count_params(model: onnx.ModelProto) -> int:
    """Number of floating-point constants (weights, biases, normalisation parameters)."""
    return sum(int(np.prod(init.dims)) for init in model.graph.initializer if init.data_type in FLOAT_TYPES)


def fixed_input_shape(model: onnx.ModelProto, batch: int = 1) -> list[int]:
    """The data input's shape with the batch (and any other dynamic axis) set: batch first, then 1."""
    shape = input_shape(model)
    return [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else 1)
            for i, d in enumerate(shape)]


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes for one sample."""
    return sum(macs_by_node(model).values())


def macs_by_node(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates for one sample of each Conv, ConvTranspose, Gemm and MatMul node, by node name."""
    fixed = without_weights(model)
    name = input_name(fixed)
    for inp in fixed.graph.input:
        if inp.name == name:
            for dim, value in zip(inp.type.tensor_type.shape.dim, fixed_input_shape(fixed), strict=True):
                dim.Clear()
                dim.dim_value = value
    del fixed.graph.value_info[:]
    fixed = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    shapes = _known_shapes(fixed)
    weight_shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    macs: dict[str, int] = {}
    for node in fixed.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = weight_shapes.get(node.input[1])
            if weight is None:
                continue
            per_output = int(np.prod(weight[1:]))
            if node.op_type == "ConvTranspose":
                in_shape = shapes.get(node.input[0])
                macs[node.name or node.output[0]] = int(np.prod(in_shape)) * per_output if in_shape else 0
            else:
                macs[node.name or node.output[0]] = int(np.prod(out)) * per_output
        elif node.op_type in ("Gemm", "MatMul"):
            a_shape = shapes.get(node.input[0])
            if a_shape is None:
                continue
            inner = a_shape[-2] if (node.op_type == "Gemm" and attribute(node, "transA", 0)) else a_shape[-1]
            macs[node.name or node.output[0]] = int(np.prod(out)) * int(inner)
    return macs


def _known_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for info in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if (shape := static(dims(info))) is not None:
            shapes[info.name] = shape
    return shapes


@dataclass(frozen=True)
class Latency:
    """A latency measurement: the quickest round's mean milliseconds per batch, and what it cost."""

    ms: float
    runs: int  #: timed runs (warm-up runs not counted)
    seconds: float  #: time spent running the model, warm-up included (session creation not included)


def latency(model: onnx.ModelProto, batch: int = 32, repeats: int = 20, device: str = "auto", warmup: int = 3,
            threads: int | None = None, rounds: int = 5, max_seconds: float | None = None) -> Latency:
    """Mean milliseconds per batch of random inputs through onnxruntime, after warm-up runs.

    The mean is taken over ``repeats`` runs in each of ``rounds`` rounds and the quickest round is
    reported: on a shared machine the other rounds measure the neighbours as much as the model.
    ``max_seconds`` bounds the time spent running (warm-up included): no run starts after it has passed,
    except the first timed one, so a model slower than the bound is still measured once. The inputs are cast
    to the model's input type (a float16 model gets float16 inputs).
    """
    session = make_session(model, device, threads)
    feed = {input_name(model): np.random.default_rng(0).standard_normal(
        fixed_input_shape(model, batch), dtype=np.float32).astype(session_input_type(session))}
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds is not None else float("inf")
    for i in range(warmup):
        if i and time.perf_counter() >= deadline:
            break
        session.run(None, feed)
    means: list[float] = []
    runs = 0
    for _ in range(rounds):
        count, began = 0, time.perf_counter()
        for _ in range(repeats):
            if runs and time.perf_counter() >= deadline:
                break
            session.run(None, feed)
            count += 1
            runs += 1
        if count:
            means.append((time.perf_counter() - began) / count * 1000.0)
        if time.perf_counter() >= deadline:
            break
    return Latency(min(means), runs, time.perf_counter() - start)


def measure_latency(model: onnx.ModelProto, batch: int = 32, repeats: int = 20, device: str = "auto",
                    warmup: int = 3, threads: int | None = None, rounds: int = 5,
                    max_seconds: float | None = None) -> float:
    """:func:`latency` in milliseconds per batch."""
    return latency(model, batch, repeats, device, warmup, threads, rounds, max_seconds).ms
