"""Unstructured pruning methods and the compress loop (CR, NI, MA) on hand-checked cases."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from torch.nn.utils import prune

from onnxslice.compression.loop import compress, nonzero_params, sparse_storage, sparsity_at
from onnxslice.compression.methods import (
    Erk,
    GlobalMagnitude,
    Lamp,
    Prunable,
    UniformPlus,
    erk_densities,
    lamp_scores,
)
from onnxslice.data import load_data
from onnxslice.errors import SparsityUnreachable
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.runtime import make_session
from onnxslice_cli.main import cli
from tests.helpers import MLP


def test_lamp_scores_equal_the_formula_on_a_hand_computed_example():
    """Oracle: by hand. Squares 9, 1, 4, 0.25; ascending 0.25 < 1 < 4 < 9 with suffix sums 14.25, 14, 13, 9,
    so score(u) = w_u² / Σ_{v ≥ u} w_v² is 0.25/14.25, 1/14, 4/13 and 9/9."""
    scores = lamp_scores(np.array([[3.0, -1.0], [2.0, 0.5]]))
    np.testing.assert_allclose(scores, [[1.0, 1 / 14], [4 / 13, 0.25 / 14.25]])


def test_lamp_prunes_by_the_global_order_of_scores():
    """Oracle: by hand. Layer a = [1, 2] has scores [1/5, 1]; layer b = [10, 20, 30] has [100/1400, 400/1300, 1].
    Pruning 2 of 5 removes the two smallest scores (100/1400 and 1/5): b's 10 and a's 1, where global magnitude
    would remove a's 1 and 2 (the two smallest magnitudes)."""
    weights = [Prunable("a", np.array([1.0, 2.0]), "Gemm"), Prunable("b", np.array([10.0, 20.0, 30.0]), "Gemm")]
    lamp = Lamp().keep_masks(weights, 0.4)
    assert [m.tolist() for m in lamp] == [[False, True], [False, True, True]]
    magnitude = GlobalMagnitude().keep_masks(weights, 0.4)
    assert [m.tolist() for m in magnitude] == [[False, False], [True, True, True]]


def test_global_magnitude_and_per_layer_magnitude_match_torch_prune():
    """Oracle: torch.nn.utils.prune — global_unstructured with L1Unstructured gives the same masks as our global
    magnitude, and l1_unstructured per layer (with ERK's per-layer counts) the same as our ERK masks."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(20, 30), torch.nn.Linear(30, 10)]
    weights = [Prunable(f"w{i}", layer.weight.detach().numpy().copy(), "Gemm") for i, layer in enumerate(layers)]
    total = sum(w.values.size for w in weights)
    prune.global_unstructured([(layer, "weight") for layer in layers], prune.L1Unstructured, amount=total - 180)
    ours = GlobalMagnitude().keep_masks(weights, 1 - 180 / total)
    for layer, mask in zip(layers, ours, strict=True):
        np.testing.assert_array_equal(layer.weight_mask.numpy().astype(bool), mask)
    erk = Erk().keep_masks(weights, 0.7)
    for w, mask in zip(weights, erk, strict=True):
        fresh = torch.nn.Linear(*w.values.shape[::-1])
        fresh.weight.data = torch.from_numpy(w.values)
        prune.l1_unstructured(fresh, "weight", amount=int(w.values.size - mask.sum()))
        np.testing.assert_array_equal(fresh.weight_mask.numpy().astype(bool), mask)


def test_erk_densities_follow_the_formula():
    """Oracle: by hand. Shapes 10x10 and 100x100: raw scores (10+10)/100 = 0.2 and 200/10000 = 0.02.
    Density 0.1 keeps 1010 of 10100: ε = 1010 / (0.2·100 + 0.02·10000) = 4.5909, densities 0.91818 and 0.091818.
    Density 0.5: ε·0.2 > 1, so the small layer is dense and the big one keeps (5050 − 100) / 10000 = 0.495."""
    np.testing.assert_allclose(erk_densities([(10, 10), (100, 100)], 0.1), [0.2 * 1010 / 220, 0.02 * 1010 / 220])
    np.testing.assert_allclose(erk_densities([(10, 10), (100, 100)], 0.5), [1.0, 0.495])
    conv = erk_densities([(4, 2, 3, 3), (8, 4, 3, 3)], 0.3)  # (4+2+3+3)/72 vs (8+4+3+3)/288, total 30% of 360
    assert conv[0] / conv[1] == pytest.approx((12 / 72) / (18 / 288))
    assert conv[0] * 72 + conv[1] * 288 == pytest.approx(0.3 * 360)


def test_erk_masks_keep_the_largest_weights_of_each_layer():
    """Oracle: the densities above, rounded to whole weights, filled by magnitude within each layer."""
    rng = np.random.default_rng(0)
    weights = [Prunable("a", rng.standard_normal((10, 10)), "Gemm"), Prunable("b", rng.standard_normal((100, 100)),
                                                                              "Gemm")]
    masks = Erk().keep_masks(weights, 0.9)
    assert [int(m.sum()) for m in masks] == [round(0.2 * 1010 / 220 * 100), round(0.02 * 1010 / 220 * 10000)]
    for w, m in zip(weights, masks, strict=True):
        assert np.abs(w.values[m]).min() >= np.abs(w.values[~m]).max()


def test_uniform_plus_keeps_a_first_conv_dense_and_a_fifth_of_the_last_layer():
    """Oracle: by hand (Lee et al.'s reference allocation). Sizes 100 (Conv), 1000, 100. Sparsity 0.5 prunes 600
    from the last two: 600/1100 each. Sparsity 0.85 prunes 1020: the last layer may lose only 80, so the middle
    loses 940 of 1000 (density 0.06). Beyond what the two can give, it refuses."""
    weights = [Prunable("c", np.ones((4, 1, 5, 5)), "Conv"), Prunable("m", np.ones((10, 100)), "Gemm"),
               Prunable("o", np.ones((10, 10)), "Gemm")]
    np.testing.assert_allclose(UniformPlus.densities(weights, 0.5), [1.0, 1 - 600 / 1100, 1 - 600 / 1100])
    np.testing.assert_allclose(UniformPlus.densities(weights, 0.85), [1.0, 0.06, 0.2])
    dense_first = [Prunable("m", np.ones((10, 100)), "Gemm"), Prunable("o", np.ones((10, 10)), "Gemm")]
    np.testing.assert_allclose(UniformPlus.densities(dense_first, 0.5), [0.5, 0.5])  # a first Gemm is pruned
    with pytest.raises(SparsityUnreachable):
        UniformPlus.densities(weights, 0.95)


def test_sparse_storage_counts_csr_bytes():
    """Oracle: by hand. A 3x4 weight with 2 non-zeros: dense 12·4 bytes; CSR 2·(4+4) + (3+1)·4 bytes."""
    weight = np.zeros((3, 4), np.float32)
    weight[0, 1], weight[2, 3] = 1.0, -2.0
    assert sparse_storage([Prunable("w", weight, "Gemm")]) == {"dense_bytes": 48, "csr_bytes": 32,
                                                                "csr_saving": 1 - 32 / 48}


def _hand_model() -> onnx.ModelProto:
    """logits = x @ W with W = [[8, .1], [.2, 7], [.3, .4], [.5, .6]] (4 inputs, 2 classes, no bias)."""
    weight = numpy_helper.from_array(np.array([[8, .1], [.2, 7], [.3, .4], [.5, .6]], np.float32), "W")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["logits"], name="fc")], "hand",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cr_ni_ma_on_a_hand_checked_case(tmp_path):
    """Oracle: by hand. Inputs e0..e3 with labels 0, 1, 1, 1 are all right (accuracy 1). Step 0.5: iteration 1
    keeps the 4 largest of 8 weights (8, 7, .6, .5): e2 scores (0, 0) -> class 0, wrong: accuracy 0.75, within
    the 0.3 budget. Iteration 2 keeps 8 and 7: e3 also wrong, 0.5 < 0.7: stop. So NI = 1, MA = 0.75,
    CR = 1 − 4/8 = 0.5, with two evaluations."""
    np.savez(tmp_path / "hand.npz", x=np.eye(4, dtype=np.float32), y=np.array([0, 1, 1, 1]))
    result = compress(_hand_model(), load_data(str(tmp_path / "hand.npz")), GlobalMagnitude(), step=0.5,
                      max_drop=0.3, device="cpu")
    assert (result.ni, result.ma, result.cr) == (1, 0.75, 0.5)
    assert [h["accuracy"] for h in result.history] == [0.75, 0.5]
    kept = numpy_helper.to_array(next(i for i in result.model.graph.initializer if i.name == "W"))
    np.testing.assert_array_equal(kept, np.array([[8, 0], [0, 7], [0, 0], [.5, .6]], np.float32))


def test_a_slice_that_already_costs_too_much_stops_before_pruning():
    """Oracle: the restructured model's own accuracy — keeping 4 neurons per hidden layer of the MLP drops far
    more than 1 point, so nothing is pruned: NI = 0, MA is the restructured model's accuracy, no evaluation."""
    model, test = load_model(MLP), load_data("digits:test")
    kept = {"/0/Gemm": [0, 1, 2, 3], "/2/Gemm": [0, 1, 2, 3]}
    result = compress(model, test, Lamp(), kept, step=0.2, device="cpu")
    assert result.ni == 0 and result.history == [] and "already" in result.stopped
    assert result.ma == result.accuracy_start < result.accuracy_original - 0.01
    assert result.ma == accuracy(result.model, test, "cpu")["accuracy"]


def test_sparsity_schedule_is_geometric():
    """Oracle: the paper's Table 4 baselines, CR = 1 − 0.95^NI (e.g. 30.17% at NI = 7, 55.99% at NI = 16)."""
    assert sparsity_at(7, 0.05) == pytest.approx(0.3017, abs=5e-5)
    assert sparsity_at(16, 0.05) == pytest.approx(0.5599, abs=5e-5)


def test_compress_cli_with_a_slice_writes_the_reported_model(tmp_path):
    """Oracle: the written file itself — its non-zero parameters give the reported CR against the original,
    its accuracy recomputed by `evaluate` is MA, it is smaller than the original (restructured), and every
    non-zero weight it keeps is a weight of the restructured model (pruning only zeroes)."""
    runner = CliRunner()
    piece, out = tmp_path / "slice.json", tmp_path / "out.onnx"
    made = runner.invoke(cli, ["slice", str(MLP), "--data", "digits:train", "--metric", "avg", "--theta", "0.99",
                               "-o", str(piece)])
    assert made.exit_code == 0, made.output
    run = runner.invoke(cli, ["compress", str(MLP), "--slice", str(piece), "--data", "digits:test", "--method",
                              "lamp", "--step", "0.3", "--max-drop", "0.05", "-o", str(out), "--json"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output)
    original, written = load_model(MLP), load_model(out)
    params = sum(int(np.prod(i.dims)) for i in original.graph.initializer)
    assert report["cr"] == pytest.approx(1 - nonzero_params(written) / params)
    assert report["ma"] == pytest.approx(accuracy(written, load_data("digits:test"), "cpu")["accuracy"])
    assert report["ma"] >= report["accuracy_original"] - 0.05
    assert report["params_dense"] < params and report["ni"] >= 1
    dropped = sum(layer["size"] - len(layer["kept"]) for layer in json.loads(piece.read_text())["layers"].values())
    assert report["restructure"]["channels_removed"] == dropped > 0
    probe = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    assert make_session(written, "cpu").run(None, {"input": probe})[0].shape == (3, 10)


def test_compress_refuses_a_slice_of_another_model_and_writes_nothing(tmp_path):
    """Oracle: the CLI contract — exit 2, one line naming the model, no output file."""
    runner = CliRunner()
    piece = tmp_path / "slice.json"
    piece.write_text(json.dumps({"format": "onnxslice.slice/1", "model_sha256": "0" * 64, "layers": {}}))
    out = tmp_path / "out.onnx"
    run = runner.invoke(cli, ["compress", str(MLP), "--slice", str(piece), "--data", "digits:test", "--method",
                              "erk", "-o", str(out)])
    assert run.exit_code == 2 and "another model" in run.output
    assert not out.exists()


def test_the_stopping_point_is_chosen_on_the_validation_data_and_reported_on_the_evaluation_data():
    """Oracle: onnxruntime accuracies of the written model and the loop's own history. The kept iteration is the
    last one whose validation accuracy (history) stays within max_drop of the original's validation accuracy,
    and the next one falls below it; MA is the written model's accuracy on the evaluation data, val_ma the one on
    the validation data."""
    model, val, test = load_model(MLP), load_data("digits:val"), load_data("digits:test")
    result = compress(model, val, Lamp(), step=0.3, max_drop=0.01, device="cpu", eval_data=test)
    floor = accuracy(model, val, "cpu")["accuracy"] - 0.01
    assert result.val_data == "digits:val" and result.eval_data == "digits:test"
    assert all(h["accuracy"] >= floor for h in result.history[:result.ni])
    assert result.history[result.ni]["accuracy"] < floor
    assert result.val_ma == pytest.approx(accuracy(result.model, val, "cpu")["accuracy"])
    assert result.ma == pytest.approx(accuracy(result.model, test, "cpu")["accuracy"])
    assert result.accuracy_original == pytest.approx(accuracy(model, test, "cpu")["accuracy"])


def test_fine_tuning_between_steps_keeps_the_pruned_sparsity(tmp_path):
    """Oracle: the geometric schedule. With one fine-tuning epoch after each step (on digits:train, best epoch on
    digits:val), the written model's prunable weights are exactly as sparse as iteration NI prescribes
    (1 − 0.5^NI, to one weight per layer of rounding): fine-tuning never revives a pruned weight. The JSON of the
    command names both data sets and the epochs."""
    out = tmp_path / "c.onnx"
    run = CliRunner().invoke(cli, ["compress", str(MLP), "--data", "digits:train", "--val-data", "digits:val",
                                   "--eval-data", "digits:test", "--method", "global", "--step", "0.5",
                                   "--max-iterations", "3", "--finetune-epochs", "1", "-o", str(out), "--json"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["val_data"] == "digits:val" and report["eval_data"] == "digits:test"
    assert report["finetune_epochs"] == 1 and report["ni"] >= 1
    weights = [numpy_helper.to_array(i) for i in load_model(out).graph.initializer if i.dims and len(i.dims) == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros == pytest.approx(sparsity_at(report["ni"], 0.5), abs=1e-3)
    assert report["ma"] == pytest.approx(accuracy(load_model(out), load_data("digits:test"), "cpu")["accuracy"])
