"""Selection strategies, the slice artifact and the `slice` / `inspect` commands.

Oracles: planted dead neurons (weights and bias zeroed before a ReLU in the PyTorch original, then
exported) must never be kept by semantic slicing, and a slice that drops only them must leave the
outputs unchanged; Θ-monotonicity as set inclusion; ratio strategies against a direct numpy top-k;
the parameter fraction against a hand count of the MLP's weight matrices.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.graph import load_model
from onnxslice.measure.stats import count_params
from onnxslice.profiling import METRICS, Profile, profile_model
from onnxslice.profiling.similarity import (
    SimilarityStatistics,
    linear_cka,
    similarity_statistics,
    smallest_prefix,
)
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.budget import DEFAULT_ROUND_TO, DEFAULT_TOLERANCE
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import (
    STRATEGIES,
    CategoryStrategy,
    GlobalStrategy,
    SemanticStrategy,
    SharedStrategy,
    make_strategy,
    ranking,
    select,
)
from onnxslice.slicing.summary import parameter_fraction
from onnxslice.surgery.mask import mask_model
from onnxslice.surgery.restructure import restructure
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP, example_torch_model, export_onnx

#: hidden layer index (graph order) -> neurons zeroed in the PyTorch original
PLANTED = {
    "mlp": {0: [3, 100, 511], 1: [0, 7, 255]},
    "cnn": {0: [2, 9], 1: [3], 3: [5, 31], 4: [0, 40]},
}
SHAPES = {"mlp": (64,), "cnn": (1, 8, 8)}
THETAS = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def plant_dead_neurons(name: str) -> torch.nn.Module:
    """The example model with the PLANTED neurons' weights and bias zeroed (BN shift and mean too) before a ReLU."""
    module = example_torch_model(name)
    if name == "mlp":
        targets = [(module[0], None), (module[2], None)]
    else:
        features, block = module.features, module.features[2]
        targets = [(features[0][0], features[0][1]), (block.conv1[0], block.conv1[1]), None,
                   (features[3][0], features[3][1]), (module.classifier[1], None)]
    with torch.no_grad():
        for index, neurons in PLANTED[name].items():
            layer, norm = targets[index]
            layer.weight[neurons] = 0.0
            if layer.bias is not None:
                layer.bias[neurons] = 0.0
            if norm is not None:
                norm.bias[neurons] = 0.0
                norm.running_mean[neurons] = 0.0
    return module


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def planted(request, tmp_path_factory):
    """(name, exported model path, profile with every metric) of a model with planted dead neurons."""
    torch.set_num_threads(1)
    name = request.param
    path = export_onnx(plant_dead_neurons(name), SHAPES[name], tmp_path_factory.mktemp(name) / f"{name}.onnx")
    data = load_data("digits:train", max_per_class=15)
    profile = profile_model(path, data, list(METRICS), max_per_class=15, device="cpu", progress=False)
    return name, path, profile


def dead_by_layer(name: str, profile: Profile) -> dict[str, list[int]]:
    return {profile.layers[index]: neurons for index, neurons in PLANTED[name].items()}


def test_planted_dead_neurons_are_never_kept_by_semantic_slicing(planted):
    """Every metric, Θ from 0 to 1, centred and uncentred, step 1 and 4: no dead neuron in any category's set."""
    name, _, profile = planted
    dead = dead_by_layer(name, profile)
    for metric in METRICS:
        for theta in THETAS:
            for centered in (True, False):
                for step in (1, 4):
                    piece = select(profile, metric, SemanticStrategy(theta, step, centered))
                    for layer, neurons in dead.items():
                        chosen = piece.layers[layer]
                        assert not set(neurons) & set(chosen.kept), (metric, theta, centered, step, layer)
                        assert all(not set(neurons) & set(v) for v in chosen.per_category.values())


def test_slice_dropping_only_the_dead_neurons_leaves_outputs_unchanged(planted):
    """Masked model (dead neurons zeroed at their consumers) vs the original, on real digits: equal outputs."""
    name, path, profile = planted
    dead = dead_by_layer(name, profile)
    kept = {layer: [i for i in range(size) if i not in dead.get(layer, [])] for layer, size in
            profile.layer_sizes.items()}
    model = load_model(path)
    x, _ = load_data("digits:test", max_per_class=10).arrays()
    x = x.reshape(-1, *SHAPES[name])
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (model, mask_model(model, kept))]
    original, masked = (session.run(None, {"input": x})[0] for session in sessions)
    np.testing.assert_allclose(masked, original, rtol=0, atol=1e-6)


def test_larger_theta_never_keeps_fewer_neurons(planted):
    """For every metric, Θ₁ < Θ₂: each layer's kept set at Θ₁ is a subset of the one at Θ₂ (so never larger)."""
    _, _, profile = planted
    for metric in ("avg", "taylor"):
        pieces = [select(profile, metric, SemanticStrategy(theta)).kept() for theta in np.linspace(0.0, 1.0, 21)]
        for smaller, larger in zip(pieces, pieces[1:], strict=False):
            for layer in smaller:
                assert set(smaller[layer]) <= set(larger[layer]), (metric, layer)


def synthetic_profile(categories: int = 3, sizes: dict[str, int] | None = None, seed: int = 0) -> Profile:
    """A Profile built directly from random ReLU activations and random contributions."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"a": 12, "b": 7}
    contributions: dict[str, np.ndarray] = {}
    similarity: dict[str, list[SimilarityStatistics]] = {}
    for layer, size in sizes.items():
        acts = [np.maximum(rng.standard_normal((10, size, 1)), 0) for _ in range(categories)]
        contributions[layer] = np.round(rng.random((categories + 1, size)), 1)  # rounded: ties happen
        similarity[layer] = [similarity_statistics(a, np.float64) for a in acts]
    return Profile("0" * 64, "synthetic", ["avg"], list(range(categories)), sizes, dict.fromkeys(range(categories), 10),
                   {"avg": contributions}, similarity)


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.5, 0.99, 1.0])
def test_ratio_strategies_keep_the_top_ceil_r_c(ratio):
    """global: top ceil(R·C) of the all-data contributions; category: union of per-category top ceil(R·C)."""
    profile = synthetic_profile()
    for layer, size in profile.layer_sizes.items():
        count = max(1, math.ceil(ratio * size - 1e-9))
        rows = profile.contributions["avg"][layer]
        # oracle: a stable numpy sort by decreasing value, ties by index
        top = [sorted(np.lexsort((np.arange(size), -row))[:count].tolist()) for row in rows]
        assert select(profile, "avg", GlobalStrategy(ratio)).layers[layer].kept == top[-1]
        category = select(profile, "avg", CategoryStrategy(ratio)).layers[layer]
        assert category.per_category == {str(c): top[c] for c in range(3)}
        assert category.kept == sorted(set().union(*top[:-1]))


@pytest.mark.parametrize("step", [1, 3])
def test_semantic_thresholds_select_what_the_prefix_scan_selects(step):
    """A neuron's threshold is the smallest Θ at which it is critical: for every Θ, {thresholds <= Θ} equals the
    prefix Algorithm 1 returns (oracle: cka.smallest_prefix over the live neurons by contribution)."""
    rng = np.random.default_rng(step)
    acts = np.maximum(rng.standard_normal((12, 20, 3)), 0)
    acts[:, 4] = 1.0  # a constant neuron: never critical
    h = similarity_statistics(acts, np.float64).matrix()
    contribution = np.round(rng.random(20), 1)
    order = ranking(contribution)
    order = order[np.diag(h)[order] > 0]
    thresholds = SemanticStrategy(0.9, step).thresholds(h, contribution)
    for theta in np.linspace(0.0, 1.0, 201):
        expected = set(order[:smallest_prefix(h, order, theta, step)].tolist())
        assert set(np.flatnonzero(thresholds <= theta).tolist()) == expected, theta


def test_shared_keeps_one_short_prefix_where_the_union_saturates():
    """Constructed layer: 8 neurons, the even ones noisy copies of a signal z1, the odd ones of an independent
    z2, and each of 4 categories ranks its own (even, odd) pair first. One neuron reaches CKA about 0.7, a pair
    about 1, so each category's semantic prefix is its pair (disjoint) and the union keeps all 8;
    shared keeps the shortest prefix of the all-data order whose CKA exceeds Θ on every category (oracle:
    linear_cka on the raw activations, from the definition), shorter than 8, holding each category's own
    prefix along that order."""
    rng = np.random.default_rng(0)
    theta, size, categories = 0.95, 8, 4
    mixing = np.tile(np.eye(2), size // 2)
    acts = [rng.standard_normal((40, 2)) @ mixing + 0.01 * rng.standard_normal((40, size)) for _ in range(categories)]
    contributions = np.full((categories + 1, size), 0.1)
    for c in range(categories):
        contributions[c, [2 * c, 2 * c + 1]] = [1.0, 0.9]
    contributions[-1] = np.linspace(1.0, 0.2, size)[rng.permutation(size)]
    profile = Profile("0" * 64, "constructed", ["avg"], list(range(categories)), {"l": size},
                      dict.fromkeys(range(categories), 40), {"avg": {"l": contributions}},
                      {"l": [similarity_statistics(a[:, :, None], np.float64) for a in acts]})

    semantic = select(profile, "avg", SemanticStrategy(theta)).layers["l"]
    assert semantic.per_category == {str(c): [2 * c, 2 * c + 1] for c in range(categories)}
    assert semantic.kept == list(range(size))

    order = ranking(contributions[-1])
    passes = [min(linear_cka(a[:, order[:k]], a) for a in acts) > theta for k in range(1, size + 1)]
    length = passes.index(True) + 1
    shared = select(profile, "avg", SharedStrategy(theta)).layers["l"]
    assert length < size and shared.kept == sorted(order[:length].tolist())
    for c, a in enumerate(acts):
        assert linear_cka(a[:, shared.kept], a) > theta
        own = next(k for k in range(1, size + 1) if linear_cka(a[:, order[:k]], a) > theta)
        assert shared.per_category[str(c)] == sorted(order[:own].tolist())
        assert set(shared.per_category[str(c)]) <= set(shared.kept)


def test_ranking_orders_ties_by_index_and_nan_last():
    assert ranking(np.array([0.5, np.nan, 0.5, 0.9, 0.0])).tolist() == [3, 0, 2, 4, 1]


def test_every_layer_keeps_at_least_one_neuron():
    """A layer where nothing varies on any category still keeps its top neuron over all data."""
    profile = synthetic_profile()
    profile.similarity["b"] = [SimilarityStatistics(np.zeros((7, 7)), np.zeros((1, 7)), 1.0)] * 3
    for c in range(3):
        profile.contributions["avg"]["b"][c] = 0.0
    piece = select(profile, "avg", SemanticStrategy(0.9))
    expected = int(np.argmax(profile.contributions["avg"]["b"][-1]))
    assert piece.layers["b"].kept == [expected]


def test_make_strategy_checks_its_options():
    assert set(STRATEGIES) == {"semantic", "global", "category", "shared"}
    assert make_strategy("semantic", theta=0.9, step=2, centered=False) == SemanticStrategy(0.9, 2, False)
    assert make_strategy("shared", theta=0.8, representation="map") == SharedStrategy(0.8, representation="map")
    assert make_strategy("category", ratio=0.2) == CategoryStrategy(0.2)
    wrong = [({"name": "global", "theta": 0.9}, "--theta"), ({"name": "semantic", "ratio": 0.5}, "--ratio"),
             ({"name": "shared", "ratio": 0.5}, "--ratio"), ({"name": "shared", "theta": -0.1}, "--theta"),
             ({"name": "semantic", "theta": 1.5}, "--theta"), ({"name": "global", "ratio": 0.0}, "--ratio"),
             ({"name": "category", "step": 2}, "--step"), ({"name": "semantic", "step": 0}, "--step"),
             ({"name": "global", "centered": False}, "--uncentered"), ({"name": "best"}, "--strategy")]
    for kwargs, option in wrong:
        with pytest.raises(InputError, match=option):
            make_strategy(**kwargs)


def test_slice_file_round_trips(tmp_path):
    profile = synthetic_profile()
    piece = select(profile, "avg", SemanticStrategy(0.93, 2, False))
    piece.save(tmp_path / "s.json")
    raw = json.loads((tmp_path / "s.json").read_text())
    assert raw["format"] == "onnxslice.slice/1" and raw["theta"] == 0.93 and raw["step"] == 2
    assert raw["centered"] is False and raw["strategy"] == "semantic" and raw["data"] == "synthetic"
    assert Slice.load(tmp_path / "s.json") == piece


def test_parameter_fraction_matches_a_hand_count_on_the_mlp():
    """MLP 64→512→256→10 keeping a of 512 and b of 256: 64a + a (layer 1), a·b + b (layer 2), 10b + 10."""
    model = load_model(MLP)
    a, b = 100, 37
    piece = Slice("x", {"/0/Gemm": LayerSlice(512, list(range(0, 2 * a, 2))),
                        "/2/Gemm": LayerSlice(256, list(range(b)))})
    result = parameter_fraction(model, piece)
    assert result["params"] == 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert result["params_kept"] == 64 * a + a + a * b + b + 10 * b + 10


def test_parameter_fraction_on_the_cnn_follows_flatten_and_the_residual_add():
    """CNN: dropping a stride-2 conv channel removes its 9·16 incoming weights, its bias and the 16 Gemm columns
    its 4x4 map feeds; dropping a channel of the residual block's second conv alone removes only its own weights
    (the Add passes the unmasked block input on, so no consumer column goes)."""
    model = load_model(CNN)
    base = parameter_fraction(model, Slice("x", {}))["params_kept"]
    assert base == 42922
    conv3 = "/features/features.3/features.3.0/Conv"
    conv2 = "/features/features.2/conv2/conv2.0/Conv"
    one = parameter_fraction(model, Slice("x", {conv3: LayerSlice(32, list(range(1, 32)))}))["params_kept"]
    assert base - one == 9 * 16 + 1 + 16 * 64
    two = parameter_fraction(model, Slice("x", {conv2: LayerSlice(16, list(range(1, 16)))}))["params_kept"]
    assert base - two == 9 * 16 + 1


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def mlp_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "mlp.npz"
    profile_model(MLP, load_data("digits:train", max_per_class=20), ["avg", "taylor"], max_per_class=20,
                  device="cpu", progress=False).save(path)
    return path


def test_slice_command_from_a_profile_matches_the_api(mlp_profile, tmp_path):
    """`slice --profile` writes what select() returns on the loaded profile and the model's groups (with the
    default --round-to); inspect reads it back and reports the parameters of the restructured model (oracle:
    count_params of restructure's output)."""
    out = tmp_path / "s.json"
    result = run_cli("slice", MLP, "--profile", mlp_profile, "--metric", "avg", "--theta", "0.9", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    model = load_model(MLP)
    expected = select(Profile.load(mlp_profile), "avg", SemanticStrategy(0.9), SelectionGroups.of_model(model),
                      DEFAULT_ROUND_TO)
    assert Slice.load(out).kept() == expected.kept()
    report = json.loads(result.stdout)
    assert [row["kept"] for row in report["layers"]] == [len(v) for v in expected.kept().values()]
    plot = tmp_path / "layers.png"
    shown = run_cli("inspect", out, "--model", MLP, "--plot", plot, "--json")
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    assert info["params"] == count_params(restructure(model, expected.kept())[0])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {row["layer"] for row in info["layers"]} == set(expected.layers)


@pytest.mark.parametrize(("args", "culprit"), [
    (["--strategy", "global", "--theta", "0.9"], "--theta"),
    (["--strategy", "semantic", "--ratio", "0.5"], "--ratio"),
    (["--metric", "var"], "--metric var"),
    (["--theta", "2"], "--theta"),
])
def test_slice_command_rejects_bad_options_with_one_line(mlp_profile, tmp_path, args, culprit):
    out = tmp_path / "s.json"
    result = run_cli("slice", MLP, "--profile", mlp_profile, *args, "-o", out)
    assert result.exit_code == 2 and culprit in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_slice_command_refuses_a_profile_of_another_model_and_needs_data(mlp_profile, tmp_path):
    out = tmp_path / "s.json"
    other = run_cli("slice", CNN, "--profile", mlp_profile, "-o", out, "--metric", "avg")
    assert other.exit_code == 2 and "another model" in other.stderr and not out.exists()
    nothing = run_cli("slice", MLP, "-o", out)
    assert nothing.exit_code == 2 and "--data" in nothing.stderr and not out.exists()


def test_slice_command_profiles_when_no_profile_is_given(tmp_path):
    """Without --profile the model is profiled on --data: the same slice as profiling first, then slicing."""
    out = tmp_path / "s.json"
    result = run_cli("slice", MLP, "--data", "digits:train:0-2", "--metric", "var", "--strategy", "category",
                     "--ratio", "0.2", "--max-per-class", "8", "-o", out)
    assert result.exit_code == 0, result.output
    profile = profile_model(MLP, load_data("digits:train:0-2"), ["var"], max_per_class=8, device="cpu",
                            progress=False)
    groups = SelectionGroups.of_model(load_model(MLP))
    assert Slice.load(out).kept() == select(profile, "var", CategoryStrategy(0.2), groups, DEFAULT_ROUND_TO).kept()
    assert len(Slice.load(out).layers["/0/Gemm"].per_category) == 3


def test_inspect_without_model_reports_the_neuron_fraction(tmp_path):
    """Kept / size per layer and per category, and Σ kept / Σ size, straight from the file."""
    piece = Slice("x", {"a": LayerSlice(10, [1, 2, 3], {"0": [1], "1": [2, 3]}), "b": LayerSlice(6, [0, 5])},
                  metric="avg", strategy="semantic", theta=0.9)
    piece.save(tmp_path / "s.json")
    report = json.loads(run_cli("inspect", tmp_path / "s.json", "--json").stdout)
    assert report["neuron_fraction"] == pytest.approx(5 / 16)
    assert report["layers"][0] == {"layer": "a", "display": "a", "size": 10, "kept": 3, "ratio": 0.3,
                                   "per_category": {"0": 1, "1": 2}}
    text = run_cli("inspect", tmp_path / "s.json")
    assert text.exit_code == 0 and "31.2%" in text.output and "1 / 2" in text.output
    bad = run_cli("inspect", tmp_path / "s.json", "--plot", tmp_path / "layers.txt")
    assert bad.exit_code == 2 and "--plot" in bad.stderr and not (tmp_path / "layers.txt").exists()


def test_shared_strategy_through_the_api_to_a_size_budget(mlp_profile, tmp_path):
    """`osl.select(..., "shared", target_params=0.5)` bisects Θ to the budget (oracle: the restructured model's
    parameters, counted, within the tolerance of half the original's) and records the strategy and its Θ."""
    import onnxslice as osl

    model = osl.load(MLP)
    piece = osl.select(model, Profile.load(mlp_profile), "avg", "shared", target_params=0.5, round_to=1)
    assert piece.strategy == "shared" and 0.0 <= piece.theta <= 1.0 and piece.ratio is None
    pruned = restructure(model.proto, piece.kept())[0]
    assert abs(count_params(pruned) / count_params(model.proto) - 0.5) <= DEFAULT_TOLERANCE
    piece.save(tmp_path / "s.json")
    assert Slice.load(tmp_path / "s.json").strategy == "shared"
