"""The DeepArc baseline (Ren et al., ICSE 2023; paper §2.2): layer-level modules and redundant-layer removal.

On data, the linear CKA (centred, Kornblith et al. 2019) between the observed outputs of consecutive
neuron layers (graph order) measures how similar their representations are. Consecutive layers whose
similarity exceeds a threshold (DeepArc's 0.99) form one module; within a module, the layers after the
first are redundant. A redundant layer is removed by bypassing it — the layer and its element-wise tail —
where shapes allow: its input has exactly the shape of its observed output (same channels and spatial
size) and the layer sits on a straight chain (nothing else reads its intermediate tensors). The classifier
layer is never removed. DeepArc would insert a "sewing layer" where the shapes differ; that keeps the
model's size (paper §5.2), so such a layer is reported as kept, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from onnxslice.data import DataSource
from onnxslice.graph import NeuronLayer, consumers_of, export_graph, find_neuron_layers
from onnxslice.graph_utils import dims, node_named, replace_uses, static
from onnxslice.profiling.profiler import with_observed_outputs
from onnxslice.profiling.similarity import linear_cka
from onnxslice.runtime import Runner

DEFAULT_THRESHOLD = 0.99
DEFAULT_MAX_PER_CLASS = 64


@dataclass
class DeepArcResult:
    model: onnx.ModelProto  #: the model with the removable redundant layers bypassed
    layers: list[str]  #: neuron layers in graph order
    similarities: list[float]  #: CKA between layers i and i + 1
    modules: list[list[str]]
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  #: redundant layer -> why it stays

    def to_json(self) -> dict:
        return {"layers": self.layers, "similarities": self.similarities, "modules": self.modules,
                "removed": self.removed, "kept_redundant": self.kept}


def layer_similarities(model: onnx.ModelProto, data: DataSource, layers: Sequence[NeuronLayer],
                       device: str = "auto") -> list[float]:
    """CKA between the observed outputs of each pair of consecutive layers on ``data``."""
    runner = Runner.create(with_observed_outputs(model, layers), device)
    data = runner.prepare(data)
    x, _ = data.arrays()
    outputs = runner.run(x, [layer.output for layer in layers])
    return [linear_cka(a, b) for a, b in zip(outputs[:-1], outputs[1:], strict=True)]


def modules_of(names: Sequence[str], similarities: Sequence[float], threshold: float) -> list[list[str]]:
    """Runs of consecutive layers linked by a similarity above ``threshold``."""
    modules = [[names[0]]]
    for name, similarity in zip(names[1:], similarities, strict=True):
        if similarity > threshold:
            modules[-1].append(name)
        else:
            modules.append([name])
    return modules


def why_not_removable(model: onnx.ModelProto, layer: NeuronLayer) -> str | None:
    """None when ``layer`` and its tail can be bypassed; otherwise the reason."""
    if layer.is_output:
        return "classifier output layer"
    shapes = {info.name: dims(info)[1:] for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    node = node_named(model.graph, layer.name)
    source_shape, result_shape = static(shapes.get(node.input[0])), static(shapes.get(layer.output))
    if source_shape is None or result_shape is None:
        return "input or output shape unknown"
    if source_shape != result_shape:
        return f"shapes differ ({source_shape} -> {result_shape}): removal needs a sewing layer"
    if layer.output in {out.name for out in model.graph.output}:
        return "its output is a graph output"
    users = consumers_of(model)
    tensor = node.output[0]
    for tail in layer.tail:
        if [n.name for n in users[tensor]] != [tail]:
            return f"{tensor} has other readers (not a straight chain)"
        tensor = node_named(model.graph, tail).output[0]
    return None


def bypass(model: onnx.ModelProto, layers: Sequence[NeuronLayer]) -> onnx.ModelProto:
    """``model`` with each layer (and its tail) removed: readers of its output read its input instead."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    nodes = {node.name: node for node in graph.nodes}
    for layer in layers:
        source, result = nodes[layer.name].inputs[0], tensors[layer.output]
        replace_uses(result, source)
    graph.cleanup().toposort()
    return export_graph(graph, like=model)


def deeparc(model: onnx.ModelProto, data: DataSource, threshold: float = DEFAULT_THRESHOLD,
            device: str = "auto") -> DeepArcResult:
    """Modularise ``model`` by layer similarity on ``data`` and bypass the removable redundant layers."""
    layers = find_neuron_layers(model).layers
    names = [layer.name for layer in layers]
    similarities = layer_similarities(model, data, layers, device) if len(layers) > 1 else []
    modules = modules_of(names, similarities, threshold)
    by_name = {layer.name: layer for layer in layers}
    removable, kept = [], {}
    for module in modules:
        for name in module[1:]:
            reason = why_not_removable(model, by_name[name])
            if reason is None:
                removable.append(by_name[name])
            else:
                kept[name] = reason
    result = bypass(model, removable) if removable else model
    return DeepArcResult(result, names, similarities, modules, [layer.name for layer in removable], kept)
