"""Restructure the smallest model of every torchvision classification family that exports to ONNX.

Oracle: ``onnxslice.surgery.mask.mask_model`` of the same slice, run in onnxruntime on random inputs;
max |restructured - masked| <= 1e-4 x the largest |masked output|. Random weights (BatchNorm statistics
randomised so that folded shifts are non-trivial; zero-initialised heads re-drawn so outputs are not
all zero), ``num_classes=10``, small inputs, legacy exporter at opset 17, a seeded random half of each
hidden layer. Each test prints the fraction of hidden channels physically removed (``pytest -s``), and
the module prints them as one table at the end.

Families and why some remove little (a random half per layer keeps the union of coupled layers):
residual networks couple every block's output into one group (about 1 - 1/2^k of it stays);
grouped convolutions (ResNeXt, RegNet-X) can only lose whole groups (inputs and outputs together)
or the same position in every group, and a random half almost never drops all of those;
transformers (ViT, Swin, ConvNeXt) keep the residual stream, which LayerNorm normalises across
channels, and attention heads (reshaped through computed shapes or Einsum), and lose the hidden
channels of their MLP blocks (MaxViT also its MBConv channels).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.measure.stats import count_macs, count_params
from onnxslice.profiling.artifact import Profile
from onnxslice.runtime import input_name, make_session
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import make_strategy, select
from onnxslice.surgery.mask import mask_model
from onnxslice.surgery.restructure import restructure
from onnxslice.surgery.verify import verify
from tests.helpers import export_onnx

#: family -> (builder, input side, slow)
FAMILIES = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None, num_classes=10), 224, True),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(weights=None, num_classes=10), 224, True),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 32, False),
    "resnext50_32x4d": (lambda: torchvision.models.resnext50_32x4d(weights=None, num_classes=10), 32, True),
    "squeezenet1_0": (lambda: torchvision.models.squeezenet1_0(weights=None, num_classes=10), 32, False),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None, num_classes=10), 32, True),
    "inception_v3": (lambda: torchvision.models.inception_v3(weights=None, num_classes=10, aux_logits=False,
                                                             init_weights=False), 75, True),
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=False,
                                                       init_weights=False), 32, False),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10), 32, False),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10), 32, False),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), 32, False),
    "mnasnet0_5": (lambda: torchvision.models.mnasnet0_5(weights=None, num_classes=10), 32, False),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=10), 32, False),
    "efficientnet_v2_s": (lambda: torchvision.models.efficientnet_v2_s(weights=None, num_classes=10), 32, True),
    "regnet_x_400mf": (lambda: torchvision.models.regnet_x_400mf(weights=None, num_classes=10), 32, False),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(weights=None, num_classes=10), 32, True),
    # vit_b_16 needs 224 x 224 and 86 M parameters; the same architecture, scaled down, stands for the family
    "vit (VisionTransformer 32px, 2 layers)": (
        lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                     hidden_dim=32, mlp_dim=64, num_classes=10), 32, False),
    "swin_t": (lambda: torchvision.models.swin_t(weights=None, num_classes=10), 64, True),
    "swin_v2_t": (lambda: torchvision.models.swin_v2_t(weights=None, num_classes=10), 64, True),
    "maxvit_t": (lambda: torchvision.models.maxvit_t(weights=None, num_classes=10), 224, True),  # needs 224
}

REMOVED: dict[str, tuple[float, float]] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each family once per test session (cached by name)."""
    folder, cache = tmp_path_factory.mktemp("torchvision"), {}
    torch.set_num_threads(1)

    def get(name: str) -> onnx.ModelProto:
        if name not in cache:
            build, side, _ = FAMILIES[name]
            torch.manual_seed(0)
            path = export_onnx(randomise(build()), (3, side, side), folder / f"{len(cache)}.onnx")
            cache[name] = load_model(path)
        return cache[name]

    yield get
    if REMOVED:
        print("\n\nfamily                                   channels removed   max|diff|/scale")
        for name, (fraction, relative) in REMOVED.items():
            print(f"{name:<40} {fraction:>16.1%} {relative:>17.1e}")


def randomise(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics; zero-initialised weights (e.g. ViT's head) re-drawn; ConvNeXt's
    layer scale (1e-6 at initialisation, which would hide every block) set to 0.5."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                n = sub.num_features
                sub.weight.copy_(0.5 + torch.rand(n, generator=generator))
                sub.bias.copy_(0.5 * torch.randn(n, generator=generator))
                sub.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                sub.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            elif isinstance(sub, nn.Linear | nn.Conv2d) and not sub.weight.any():
                sub.weight.normal_(0, 0.05, generator=generator)
            if isinstance(getattr(sub, "layer_scale", None), nn.Parameter):
                sub.layer_scale.fill_(0.5)
    return module.eval()


def random_half(model: onnx.ModelProto, seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {layer.name: sorted(rng.choice(layer.size, max(1, layer.size // 2), replace=False).tolist())
            for layer in find_neuron_layers(model).hidden}


def params():
    return [pytest.param(name, marks=[pytest.mark.slow] if slow else [], id=name.split(" ")[0])
            for name, (_, _, slow) in FAMILIES.items()]


@pytest.mark.parametrize("name", params())
def test_restructured_family_equals_masked(name, exported):
    model = exported(name)
    kept = random_half(model)
    pruned, report = restructure(model, kept)
    side = FAMILIES[name][1]
    x = np.random.default_rng(1).standard_normal((2, 3, side, side)).astype(np.float32)
    expected = make_session(mask_model(model, kept), "cpu").run(None, {input_name(model): x})[0]
    got = make_session(pruned, "cpu").run(None, {input_name(pruned): x})[0]
    scale = float(np.abs(expected).max())
    relative = float(np.abs(expected - got).max()) / scale
    REMOVED[name] = (report.removed_fraction, relative)
    print(f"\n{name}: {report.removed_fraction:.1%} of {report.channels_before} hidden channels removed "
          f"(the slice drops {report.dropped_by_slice}); max|diff|/scale {relative:.1e}")
    assert scale > 1e-3
    assert relative <= 1e-4
    assert report.channels_removed > 0
    # no mask node is written (a zeroed channel whose tail maps 0 elsewhere gets an offset, not a Mul), the
    # model never grows, and the size terms the selection bisects on equal the written model's counts (but for
    # those offsets, which only a slice that splits a class needs: group-aware slices never do)
    assert not [n.name for n in pruned.graph.node if n.name.endswith("__mask")]
    assert sum(n.op_type == "Mul" for n in pruned.graph.node) <= sum(n.op_type == "Mul" for n in model.graph.node)
    assert count_params(pruned) <= count_params(model)
    sizes = SelectionGroups.of_model(model).size_of_slice(kept)
    offsets = sum(int(np.prod(i.dims)) for i in pruned.graph.initializer if i.name.endswith("__zero_offset"))
    assert (sizes["params"] + offsets, sizes["macs"]) == (count_params(pruned), count_macs(pruned))


def uniform_profile(model: onnx.ModelProto, seed: int = 0) -> Profile:
    """A profile of random positive contributions (one category) for the model's hidden layers: enough for
    the global strategy, which reads nothing else."""
    rng = np.random.default_rng(seed)
    sizes = {layer.name: layer.size for layer in find_neuron_layers(model).hidden}
    return Profile("0" * 64, "random", ["avg"], [0], sizes, {0: 1},
                   {"avg": {name: rng.random((2, size)) for name, size in sizes.items()}})


@pytest.mark.parametrize("name", params())
def test_global_half_restructures_to_at_most_055_of_the_channels(name, exported):
    """A group-aware global 0.5 slice (round-to 1) keeps at most 0.55 of the hidden channels of the layers whose
    groups can shrink (oracle: the restructured model's report, its channel counts per layer); layers that
    restructure keeps whole (forced classes) are excepted and printed with the reason. The slice drops only
    what restructure removes (nothing is zeroed), and the result equals the masked model (verify)."""
    model = exported(name)
    groups = SelectionGroups.of_model(model)
    piece = select(uniform_profile(model), "avg", make_strategy("global", ratio=0.5), groups, round_to=1)
    pruned, report = restructure(model, piece.kept())
    verify(model, pruned, piece.kept())
    assert report.zeroed == 0
    excepted = {layer for entry in report.kept_whole for layer in entry["layers"]}
    for entry in report.kept_whole:
        print(f"\n{name}: excepted {len(entry['layers'])} layer(s) ({entry['layers'][0]}, ...): {entry['reason']}")
    shrinkable = {layer: counts for layer, counts in report.channels.items() if layer not in excepted}
    before = sum(b for b, _ in shrinkable.values())
    after = sum(a for _, a in shrinkable.values())
    print(f"\n{name}: global 0.5 keeps {after}/{before} = {after / max(before, 1):.3f} of the shrinkable channels, "
          f"{len(excepted)} of {len(report.channels)} layers excepted")
    if before:
        assert after / before <= 0.55
