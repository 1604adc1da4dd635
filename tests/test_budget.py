"""Group-aware selection, round-to and size budgets on torchvision resnet18 (1-channel 32x32 digits, 10 classes).

Oracles: the restructured model itself — count_params / count_macs of restructure's output (not the size
terms the selection uses), the channel counts in its weight shapes, its node list, and its outputs against
the masked original (verify); monotonicity as a property of the bisection's parameter.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from onnxslice.errors import InputError
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.measure.stats import count_macs, count_params
from onnxslice.profiling import Profile, profile_model
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.budget import bisect, candidate_values, slice_to_budget
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import choose, make_strategy, select
from onnxslice.surgery.restructure import restructure
from onnxslice.surgery.verify import verify
from onnxslice_cli.main import cli
from tests.helpers import digits32, export_onnx, resnet18_digits


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    """Random-weight resnet18 (BatchNorm folded by the exporter) and its avg profile on 80 digits, as files."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("resnet")
    path = export_onnx(resnet18_digits(), (1, 32, 32), folder / "resnet18.onnx")
    profile_model(str(path), digits32("train").cap_per_class(8), ["avg"], max_per_class=8, device="cpu",
                  progress=False).save(folder / "profile.npz")
    return path, folder / "profile.npz"


@pytest.fixture(scope="module")
def resnet(resnet_files):
    """The loaded model, profile and groups."""
    path, profile_path = resnet_files
    model = load_model(path)
    return model, Profile.load(profile_path), SelectionGroups.of_model(model)


def restructured(model: onnx.ModelProto, piece) -> onnx.ModelProto:
    pruned, _ = restructure(model, piece.kept())
    verify(model, pruned, piece.kept())
    return pruned


@pytest.mark.parametrize(("strategy", "kind"), [("global", "macs"), ("semantic", "macs"), ("category", "params")])
def test_budget_lands_within_tolerance_of_the_restructured_model(resnet, strategy, kind):
    """--target-macs 0.5 (or params): the restructured model's own count is within 0.48-0.52 of the original's."""
    model, profile, groups = resnet
    piece = slice_to_budget(model, profile, "avg", strategy, groups=groups, **{f"target_{kind}": 0.5})
    pruned = restructured(model, piece)
    count = count_macs if kind == "macs" else count_params
    fraction = count(pruned) / count(model)
    assert 0.48 <= fraction <= 0.52, fraction
    assert piece.restructured[f"{kind}_fraction"] == pytest.approx(fraction, abs=1e-9)
    assert piece.target == {"metric": kind, "fraction": 0.5}


def test_budget_bisection_is_monotone_and_each_budget_within_tolerance(resnet):
    """The MAC fraction never decreases along the candidate values (so bisection is sound), and every budget
    from 0.3 to 0.9 lands within ±0.02 as counted on the restructured model."""
    model, profile, groups = resnet
    for name in ("global", "semantic"):
        strategy = make_strategy(name)
        ranked = strategy.rank(profile, "avg", groups)
        values = candidate_values(ranked, strategy)
        sample = values[np.linspace(0, len(values) - 1, 40).astype(int)]
        fractions = [groups.size(choose(ranked, float(v), groups, 8))["macs_fraction"] for v in sample]
        assert all(a <= b + 1e-12 for a, b in zip(fractions, fractions[1:], strict=False)), name
        for target in (0.3, 0.7, 0.9):
            value, reached = bisect(ranked, strategy, groups, "macs", target, 8)
            assert abs(reached - target) <= 0.02, (name, target, reached)
    piece = slice_to_budget(model, profile, "avg", "global", target_macs=0.3, groups=groups)
    assert abs(count_macs(restructured(model, piece)) / count_macs(model) - 0.3) <= 0.02


def test_unreachable_budget_names_the_nearest_fraction(resnet):
    """A budget below what must stay (every layer keeps a multiple of 8, at least 8; about 1.5% of the MACs) with
    a tolerance that excludes it is an InputError naming the smallest restructured fraction, which is what the
    smallest slice restructures to."""
    model, profile, groups = resnet
    with pytest.raises(InputError, match=r"--target-macs 0.001: not reachable .* nearest restructured fraction is "
                                         r"(0\.\d+)") as error:
        slice_to_budget(model, profile, "avg", "global", target_macs=0.001, tolerance=0.001, groups=groups)
    nearest = float(error.value.args[0].rsplit(" ", 1)[-1].rstrip(")"))
    smallest = select(profile, "avg", make_strategy("global", ratio=1e-6), groups, 8)
    assert nearest == pytest.approx(count_macs(restructured(model, smallest)) / count_macs(model), abs=1e-4)
    with pytest.raises(InputError, match="exactly one"):
        slice_to_budget(model, profile, "avg", "global", target_macs=0.5, target_params=0.5, groups=groups)


@pytest.mark.parametrize("round_to", [4, 8, 16])
def test_round_to_holds_on_every_group_and_restructured_layer(resnet, round_to):
    """Every coupled group keeps a multiple of N classes (or all); every conv of the restructured resnet18
    has a multiple of N output channels (read from its weight shapes)."""
    model, profile, groups = resnet
    piece = select(profile, "avg", make_strategy("semantic", theta=0.9), groups, round_to)
    keep = np.zeros(groups.count, bool)
    for name, layer in piece.layers.items():
        keep[groups.layer_classes[name][layer.kept]] = True
    kept_per_group = np.bincount(groups.coupled, weights=keep)
    sizes = np.bincount(groups.coupled)
    assert np.all((kept_per_group % round_to == 0) | (kept_per_group == sizes))
    pruned = restructured(model, piece)
    weights = {init.name: list(init.dims) for init in pruned.graph.initializer}
    convs = [weights[node.input[1]][0] for node in pruned.graph.node if node.op_type == "Conv"]
    assert convs and all(channels % round_to == 0 for channels in convs), convs


def test_group_aware_slice_drops_exactly_what_restructure_removes(resnet):
    """Every channel the slice drops is physically removed (no zeroed channels), for every strategy."""
    model, profile, groups = resnet
    for name in ("semantic", "global", "category"):
        piece = select(profile, "avg", make_strategy(name), groups, 8)
        _, report = restructure(model, piece.kept())
        assert report.zeroed == 0, name
        hidden = {layer.name: layer.size for layer in find_neuron_layers(model).hidden}
        assert report.channels_removed == sum(hidden[n] - len(layer.kept) for n, layer in piece.layers.items())


def test_slice_command_with_a_budget_from_a_saved_profile(resnet_files, tmp_path):
    """`slice --target-macs 0.5` writes a slice whose restructured model has 0.48-0.52 of the MACs (oracle:
    count_macs of restructure's output); a Θ with a budget, or an unreachable budget (every group keeps 64 or all
    of its channels: layer1 stays whole), is exit 2 in one line."""
    path, profile_path = resnet_files
    out = tmp_path / "slice.json"
    run = CliRunner().invoke(cli, ["slice", str(path), "--profile", str(profile_path), "--metric", "avg",
                                   "--target-macs", "0.5", "-o", str(out), "--json"])
    assert run.exit_code == 0, run.output
    reported = json.loads(run.stdout)
    model = load_model(path)
    fraction = count_macs(restructured(model, Slice.load(out))) / count_macs(model)
    assert 0.48 <= fraction <= 0.52 and reported["macs_fraction"] == pytest.approx(fraction, abs=1e-9)
    assert reported["round_to"] == 8 and reported["target"] == {"metric": "macs", "fraction": 0.5}
    for args, culprit in ((["--theta", "0.9", "--target-macs", "0.5"], "exclude each other"),
                          (["--target-params", "1e-6", "--round-to", "64"], "--target-params 1e-06: not reachable")):
        bad = CliRunner().invoke(cli, ["slice", str(path), "--profile", str(profile_path), "--metric", "avg", *args,
                                       "-o", str(tmp_path / "bad.json")])
        assert bad.exit_code == 2 and culprit in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad.json").exists()
