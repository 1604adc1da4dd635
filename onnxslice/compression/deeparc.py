"""The DeepArc baseline (Ren et al., ICSE 2023; paper §2.2): layer-level modules and redundant-layer removal.

On data, the linear CKA (centred, Kornblith et al. 2019) between the observed outputs of consecutive
neuron layers (graph order) measures how similar their representations are. Consecutive layers whose
similarity exceeds a threshold (DeepArc's 0.99) form one module; within a module, the layers after the
first are redundant. They are removed in spans of consecutive layers, each as long as it can be (from the
left): the nodes that compute the span's last observed output (after its element-wise tail) from the tensor
its first layer reads. A span must be closed (it reads nothing from outside but that tensor and constants)
and private (nothing outside reads its intermediate tensors). The classifier layer is never removed.

Where the span's input has the shape of its output, it is bypassed (its readers read its input). Where the
shapes differ, DeepArc inserts a "sewing layer" that aligns them: here a linear map fitted by least squares
from the activations entering the span to those leaving it on the profiling data — a Gemm for flat
features, a 1×1 Conv (the same map at every position) for feature maps of the same spatial size. Other
changes (spatial size, rank) keep the span, with the reason. A sewing layer over one dense layer has that
layer's size, so removing it saves nothing (the paper's §5.2 finding for the MLP); it saves parameters when
it replaces several layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslice.data import DataSource
from onnxslice.graph import NeuronLayer, consumers_of, export_graph, find_neuron_layers
from onnxslice.graph_utils import dims, replace_uses, static
from onnxslice.large import infer_shapes
from onnxslice.measure.stats import count_params
from onnxslice.profiling.profiler import with_outputs
from onnxslice.profiling.similarity import linear_cka
from onnxslice.runtime import Runner

DEFAULT_THRESHOLD = 0.99
DEFAULT_MAX_PER_CLASS = 64


@dataclass
class DeepArcResult:
    model: onnx.ModelProto  #: the model with the removable redundant layers bypassed or sewn over
    layers: list[str]  #: neuron layers in graph order
    similarities: list[float]  #: CKA between layers i and i + 1
    modules: list[list[str]]
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  #: redundant layer -> why it stays
    #: one per sewing layer: the layers it replaces, its op, shapes, parameters and fit (R² on the data)
    sewing: list[dict] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def to_json(self) -> dict:
        return {"layers": self.layers, "similarities": self.similarities, "modules": self.modules,
                "removed": self.removed, "kept_redundant": self.kept, "sewing": self.sewing,
                "params_before": self.params_before, "params_after": self.params_after,
                "params_removed": self.params_before - self.params_after}


@dataclass(frozen=True)
class Span:
    """Consecutive redundant layers removed together: the nodes computing ``leaving`` from ``entering``."""

    layers: list[str]
    entering: str  #: the tensor the first layer reads
    leaving: str  #: the last layer's observed output
    nodes: list[str]
    sewing: str | None  #: None (bypass), "Gemm" or "Conv"
    shapes: tuple[list[int], list[int]]  #: entering and leaving shapes without the batch axis


def layer_similarities(model: onnx.ModelProto, data: DataSource, layers: Sequence[NeuronLayer],
                       device: str = "auto") -> list[float]:
    """CKA between the observed outputs of each pair of consecutive layers on ``data``."""
    outputs = activations(model, data, [layer.output for layer in layers], device)
    return [linear_cka(a, b) for a, b in zip(outputs[:-1], outputs[1:], strict=True)]


def activations(model: onnx.ModelProto, data: DataSource, tensors: Sequence[str], device: str = "auto") -> list[
        np.ndarray]:
    """The values of ``tensors`` on all of ``data``."""
    runner = Runner.create(with_outputs(model, tensors), device)
    x, _ = runner.prepare(data).arrays()
    return runner.run(x, list(tensors))


def modules_of(names: Sequence[str], similarities: Sequence[float], threshold: float) -> list[list[str]]:
    """Runs of consecutive layers linked by a similarity above ``threshold``."""
    modules = [[names[0]]]
    for name, similarity in zip(names[1:], similarities, strict=True):
        if similarity > threshold:
            modules[-1].append(name)
        else:
            modules.append([name])
    return modules


def span_of(model: onnx.ModelProto, layers: Sequence[NeuronLayer], sew: bool = True) -> Span | str:
    """The span removing ``layers`` (consecutive, in graph order), or why they cannot be removed together."""
    if any(layer.is_output for layer in layers):
        return "classifier output layer"
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    entering, leaving = nodes[layers[0].name].input[0], layers[-1].output
    if leaving in {out.name for out in graph.output}:
        return "its output is a graph output"
    closure = _closure(graph, entering, leaving)
    if isinstance(closure, str):
        return closure
    if any(layer.name not in closure for layer in layers):
        return f"{leaving} is not computed from {entering} through these layers"
    users = consumers_of(model)
    for name in closure:
        for tensor in nodes[name].output:
            if tensor != leaving and any(reader.name not in closure for reader in users[tensor]):
                return f"{tensor} has other readers (not a straight chain)"
    shapes = {info.name: dims(info)[1:] for info in [*graph.value_info, *graph.input, *graph.output]}
    source, result = static(shapes.get(entering)), static(shapes.get(leaving))
    if source is None or result is None:
        return "input or output shape unknown"
    order = [node.name for node in graph.node if node.name in closure]
    if source == result:
        return Span([layer.name for layer in layers], entering, leaving, order, None, (source, result))
    change = f"shapes differ ({source} -> {result})"
    if not sew:
        return f"{change}: removal needs a sewing layer"
    if any(layer.batch_axis != 0 for layer in layers):
        return f"{change}: samples are not on axis 0, no sewing layer"
    if len(source) == len(result) == 1:
        kind = "Gemm"
    elif (len(source) == len(result) == 3 and source[1:] == result[1:] and nodes[layers[0].name].op_type == "Conv"
          and layers[-1].op_type == "Conv" and layers[-1].channel_axis == 1):
        kind = "Conv"
    else:
        return f"{change}: no sewing layer (a 1x1 Conv needs feature maps of the same size, a Gemm flat features)"
    return Span([layer.name for layer in layers], entering, leaving, order, kind, (source, result))


def _closure(graph: onnx.GraphProto, entering: str, leaving: str) -> set[str] | str:
    """The names of the nodes that compute ``leaving`` from ``entering`` and constants, or what else it reads."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    closure: set[str] = set()
    pending = [leaving]
    while pending:
        tensor = pending.pop()
        if tensor in (entering, "") or tensor in constants:
            continue
        node = producers.get(tensor)
        if node is None:
            return f"it reads {tensor} from outside the removed layers"
        if node.name not in closure:
            closure.add(node.name)
            pending.extend(node.input)
    return closure


def plan(model: onnx.ModelProto, redundant: Sequence[NeuronLayer], sew: bool = True) -> tuple[list[Span], dict]:
    """The spans removing ``redundant`` (one module's layers after its first), longest first from the left; and
    the layers no span removes, with the reason they cannot be removed alone."""
    spans, kept, start = [], {}, 0
    while start < len(redundant):
        for stop in range(len(redundant), start, -1):
            found = span_of(model, redundant[start:stop], sew)
            if isinstance(found, Span):
                spans.append(found)
                start = stop
                break
        else:
            kept[redundant[start].name] = found
            start += 1
    return spans, kept


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``y ≈ x Wᵀ + b`` (samples in rows; the minimum-norm W where x is rank-deficient): W, b and
    R² of the fit (1 where ``y`` is constant and reproduced)."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    x_mean, y_mean = x64.mean(0), y64.mean(0)
    coef, *_ = np.linalg.lstsq(x64 - x_mean, y64 - y_mean, rcond=None)
    weight = coef.T
    bias = y_mean - weight @ x_mean
    residual = ((x64 @ weight.T + bias - y64) ** 2).sum()
    total = ((y64 - y_mean) ** 2).sum()
    return weight, bias, float(1.0 - residual / total) if total > 0 else float(residual == 0)


def sew_spans(model: onnx.ModelProto, spans: Sequence[Span], data: DataSource | None,
              device: str = "auto") -> tuple[onnx.ModelProto, list[dict]]:
    """``model`` with each span removed: bypassed, or replaced by its sewing layer fitted on ``data`` (needed
    when a span has one); and a description of each sewing layer."""
    sewn = [span for span in spans if span.sewing is not None]
    values: dict[str, np.ndarray] = {}
    if sewn:
        if data is None:
            raise ValueError("sewing layers are fitted on data")
        names = list(dict.fromkeys(t for span in sewn for t in (span.entering, span.leaving)))
        values = dict(zip(names, activations(model, data, names, device), strict=True))
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    nodes = {node.name: node for node in graph.nodes}
    described = []
    for span in spans:
        source, result = nodes[span.layers[0]].inputs[0], tensors[span.leaving]
        if span.sewing is None:
            replace_uses(result, source)
            continue
        name = f"{span.layers[0]}/sewing"
        x, y = values[span.entering], values[span.leaving]
        if span.sewing == "Conv":  # one map at every position: pixels are samples
            x, y = (a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1]) for a in (x, y))
        weight, bias, r2 = fit_linear(x, y)
        if span.sewing == "Conv":
            weight, attrs = weight[:, :, None, None], {"kernel_shape": [1, 1]}
        else:
            attrs = {"transB": 1}
        out = gs.Variable(f"{name}_output_0", dtype=np.float32)
        graph.nodes.append(gs.Node(span.sewing, name, attrs, [source, gs.Constant(f"{name}.weight",
                                   weight.astype(np.float32)), gs.Constant(f"{name}.bias", bias.astype(np.float32))],
                                   [out]))
        replace_uses(result, out)
        described.append({"name": name, "op": span.sewing, "replaces": span.layers, "input_shape": span.shapes[0],
                          "output_shape": span.shapes[1], "params": int(weight.size + bias.size), "fit_r2": r2})
    graph.cleanup().toposort()
    return infer_shapes(export_graph(graph, like=model)), described


def deeparc(model: onnx.ModelProto, data: DataSource, threshold: float = DEFAULT_THRESHOLD,
            device: str = "auto", sew: bool = True) -> DeepArcResult:
    """Modularise ``model`` by layer similarity on ``data`` and remove the removable redundant layers: bypassed
    where shapes agree, else (``sew``) replaced by a sewing layer fitted on ``data``."""
    layers = find_neuron_layers(model).layers
    names = [layer.name for layer in layers]
    similarities = layer_similarities(model, data, layers, device) if len(layers) > 1 else []
    modules = modules_of(names, similarities, threshold)
    by_name = {layer.name: layer for layer in layers}
    spans, kept = [], {}
    for module in modules:
        redundant = [by_name[name] for name in module[1:]]
        classifier = [layer for layer in redundant if layer.is_output]
        kept.update({layer.name: "classifier output layer" for layer in classifier})
        found, reasons = plan(model, [layer for layer in redundant if not layer.is_output], sew)
        spans += found
        kept.update(reasons)
    result, sewing = sew_spans(model, spans, data, device) if spans else (model, [])
    return DeepArcResult(result, names, similarities, modules, [name for span in spans for name in span.layers],
                         kept, sewing, count_params(model), count_params(result))
