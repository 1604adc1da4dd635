"""Linear CKA statistics and the exact prefix scan (onnxslice.profiling.similarity).

Oracles: CKA recomputed from scratch from the activations by the paper's definition (Gram matrices of
samples, double-centred for centred CKA) at every prefix; H checked against its definition
H[i, j] = ‖A_iᵀ A_j‖²_F evaluated for every neuron pair; the brute-force first passing prefix.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxslice.data import load_data
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.profiling.similarity import (
    as_samples_neurons_positions,
    cka_from_scratch,
    live_neurons,
    prefix_cka,
    similarity_statistics,
    smallest_prefix,
)
from tests.helpers import CNN, MLP

TOLERANCE = 1e-9


def similarity_matrix(acts: np.ndarray, centered: bool = True) -> np.ndarray:
    """H with every product in float64, to check the algebra (the profiler's float32 is checked separately)."""
    return similarity_statistics(acts, np.float64).matrix(centered)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def scratch_curve(acts: np.ndarray, order: np.ndarray, centered: bool) -> np.ndarray:
    return np.array([cka_from_scratch(acts, order[:k], centered) for k in range(1, len(order) + 1)])


def layer_activations(model_path, per_class: int) -> dict[str, np.ndarray]:
    """(n, C, S) observed activations of every hidden layer on digits:train, read with onnxruntime."""
    model = load_model(model_path)
    layers = find_neuron_layers(model).hidden
    for layer in layers:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(layer.output))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x, _ = load_data("digits:train", max_per_class=per_class).arrays()
    shape = [-1, 64] if model_path == MLP else [-1, 1, 8, 8]
    values = session.run([layer.output for layer in layers], {"input": x.reshape(shape)})
    return {layer.name: as_samples_neurons_positions(value, layer.channel_axis)
            for layer, value in zip(layers, values, strict=True)}


def definition(acts: np.ndarray, centered: bool) -> np.ndarray:
    """H[i, j] = ‖A_iᵀ A_j‖²_F for every pair, straight from the activations (float64)."""
    a = acts - acts.mean(axis=0) if centered else acts
    return (np.einsum("nis,njt->ijst", a, a) ** 2).sum(axis=(2, 3))


@pytest.mark.parametrize("shape", [(40, 30, 1), (200, 6, 3), (10, 8, 36), (6, 5, 4)],
                         ids=["dense", "conv-feature-space", "conv-sample-space", "small"])
@pytest.mark.parametrize("centered", [True, False])
def test_similarity_matrix_matches_its_definition(shape, centered):
    """H = its definition (every neuron pair), in both the feature-space and the sample-space route."""
    acts = np.random.default_rng(0).standard_normal(shape)
    assert relative_error(similarity_matrix(acts, centered), definition(acts, centered)) <= TOLERANCE


@pytest.mark.parametrize("shape", [(40, 30, 1), (10, 8, 36), (25, 64, 4)], ids=["dense", "conv", "wide"])
@pytest.mark.parametrize(("offset", "size"), [(0.0, 1.0), (1e4, 1.0), (0.0, 1e-20), (0.5, 1e8)],
                         ids=["plain", "mean-far-above-spread", "tiny", "huge"])
def test_float32_statistics_match_the_float64_definition(shape, offset, size):
    """The profiler's default float32 products give both forms of H within 1e-5 of the float64 definition
    (relative to the largest entry), also for activations far from 1 in size (scaled before the fourth
    powers) or whose mean is 10⁴ times their spread (centred in float64 before rounding)."""
    acts = size * (offset + np.maximum(np.random.default_rng(6).standard_normal(shape), 0.0))
    statistics = similarity_statistics(acts.astype(np.float32))
    assert statistics.centred.dtype == statistics.correction.dtype == np.float32
    for centered in (True, False):
        expected = definition(acts.astype(np.float32).astype(np.float64), centered)
        assert np.abs(statistics.matrix(centered) - expected).max() <= 1e-5 * np.abs(expected).max(), centered


@pytest.mark.parametrize("model_path", [MLP, CNN], ids=["mlp-dense", "cnn-conv-and-dense"])
def test_float32_prefix_scan_stays_within_1e_5_of_cka_from_scratch(model_path):
    """The scan on the profiler's float32 statistics, every prefix of every real layer, both forms."""
    for name, acts in layer_activations(model_path, per_class=3).items():
        order = np.argsort(-acts.mean(axis=(0, 2)), kind="stable")
        statistics = similarity_statistics(acts)
        for centered in (True, False):
            difference = prefix_cka(statistics.matrix(centered), order) - scratch_curve(acts, order, centered)
            assert np.abs(difference).max() <= 1e-5, (name, centered)


@pytest.mark.parametrize("shape", [(40, 30, 1), (10, 8, 36), (25, 64, 4)], ids=["dense", "conv", "wide"])
@pytest.mark.parametrize("centered", [True, False])
def test_prefix_scan_equals_cka_from_scratch_on_random_data(shape, centered):
    """Every prefix of a random order: scan CKA = CKA from scratch (relative error ≤ 1e-9, float64)."""
    rng = np.random.default_rng(1)
    acts = np.maximum(rng.standard_normal(shape), 0.0)  # ReLU-like activations
    order = rng.permutation(shape[1])
    scanned = prefix_cka(similarity_matrix(acts, centered), order)
    assert relative_error(scanned, scratch_curve(acts, order, centered)) <= TOLERANCE
    assert scanned[-1] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("model_path", [MLP, CNN], ids=["mlp-dense", "cnn-conv-and-dense"])
@pytest.mark.parametrize("centered", [True, False])
def test_prefix_scan_equals_cka_from_scratch_on_real_layers(model_path, centered):
    """Every hidden layer of the example models on real digits, ordered by mean activation: every prefix agrees."""
    for name, acts in layer_activations(model_path, per_class=3).items():
        order = np.argsort(-acts.mean(axis=(0, 2)), kind="stable")
        scanned = prefix_cka(similarity_matrix(acts, centered), order)
        expected = scratch_curve(acts, order, centered)
        live = expected > 0  # prefixes made only of dead neurons: 0 in both
        assert np.all(scanned[~live] == 0), name
        assert relative_error(scanned[live], expected[live]) <= TOLERANCE, name


@pytest.mark.parametrize("precision", [np.float32, np.float64])
def test_constant_neurons_have_exactly_zero_rows(precision):
    """A neuron constant over the samples (a value such as 0.1 that float means do not reproduce) has an
    exactly zero H row when centred; an all-zero neuron has one in both forms; a constant non-zero one
    keeps its row uncentred (it carries the paper's uncentred signal). In the profiler's float32 too."""
    acts = np.random.default_rng(2).standard_normal((7, 5, 3)).astype(precision)
    acts[:, 1] = 0.1
    acts[:, 3] = 0.0
    statistics = similarity_statistics(acts, precision)
    centered, uncentered = statistics.matrix(centered=True), statistics.matrix(centered=False)
    assert not centered[1].any() and not centered[:, 1].any() and not centered[3].any()
    assert live_neurons(centered).tolist() == [True, False, True, False, True]
    assert live_neurons(uncentered).tolist() == [True, True, True, False, True]


def test_empty_set_dead_prefixes_and_constant_layers():
    """CKA of a prefix of dead neurons only is 0; a layer where nothing varies is represented by any neuron."""
    acts = np.random.default_rng(3).standard_normal((9, 4, 1))
    acts[:, 0] = 0.0
    h = similarity_matrix(acts)
    assert prefix_cka(h, np.array([0, 1, 2, 3]))[0] == 0.0
    assert cka_from_scratch(acts, np.array([], dtype=int)) == 0.0
    flat = np.ones((9, 4, 1))
    assert prefix_cka(similarity_matrix(flat), np.arange(4)).tolist() == [1.0] * 4
    assert smallest_prefix(similarity_matrix(flat), np.arange(4), theta=0.99) == 1
    assert smallest_prefix(h, np.array([], dtype=int), theta=0.5) == 0


def test_smallest_prefix_is_the_first_strictly_passing_multiple_of_step():
    """Brute force over the scratch curve: first k (multiple of step, or all) with CKA > Θ, strictly."""
    rng = np.random.default_rng(4)
    acts = np.maximum(rng.standard_normal((30, 23, 1)), 0.0)
    order = rng.permutation(23)
    h = similarity_matrix(acts)
    curve = scratch_curve(acts, order, True)
    for step in (1, 2, 5, 23, 40):
        sizes = sorted({*range(step, 23, step), 23})
        for theta in (0.0, 0.3, 0.8, 0.95, 0.999, 1.0):
            expected = next((k for k in sizes if curve[k - 1] > theta), 23)
            assert smallest_prefix(h, order, theta, step) == expected, (step, theta)
    scanned = prefix_cka(h, order)
    at_five = float(scanned[4])  # Θ equal to the CKA of the 5-prefix: that prefix does not pass (strict >)
    assert smallest_prefix(h, order, at_five) == next(k for k in range(1, 24) if scanned[k - 1] > at_five) != 5


def test_smallest_prefix_is_monotone_in_theta():
    """A larger Θ never gives a shorter prefix, for any step."""
    rng = np.random.default_rng(5)
    acts = np.maximum(rng.standard_normal((20, 50, 2)), 0.0)
    h, order = similarity_matrix(acts), rng.permutation(50)
    for step in (1, 3):
        sizes = [smallest_prefix(h, order, theta, step) for theta in np.linspace(0.0, 1.0, 101)]
        assert sizes == sorted(sizes)
