"""Load an ONNX model into one canonical form and find its neuron layers.

Every later stage works on the canonical form: unique node names (the exporter's names are kept),
no Identity nodes, constants folded, shapes inferred. A *neuron layer* is a Conv, Gemm or MatMul with
a constant weight; its neurons are output channels / features, and the tensor observed for it is the
output of its element-wise tail (bias, normalisation, activation function).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.logger import G_LOGGER

from onnxslice.errors import InputError, first_line
from onnxslice.graph_utils import attribute, data_inputs, dims, opset_version, replace_uses, static
from onnxslice.large import copy_model, infer_shapes, through_file
from onnxslice.precision import BFLOAT16, elem_type, record_stored_types

log = logging.getLogger(__name__)

#: Element-wise ops that may follow a neuron layer and keep one value per neuron.
ACTIVATIONS = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Celu", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu",
}
#: Element-wise binary ops whose constant operand may be a per-neuron vector (bias, split BatchNorm).
AFFINE_OPS = {"Add", "Sub", "Mul", "Div"}


@dataclass(frozen=True)
class NeuronLayer:
    """A node that produces neurons, and the tensor observed for them."""

    name: str  #: ONNX node name of the Conv / Gemm / MatMul
    op_type: str
    size: int  #: number of neurons (output channels or features)
    weight: str  #: name of the constant weight
    output: str  #: the observed activation: output of the element-wise tail
    channel_axis: int  #: axis of the neurons in ``output``: 1 for Conv (3 after an NHWC Transpose), -1 for dense
    tail: tuple[str, ...]  #: names of the tail nodes, in order
    is_output: bool  #: no neuron layer downstream: its neurons are the categories themselves
    display: str = ""  #: the source module's path when the exporter recorded it (see :func:`display_name`)
    #: axis of the samples in ``output``: 0 unless a probe found it elsewhere (see :mod:`onnxslice.profiling.batch`)
    batch_axis: int = 0


@dataclass(frozen=True)
class LayerScan:
    layers: list[NeuronLayer]
    skipped: dict[str, str]  #: node name -> why it is not a neuron layer

    def by_name(self) -> dict[str, NeuronLayer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def hidden(self) -> list[NeuronLayer]:
        """The layers whose neurons can be sliced (all but the classifier outputs)."""
        return [layer for layer in self.layers if not layer.is_output]


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read, check and canonicalise an ONNX file; every problem is an InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:  # (a missing external data file is a ValidationError)
        model = onnx.load(str(path), load_external_data=True)
    except (DecodeError, RuntimeError, ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise InputError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(str(path))  # by path: works at any size and checks the external data files
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise InputError(f"{path}: invalid ONNX model ({first_line(exc)})") from None
    _check_runnable(model, path)
    try:
        canonical = canonicalize(model)
    except Exception as exc:  # noqa: BLE001 - any failure here is a model we cannot read
        raise InputError(f"{path}: cannot canonicalise the graph ({first_line(exc)})") from None
    _check_bfloat16_runs(canonical, path)
    return canonical


#: Operator domains onnxruntime implements ("" is the default ONNX domain).
RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training"}


def _check_runnable(model: onnx.ModelProto, path: Path) -> None:
    """What onnxslice needs before anything runs, named with the file: one data input, an ONNX opset this onnx
    knows, and no operator of a domain onnxruntime does not implement (unless the model defines it)."""
    inputs = [info.name for info in data_inputs(model.graph)]
    if len(inputs) != 1:
        raise InputError(f"{path}: the model has {len(inputs)} data inputs ({', '.join(inputs)}); "
                         "onnxslice handles classifiers with one input")
    newest, opset = onnx.defs.onnx_opset_version(), opset_version(model, 0)
    if opset > newest:
        raise InputError(f"{path}: the model uses ONNX opset {opset}; this onnx knows up to {newest}")
    functions = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in functions:
            raise InputError(f"{path}: node {node.name or node.op_type!r} is {node.domain}:{node.op_type}, a custom "
                             "operator onnxruntime does not implement")


def _check_bfloat16_runs(model: onnx.ModelProto, path: Path) -> None:
    """A model with a node other than Cast that reads or writes bfloat16 must run on onnxruntime's CPU provider
    (which computes few ops in bfloat16, and runs verification and statistics); else an InputError naming the file
    and onnxruntime's reason (the op)."""
    types = {v.name: elem_type(v) for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    if not any(types.get(name) == BFLOAT16 for node in model.graph.node if node.op_type != "Cast"
               for name in [*node.input, *node.output]):
        return
    try:
        through_file(model, lambda source: ort.InferenceSession(source, providers=["CPUExecutionProvider"]))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types; its message names the op
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))
        raise InputError(f"{path}: onnxruntime's CPU provider cannot run this bfloat16 model ({reason}); compute in "
                         "float32 (bfloat16 weights can stay, cast to float32)") from None


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Name every node, drop Identity nodes, fold constants and infer shapes; keeps node names. Weights stored in
    float16 or bfloat16 and cast to float32 are folded to float32 and their stored type recorded
    (:mod:`onnxslice.precision`)."""
    model = copy_model(model)
    _name_nodes(model.graph)
    record_stored_types(model)
    with G_LOGGER.suppress(G_LOGGER.ERROR):  # its warning (once) that bfloat16 has no numpy type
        graph = gs.import_onnx(model)
    _remove_identities(graph)
    fold_constants(graph).cleanup().toposort()
    canonical = infer_shapes(export_graph(graph, like=model))
    _keep_node_metadata(model.graph, canonical.graph)
    _explicit_same_padding(canonical)
    return canonical


def _keep_node_metadata(source: onnx.GraphProto, target: onnx.GraphProto) -> None:
    """Copy each node's ``metadata_props`` (where exporters record the source module) by node name;
    onnx-graphsurgeon drops them."""
    props = {node.name: node.metadata_props for node in source.node if node.metadata_props}
    for node in target.node:
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])


def fold_constants(graph: gs.Graph, **options: object) -> gs.Graph:
    """onnx-graphsurgeon's constant folding, where a part that cannot be evaluated (e.g. over protobuf's 2 GB)
    stays unfolded; its warnings, which it prints, go to stderr (stdout may be a command's JSON)."""
    with contextlib.redirect_stdout(sys.stderr):
        return graph.fold_constants(error_ok=True, **options)


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export an onnx-graphsurgeon graph with the IR version, opsets, producer and metadata of ``like``."""
    model = gs.export_onnx(graph, do_type_check=False)
    model.metadata_props.extend(like.metadata_props)
    model.ir_version = like.ir_version
    del model.opset_import[:]
    model.opset_import.extend(like.opset_import)
    model.producer_name = like.producer_name
    model.producer_version = like.producer_version
    return model


def _name_nodes(graph: onnx.GraphProto) -> None:
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        while name in seen:
            name = f"{name}_{index}"
        node.name = name
        seen.add(name)


def _explicit_same_padding(model: onnx.ModelProto) -> None:
    """Replace ``auto_pad=SAME_UPPER/SAME_LOWER`` of Conv and pooling by explicit ``pads`` where the input's
    spatial size is known (JAX and TensorFlow exporters use it; onnx2torch and some runtimes do not)."""
    shapes = {info.name: dims(info)[2:] for info in [*model.graph.value_info, *model.graph.input]}
    constants = {init.name: init.dims for init in model.graph.initializer}
    for node in model.graph.node:
        mode = attribute(node, "auto_pad", b"NOTSET").decode()
        if node.op_type not in ("Conv", "MaxPool", "AveragePool") or mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        spatial = static(shapes.get(node.input[0]))
        if spatial is None:
            continue
        kernel = attribute(node, "kernel_shape")
        if kernel is None and node.op_type == "Conv" and node.input[1] in constants:
            kernel = list(constants[node.input[1]])[2:]
        elif kernel is None:
            continue
        strides = attribute(node, "strides", [1] * len(spatial))
        dilations = attribute(node, "dilations", [1] * len(spatial))
        begins, ends = [], []
        for size, k, stride, dilation in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((-(-size // stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if mode == "SAME_UPPER" else large)
            ends.append(large if mode == "SAME_UPPER" else small)
        keep = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*keep, onnx.helper.make_attribute("pads", begins + ends)])


def _remove_identities(graph: gs.Graph) -> None:
    """Bypass Identity nodes; one that produces a graph output is kept as the output's source."""
    outputs = set(id(tensor) for tensor in graph.outputs)
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        source, result = node.inputs[0], node.outputs[0]
        if id(result) in outputs:
            continue
        replace_uses(result, source)
        node.outputs.clear()
        node.inputs.clear()


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """All initializers of the main graph as numpy arrays, by name."""
    return {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}


def consumers_of(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            if name:
                users[name].append(node)
    return users


def find_neuron_layers(model: onnx.ModelProto) -> LayerScan:
    """Find the Conv / Gemm / MatMul nodes with constant weights and the tensors observed for them."""
    constants = constant_values(model)
    users = consumers_of(model)
    graph_outputs = {out.name for out in model.graph.output}
    candidates: list[tuple[onnx.NodeProto, int, str, int]] = []
    skipped: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        size_or_reason = _layer_size(node, constants)
        if isinstance(size_or_reason, str):
            skipped[node.name] = size_or_reason
            continue
        axis = 1 if node.op_type == "Conv" else -1
        candidates.append((node, size_or_reason, node.input[1], axis))

    layer_nodes = {node.name for node, *_ in candidates}
    layers = []
    for node, size, weight, axis in candidates:
        rank = constants[weight].ndim if node.op_type == "Conv" else 2
        tail, output, axis = _follow_tail(node, users, constants, size, axis, rank, graph_outputs)
        downstream = _reaches_layer(output, users, layer_nodes)
        layers.append(NeuronLayer(node.name, node.op_type, size, weight, output, axis, tuple(tail), not downstream,
                                  display_name(node, weight)))
    shared = {name for name, count in Counter(layer.display for layer in layers).items() if count > 1}
    layers = [replace(layer, display=f"{layer.display} ({layer.name})") if layer.display in shared else layer
              for layer in layers]
    return LayerScan(layers, skipped)


#: Node metadata in which PyTorch's dynamo exporter records the module scopes a node came from.
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def display_name(node: onnx.NodeProto, weight: str) -> str:
    """The module path a layer came from, e.g. ``layer1.0.conv1``, else the node name.

    Read, in order, from: a weight named ``<module path>.weight`` (both PyTorch exporters keep parameter names
    where the weight is used as is; the dynamo exporter's BatchNorm folding keeps the conv's); the dynamo
    exporter's ``pkg.torch.onnx.name_scopes`` node metadata (module paths, then the op); a legacy-exporter node
    name ``/layer1/layer1.0/conv1/Conv`` (scopes, then the op; a scope that extends its parent's name, as children
    of a Sequential do, replaces it).
    """
    if weight.endswith(".weight") and not weight.startswith(("/", "onnx::")):
        return weight.removesuffix(".weight")
    scopes = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES_KEY), None)
    if scopes is not None:
        with contextlib.suppress(ValueError, SyntaxError, TypeError):
            modules = [scope for scope in ast.literal_eval(scopes)[:-1] if isinstance(scope, str) and scope]
            if modules:
                return modules[-1]
    parts = node.name.split("/")
    if node.name.startswith("/") and len(parts) > 2:
        path: list[str] = []
        for part in parts[1:-1]:  # a scope that extends the previous one ("layer1" -> "layer1.0") replaces it
            path = [*path[:-1], part] if path and part.startswith(path[-1] + ".") else [*path, part]
        return ".".join(path)
    return node.name


def _layer_size(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> int | str:
    if len(node.input) < 2 or node.input[1] not in constants:
        return "weight is not a constant (computed at run time)"
    if node.input[0] in constants:
        return "input is a constant"
    weight = constants[node.input[1]]
    if node.op_type == "Conv":
        return int(weight.shape[0])
    if weight.ndim != 2:
        return f"weight has rank {weight.ndim}, expected 2"
    if node.op_type == "Gemm":
        return int(weight.shape[0] if attribute(node, "transB", 0) else weight.shape[1])
    return int(weight.shape[1])


def _is_per_neuron(value: np.ndarray, size: int, axis: int, rank: int) -> bool:
    """A constant that broadcasts along the neuron axis only (a bias or a scale)."""
    if value.size == 1:
        return True
    if value.size != size:
        return False
    position = axis if axis < 0 else axis - (rank - value.ndim)
    return -value.ndim <= position < value.ndim and value.shape[position] == size


def _follow_tail(
    node: onnx.NodeProto,
    users: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
    size: int,
    axis: int,
    rank: int,
    graph_outputs: set[str],
) -> tuple[list[str], str, int]:
    """Walk the single-consumer chain of element-wise ops after a layer: (tail nodes, output, neuron axis).

    A Transpose with a known permutation (NHWC exporters wrap every Conv in them) moves the neuron axis
    and is followed through when element-wise ops come after it; a trailing one is not part of the tail.
    """
    steps: list[tuple[str, str, int, bool]] = []  # (node, output, axis, is_transpose)
    output = node.output[0]
    while output not in graph_outputs and users.get(output):
        gelu = _erf_gelu(output, users, constants)
        if gelu is not None:  # GELU written out (the legacy exporter's opset <= 19): one activation
            steps += [(name, out, axis, False) for name, out in gelu]
            output = gelu[-1][1]
            continue
        if len(users[output]) != 1:
            break
        nxt = users[output][0]
        if nxt.input[0] != output and nxt.op_type not in ("Add", "Mul"):
            break
        if nxt.op_type in ACTIVATIONS or (nxt.op_type == "BatchNormalization" and axis == 1):
            pass
        elif nxt.op_type in AFFINE_OPS:
            other = [name for name in nxt.input if name != output]
            if len(other) != 1 or other[0] not in constants:
                break
            if not _is_per_neuron(constants[other[0]], size, axis, rank):
                break
        elif nxt.op_type == "Transpose" and axis >= 0:
            perm = attribute(nxt, "perm")
            if perm is None or len(perm) != rank:
                break
            axis = perm.index(axis)
        else:
            break
        output = nxt.output[0]
        steps.append((nxt.name, output, axis, nxt.op_type == "Transpose"))
    while steps and steps[-1][3]:
        steps.pop()
    if not steps:
        return [], node.output[0], 1 if node.op_type == "Conv" else -1
    return [name for name, *_ in steps], steps[-1][1], steps[-1][2]


def _erf_gelu(tensor: str, users: dict[str, list[onnx.NodeProto]], constants: dict[str, np.ndarray]
              ) -> list[tuple[str, str]] | None:
    """The nodes and outputs of GELU written out as PyTorch's legacy exporter writes it,
    ``(x * (erf(x / √2) + 1)) * 0.5`` (Div, Erf, Add, Mul, Mul), where ``tensor`` is x and read by nothing else;
    else None."""
    def const(node: onnx.NodeProto, other_than: str, value: float) -> bool:
        others = [name for name in node.input if name != other_than]
        return len(others) == 1 and others[0] in constants and constants[others[0]].size == 1 and \
            bool(np.isclose(float(constants[others[0]].reshape(())), value, rtol=1e-3))

    def only_user(name: str, op: str) -> onnx.NodeProto | None:
        found = users.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    readers = users.get(tensor, [])
    div = next((n for n in readers if n.op_type == "Div" and n.input[0] == tensor), None)
    if len(readers) != 2 or div is None or not const(div, tensor, math.sqrt(2)):
        return None
    erf = only_user(div.output[0], "Erf")
    add = erf and only_user(erf.output[0], "Add")
    if add is None or not const(add, erf.output[0], 1.0):
        return None
    mul = only_user(add.output[0], "Mul")
    if mul is None or sorted(mul.input) != sorted([tensor, add.output[0]]) or mul not in readers:
        return None
    half = only_user(mul.output[0], "Mul")
    if half is None or not const(half, mul.output[0], 0.5):
        return None
    return [(n.name, n.output[0]) for n in (div, erf, add, mul, half)]


def _reaches_layer(tensor: str, users: dict[str, list[onnx.NodeProto]], layer_nodes: set[str]) -> bool:
    stack, seen = [tensor], {tensor}
    while stack:
        for consumer in users.get(stack.pop(), []):
            if consumer.name in layer_nodes:
                return True
            for out in consumer.output:
                if out not in seen:
                    seen.add(out)
                    stack.append(out)
    return False
