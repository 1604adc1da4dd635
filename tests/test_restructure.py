"""Restructure: physically removing channels computes what masking them computes.

Oracle throughout: ``onnxslice.surgery.mask.mask_model`` (each layer's observed activation multiplied by
its 0/1 mask, shapes unchanged) run in onnxruntime on random inputs; for planted dead neurons, the
original model itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.measure.stats import count_params
from onnxslice.runtime import input_name, make_session
from onnxslice.surgery.mask import mask_model
from onnxslice.surgery.restructure import restructure
from tests.helpers import CNN, MLP, example_torch_model, export_onnx


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model, "cpu").run(None, {input_name(model): x})[0]


def random_half(model: onnx.ModelProto, seed: int = 0) -> dict[str, list[int]]:
    """A seeded random half of each hidden layer's channels."""
    rng = np.random.default_rng(seed)
    return {layer.name: sorted(rng.choice(layer.size, max(1, layer.size // 2), replace=False).tolist())
            for layer in find_neuron_layers(model).hidden}


def assert_equals_mask(model: onnx.ModelProto, pruned: onnx.ModelProto, kept: dict, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    expected, got = run(mask_model(model, kept), x), run(pruned, x)
    scale = float(np.abs(expected).max())
    assert scale > 1e-3, "the probe gives a degenerate output; the comparison would prove nothing"
    assert np.abs(expected - got).max() <= 1e-4 * scale


def layer_sizes(model: onnx.ModelProto) -> dict[str, int]:
    return {layer.name: layer.size for layer in find_neuron_layers(model).layers}


def randomise_normalisation(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and shifts, so a removed channel leaves non-zero constants behind."""
    generator = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = 0.5 + torch.rand(n, generator=generator)
            bn.bias.data = 0.5 * torch.randn(n, generator=generator)
            bn.running_mean = 0.2 * torch.randn(n, generator=generator)
            bn.running_var = 0.5 + torch.rand(n, generator=generator)
    return module.eval()


@pytest.mark.parametrize(("path", "shape"), [(MLP, (64,)), (CNN, (1, 8, 8))])
@pytest.mark.parametrize("seed", [0, 1])
def test_example_models_equal_their_masked_version(path, shape, seed):
    model = load_model(path)
    kept = random_half(model, seed)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, shape)
    assert count_params(pruned) < count_params(model)
    assert report.channels_removed > 0
    onnx.checker.check_model(pruned, full_check=True)


def test_mlp_slice_removes_exactly_the_dropped_neurons():
    """The MLP has no coupling: every dropped neuron is removed, and the weight shapes say so."""
    model = load_model(MLP)
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    assert report.channels_removed == report.dropped_by_slice and report.zeroed == 0
    sizes = layer_sizes(pruned)
    for name, indices in kept.items():
        assert sizes[name] == len(indices)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_planted_dead_neurons_are_removed_and_outputs_unchanged(name, tmp_path):
    """Zero the weights and bias of some neurons before a ReLU: removing exactly them changes nothing."""
    module = example_torch_model(name)
    dead = [1, 4, 7, 10]
    with torch.no_grad():
        if name == "mlp":
            first = module[0]
            first.weight[dead] = 0
            first.bias[dead] = 0
            shape = (64,)
        else:
            conv, bn = module.features[3][0], module.features[3][1]  # stride-2 conv + BN, then ReLU
            conv.weight[dead] = 0
            bn.bias[dead] = 0
            bn.running_mean[dead] = 0
            shape = (1, 8, 8)
    model = load_model(export_onnx(module, shape, tmp_path / f"{name}_dead.onnx"))
    target = find_neuron_layers(model).hidden[0 if name == "mlp" else 3]
    kept = {target.name: [i for i in range(target.size) if i not in dead]}
    pruned, report = restructure(model, kept)
    assert report.channels[target.name] == (target.size, target.size - len(dead))
    x = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=1e-5, atol=1e-5)


class ConcatNorm(nn.Module):
    """Two branches concatenated, then BatchNorm + ReLU (DenseNet-style): removed channels leave relu(shift)."""

    def __init__(self, padded_consumer: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)
        self.post = nn.Conv2d(16, 8, 3, padding=1) if padded_consumer else nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(16 + 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)))
        z = torch.relu(self.post(y))
        return self.head(torch.cat([y.mean((2, 3)), z.mean((2, 3))], 1))


def test_constant_left_by_removed_channels_is_folded_into_the_bias(tmp_path):
    model = load_model(export_onnx(randomise_normalisation(ConcatNorm(False)), (3, 6, 6), tmp_path / "c.onnx"))
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    branch_layers = [layer.name for layer in find_neuron_layers(model).hidden][:2]
    assert all(report.channels[name][1] == len(kept[name]) for name in branch_layers)


def test_constant_that_cannot_be_folded_keeps_its_channels_and_says_why(tmp_path):
    """A padded 3x3 conv would see the constant only inside the padding border: exactly the dropped channels
    with relu(BatchNorm shift) != 0 are kept, with the reason; those with relu(shift) == 0 go."""
    module = randomise_normalisation(ConcatNorm(True))
    model = load_model(export_onnx(module, (3, 6, 6), tmp_path / "c.onnx"))
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    norm = module.norm
    shift = norm.bias - norm.running_mean * norm.weight / torch.sqrt(norm.running_var + norm.eps)
    nonzero = (torch.relu(shift) > 0).numpy()
    for offset, name in zip((0, 8), [layer.name for layer in find_neuron_layers(model).hidden][:2], strict=True):
        dropped = np.setdiff1d(np.arange(8), kept[name])
        assert report.channels[name][1] == len(kept[name]) + int(nonzero[offset + dropped].sum())
    assert any("cannot be folded (padding)" in group["reason"] for group in report.kept_whole)


class CoupledFold(ConcatNorm):
    """ConcatNorm whose 1x1 consumer is coupled to a skip conv by a residual Add: it folds and is zeroed."""

    def __init__(self) -> None:
        super().__init__(False)
        self.skip = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)))
        z = torch.relu(self.post(y) + self.skip(x))
        return self.head(torch.cat([y.mean((2, 3)), z.mean((2, 3))], 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_folding_consumer_that_is_also_partially_zeroed(tmp_path, seed):
    model = load_model(export_onnx(randomise_normalisation(CoupledFold()), (3, 6, 6), tmp_path / "f.onnx"))
    kept = random_half(model, seed)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    assert report.zeroed > 0 and report.channels_removed > 0


class Separable(nn.Module):
    """Depthwise and grouped convolutions, a squeeze-and-excitation gate (sigmoid tail) and a residual Add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 1, groups=2)
        self.squeeze = nn.Conv2d(8, 4, 1)
        self.excite = nn.Conv2d(4, 8, 1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.grouped(torch.relu(self.depthwise(x))))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        y = y * gate + x
        return self.head(torch.relu(self.expand(y)).mean((2, 3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depthwise_grouped_and_gated_channels(tmp_path, seed):
    model = load_model(export_onnx(Separable().eval(), (3, 6, 6), tmp_path / "s.onnx"))
    kept = random_half(model, seed)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    assert report.channels_removed > 0
    assert report.channels_removed + report.zeroed == report.dropped_by_slice  # no static reason here


def test_everything_dropped_in_a_coupled_group_is_removed(tmp_path):
    """Stem, depthwise, grouped (2 groups of 4, losing the same positions in both) and excite layers are
    coupled: drop channels 0, 1, 4, 5 of each and all four go from each."""
    model = load_model(export_onnx(Separable().eval(), (3, 6, 6), tmp_path / "s.onnx"))
    layers = {layer.name: layer.size for layer in find_neuron_layers(model).hidden}
    kept = {name: [2, 3, 6, 7] if size == 8 else list(range(size)) for name, size in layers.items()}
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    removed = {name: before - after for name, (before, after) in report.channels.items()}
    assert [removed[name] for name, size in layers.items() if size == 8] == [4, 4, 4, 4]


def test_constant_shared_by_several_layers_is_copied_before_slicing(tmp_path):
    """One zero bias initializer feeds two convs that keep different channels; the result still equals the mask."""
    module = Separable().eval()
    with torch.no_grad():
        module.stem.bias.zero_()
        module.grouped.bias.zero_()
    path = export_onnx(module, (3, 6, 6), tmp_path / "s.onnx")
    raw = onnx.load(str(path))
    convs = [n for n in raw.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    stem, grouped = next(n for n in convs if "stem" in n.name), next(n for n in convs if "grouped" in n.name)
    grouped.input[2] = stem.input[2]  # the shared zero bias, as the legacy exporter makes for equal tensors
    onnx.save(raw, str(path))
    model = load_model(path)
    shared = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert sum(n.input[2] == stem.input[2] for n in shared) == 2
    kept = random_half(model, seed=3)
    pruned, _ = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a conv: its channels cannot be removed without changing the statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x).permute(0, 2, 3, 1))
        y = y + self.fc2(nn.functional.gelu(self.fc1(y)))  # a transformer MLP block: MatMul -> Gelu -> MatMul
        return self.head(y.mean((1, 2)))


def test_group_touched_by_a_cross_channel_op_is_kept_whole_and_reported(tmp_path):
    model = load_model(export_onnx(ChannelNorm().eval(), (3, 4, 4), tmp_path / "n.onnx"))
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 4, 4))
    conv, fc1 = (layer.name for layer in find_neuron_layers(model).hidden[:2])
    assert report.channels[conv] == (8, 8)
    assert report.channels[fc1] == (32, 16)  # the MLP hidden channels go
    assert any(conv in group["layers"] and "normalises across channels" in group["reason"]
               for group in report.kept_whole)


def test_output_layer_cannot_be_restructured():
    from onnxslice.errors import InputError

    model = load_model(MLP)
    output = find_neuron_layers(model).layers[-1]
    with pytest.raises(InputError, match="output layer"):
        restructure(model, {output.name: [0, 1]})


class Spatial(nn.Module):
    """Reflect padding, nearest resize, max and average pooling between layers: channels pass through."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 3)
        self.c = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.pad(torch.relu(self.a(x)), (1, 1, 1, 1), mode="reflect")
        y = nn.functional.interpolate(torch.relu(self.b(y)), scale_factor=2, mode="nearest")
        y = nn.functional.avg_pool2d(nn.functional.max_pool2d(torch.relu(self.c(y)), 2), 2)
        return self.head(y.flatten(1))


def test_padding_resize_and_pooling_pass_channels_through(tmp_path):
    model = load_model(export_onnx(Spatial().eval(), (3, 6, 6), tmp_path / "p.onnx"))
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    assert_equals_mask(model, pruned, kept, (3, 6, 6))
    assert report.channels_removed == report.dropped_by_slice  # nothing here couples layers


def test_groups_are_data_residual_add_couples_stem_and_second_conv():
    """The example CNN's residual block adds its input (the stem's output) to conv2's: one group of 16."""
    from onnxslice.surgery.groups import channel_groups
    from onnxslice.surgery.restructure import prepare

    groups = channel_groups(prepare(load_model(CNN))).groups()
    coupled = [g for g in groups if len(g["layers"]) > 1]
    assert len(coupled) == 1
    assert len(coupled[0]["layers"]) == 2 and coupled[0]["channels"] == 16
    assert "conv2" in coupled[0]["layers"][1] and coupled[0]["kept"] == {}


def test_a_slice_that_drops_nothing_leaves_the_parameter_count_unchanged(tmp_path):
    """torchvision squeezenet1_1 shares its zero-initialised biases between convs; restructuring a slice that drops
    nothing must not copy them per conv (it did: 725,418 -> 727,626 parameters). Oracle: count_params of the
    original file."""
    import torchvision

    torch.manual_seed(0)
    path = export_onnx(torchvision.models.squeezenet1_1(weights=None, num_classes=10), (3, 32, 32),
                       tmp_path / "squeezenet1_1.onnx")
    model = load_model(path)
    everything = {layer.name: list(range(layer.size)) for layer in find_neuron_layers(model).hidden}
    pruned, _ = restructure(model, everything)
    assert count_params(pruned) == count_params(model) == 725_418


@pytest.mark.parametrize(("reader", "kept"), [("gather-0", False), ("slice-0-1", False), ("gather-1", True),
                                              ("slice-0-2", True)])
def test_a_shape_read_keeps_the_channels_only_where_it_reads_their_count(reader, kept):
    """Oracle: the graph's construction. The Shape of a hidden (N, 6) activation read at entry 0 (the batch size,
    by Gather or Slice) leaves its channels removable; read at entry 1 (the channel count, which removal changes)
    keeps them, with the Shape as the reason."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxslice.graph import canonicalize
    from onnxslice.surgery.groups import channel_groups

    rng = np.random.default_rng(0)
    op, *bounds = reader.split("-")
    consts = {"w1": rng.normal(size=(4, 6)).astype(np.float32), "w2": rng.normal(size=(6, 3)).astype(np.float32),
              **{f"b{i}": np.array([int(b)] if op == "slice" else int(b)) for i, b in enumerate(bounds)}}
    read = helper.make_node("Gather", ["shape", "b0"], ["n"], "read") if op == "gather" else \
        helper.make_node("Slice", ["shape", "b0", "b1"], ["n"], "read")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "hidden"), helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], "out"),
             helper.make_node("Shape", ["r"], ["shape"], "shape"), read]
    graph = helper.make_graph(nodes, "shape_read", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("n", TensorProto.INT64, None)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    group = next(g for g in channel_groups(model).groups() if g["layers"] == ["hidden"])
    assert group["kept"] == ({"Shape node 'shape' is not understood": 6} if kept else {})
