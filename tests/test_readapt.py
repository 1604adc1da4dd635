"""`onnxslice readapt`: train only the critical neurons against adversarial samples.

Oracles: the ONNX initializers of the original vs. the written model (non-critical neurons bit-identical,
critical ones trained); the trained parameter ratio recomputed from the slice and the ONNX weight shapes;
onnxruntime accuracies of the written model on its own; exit code 2 and one line for bad input; for
--slice-on adversarial, the profile and slice of adversarial samples made directly with torchattacks.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner

from onnxslice import api
from onnxslice.data import DataSource, load_data
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.maintain.attacks import EPS_GRID_FACTOR, TARGET_ACCURACY, AttackSpec, adversarial, calibrate_eps
from onnxslice.maintain.readapt import adversarial_set
from onnxslice.maintain.roundtrip import Trainable
from onnxslice.profiling import profile_model
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.summary import neuron_fraction
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP, export_onnx, random_npz
from tests.test_roundtrip import changed_neurons, mean_activation_slice, neuron_rows


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def readapt_json(*args: str) -> dict:
    code, out, err = run("readapt", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def expected_tpr(model_path, piece: Slice) -> float:
    """Trained entries over all per-neuron entries of the neuron layers: kept hidden neurons and every neuron of
    the classifier layer, counted from the ONNX tensors."""
    model = load_model(model_path)
    trained = total = 0
    for layer, tensors in zip(find_neuron_layers(model).layers, neuron_rows(model), strict=True):
        per_neuron = sum(t.size // layer.size for t in tensors)
        kept = len(piece.layers[layer.name].kept) if layer.name in piece.layers else layer.size
        trained += per_neuron * kept
        total += per_neuron * layer.size
    return trained / total


@pytest.fixture(scope="module")
def mlp_slice(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("readapt") / "mlp.json"
    mean_activation_slice(MLP, load_data("digits:train").cap_per_class(20)).save(path)
    return path


def test_readapt_trains_only_the_critical_neurons(tmp_path, mlp_slice) -> None:
    """The written model's non-critical neurons are bit-identical to the original's; the critical ones and the
    classifier moved; TPR is the slice's share of the neuron-layer parameters; accuracies are fractions."""
    out = tmp_path / "out.onnx"
    result = readapt_json(str(MLP), "--slice", str(mlp_slice), "--data", "digits:train", "--max-per-class", "30",
                          "--epochs", "3", "--weight-decay", "0.01", "-o", str(out))
    piece = Slice.load(mlp_slice)
    original, adapted = load_model(MLP), load_model(out)
    for layer, changed in zip(find_neuron_layers(original).layers, changed_neurons(original, adapted), strict=True):
        critical = np.zeros(layer.size, bool)
        critical[piece.layers[layer.name].kept if layer.name in piece.layers else slice(None)] = True
        assert not changed[~critical].any(), f"{layer.name}: a frozen neuron moved"
        assert changed[critical].mean() > 0.9, f"{layer.name}: critical neurons were not trained"
    assert result["tpr"] == pytest.approx(expected_tpr(MLP, piece))
    for key in ("ra", "raa", "clean_before", "clean_after", "adversarial_before"):
        assert 0 <= result[key] <= 1
    assert result["clean_before"] == pytest.approx(0.9766, abs=0.03)  # 30 samples per class of digits:train
    assert result["ra"] > result["adversarial_before"], "training on the adversarial set did not help on it"
    assert result["ra_train"] == result["ra"]  # without --eval-data, RA is measured on the training adversarial set
    assert result["seconds"] > 0 and result["attack"] == "fgsm"
    # the default eps is calibrated on --data, which is also the evaluation data here: at most 20% before
    assert result["eps_calibrated_to"] == 0.2 and result["adversarial_before"] <= 0.2


def test_calibrated_eps_is_the_smallest_grid_point_that_reaches_the_target() -> None:
    """Oracle: the attack itself. At the calibrated eps the model's accuracy on the attacked samples is at most the
    target (20% for FGSM, 5% for PGD), at the grid point below it is above the target."""
    x, y = load_data("digits:train", max_per_class=15).arrays()
    x = x.reshape(len(x), -1)
    trainable = Trainable.from_onnx(load_model(MLP))

    def adversarial_accuracy(spec: AttackSpec) -> float:
        adv = adversarial(spec, trainable.scores, trainable.module, x, y)
        with torch.no_grad():
            return float((trainable.scores(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())

    for attack, target in TARGET_ACCURACY.items():
        spec = AttackSpec.create(attack, None, (0.0, 1.0), x)
        eps = calibrate_eps(spec, trainable.scores, trainable.module, x, y)
        assert adversarial_accuracy(replace(spec, eps=eps)) <= target
        assert adversarial_accuracy(replace(spec, eps=eps / EPS_GRID_FACTOR)) > target


def test_train_all_is_the_full_training_baseline(tmp_path, mlp_slice) -> None:
    """--train all: TPR 1 and the non-critical neurons move too."""
    out = tmp_path / "all.onnx"
    result = readapt_json(str(MLP), "--slice", str(mlp_slice), "--data", "digits:train", "--max-per-class", "10",
                          "--epochs", "2", "--train", "all", "--attack", "pgd", "-o", str(out))
    assert result["tpr"] == 1.0
    changed = changed_neurons(load_model(MLP), load_model(out))
    assert all(c.mean() > 0.5 for c in changed)  # neurons dead on every sample get no gradient


def test_readapt_cnn_with_pgd_keeps_frozen_filters(tmp_path) -> None:
    """A conv model (residual Add, stride-2 conv, Flatten -> Gemm): frozen filters and rows bit-identical."""
    piece_path = tmp_path / "cnn.json"
    mean_activation_slice(CNN, load_data("digits:train").cap_per_class(10), keep=0.25).save(piece_path)
    out = tmp_path / "cnn.onnx"
    readapt_json(str(CNN), "--slice", str(piece_path), "--data", "digits:train", "--eval-data", "digits:test",
                 "--max-per-class", "8", "--epochs", "1", "--attack", "pgd", "--eps", "0.05", "-o", str(out))
    piece = Slice.load(piece_path)
    original = load_model(CNN)
    for layer, changed in zip(find_neuron_layers(original).hidden, changed_neurons(original, load_model(out)),
                              strict=False):
        frozen = np.ones(layer.size, bool)
        frozen[piece.layers[layer.name].kept] = False
        assert not changed[frozen].any(), layer.name


@pytest.mark.slow
def test_readapt_torchvision_resnet(tmp_path) -> None:
    """resnet18 (random weights, BatchNormalization kept) at 32x32 on tiny random data: the round trip trains and
    writes a model whose frozen neurons (weights, BN scale and shift) are bit-identical."""
    torch.manual_seed(0)
    path = export_onnx(torchvision.models.resnet18(num_classes=4), (3, 32, 32), tmp_path / "r18.onnx",
                       keep_batchnorm=True)
    data = random_npz(tmp_path / "d.npz", (3, 32, 32), classes=4, per_class=2)
    model = load_model(path)
    layers = {layer.name: LayerSlice(layer.size, list(range(0, layer.size, 2))) for layer in
              find_neuron_layers(model).hidden}
    Slice(model_sha256=sha256_of(path), layers=layers).save(tmp_path / "s.json")
    out = tmp_path / "out.onnx"
    result = readapt_json(str(path), "--slice", str(tmp_path / "s.json"), "--data", str(data), "--epochs", "1",
                          "--batch-size", "4", "-o", str(out))
    assert 0.4 < result["tpr"] < 0.6
    for layer, changed in zip(find_neuron_layers(model).hidden, changed_neurons(model, load_model(out)),
                              strict=False):
        assert not changed[1::2].any(), layer.name


def test_slice_of_another_model_is_refused(tmp_path, mlp_slice) -> None:
    """A slice whose sha256 is another model's: exit 2, one line naming the model, nothing written."""
    out = tmp_path / "out.onnx"
    code, _, err = run("readapt", str(CNN), "--slice", str(mlp_slice), "--data", "digits", "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "made for another model" in err and str(CNN) in err
    assert not out.exists()


def test_labels_the_model_cannot_output_are_refused(tmp_path, mlp_slice) -> None:
    """Data with label 12 for a 10-class model: exit 2, one line naming the data, nothing written."""
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((4, 64), np.float32), y=np.array([0, 1, 2, 12]))
    out = tmp_path / "out.onnx"
    code, _, err = run("readapt", str(MLP), "--slice", str(mlp_slice), "--data", str(data), "-o", str(out))
    assert code == 2 and err.count("\n") == 1 and "label 12" in err and "bad.npz" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_eps_is_a_number_or_auto(tmp_path, mlp_slice) -> None:
    """Oracle: click's usage error (exit 2) names the bad value; nothing is written."""
    out = tmp_path / "out.onnx"
    code, _, err = run("readapt", str(MLP), "--slice", str(mlp_slice), "--data", "digits:val", "--eps", "strong",
                       "-o", str(out))
    assert code == 2 and "'strong' is neither a number nor auto" in err and not out.exists()


def test_calibration_leaves_batchnorm_statistics_and_the_mode_alone() -> None:
    """Oracle: the module's own buffers. A module in train mode with BatchNorm: after calibrate_eps its running
    statistics are bit-identical and it is still in train mode (the accuracy checks run in eval mode)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = {name: value.clone() for name, value in module.state_dict().items()}
    x = np.random.default_rng(0).random((32, 4), np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    calibrate_eps(AttackSpec.create("fgsm", None, (0.0, 1.0), x), module, module, x, y)
    assert module.training
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name


def direct_adversarial(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """FGSM samples of the first ``per_class`` digits:train samples per class on the MLP, made with the attack
    functions alone (calibrated eps, seed 0): what --slice-on adversarial must profile."""
    x, y = load_data("digits:train", max_per_class=per_class).arrays()
    x = x.reshape(len(x), -1).astype(np.float32)
    trainable = Trainable.from_onnx(load_model(MLP))
    spec = AttackSpec.create("fgsm", None, None, x)
    spec = replace(spec, eps=calibrate_eps(spec, trainable.scores, trainable.module, x, y))
    return adversarial(spec, trainable.scores, trainable.module, x, y), y


def test_profile_of_the_adversarial_set_equals_profile_model_on_the_same_samples() -> None:
    """Oracle: profile_model on an in-memory DataSource of the adversarial samples made directly with the attack
    functions; the adversarial set readapt slices on gives the same contributions and CKA statistics."""
    adv, y = direct_adversarial(8)
    samples = adversarial_set(load_model(MLP), load_data("digits:train", max_per_class=8))
    np.testing.assert_array_equal(samples.adv, adv)
    ours = api.profile(MLP, samples.source(), ["taylor"])
    expected = profile_model(MLP, DataSource.from_arrays("direct", adv, y), ["taylor"], progress=False)
    for layer in expected.layers:
        np.testing.assert_allclose(ours.contributions["taylor"][layer], expected.contributions["taylor"][layer],
                                   rtol=1e-6)
        for category in expected.categories:
            np.testing.assert_allclose(ours.similarity_matrix(layer, category),
                                       expected.similarity_matrix(layer, category), rtol=1e-6)


def test_slice_on_adversarial_differs_from_the_clean_slice_and_says_so(tmp_path) -> None:
    """--slice-on adversarial on the MLP: the slice trained is the one the same settings (semantic, taylor, the
    default Θ) give on a profile of the directly made adversarial samples (its neuron fraction and TPR); the
    clean slice of the same samples keeps other neurons, and the report says which data each came from."""
    result = readapt_json(str(MLP), "--slice-on", "adversarial", "--data", "digits:train", "--max-per-class", "20",
                          "--epochs", "1", "-o", str(tmp_path / "out.onnx"))
    adv, y = direct_adversarial(20)
    on_adversarial = api.select(MLP, None, data=DataSource.from_arrays("direct", adv, y))
    clean = api.select(MLP, None, data=load_data("digits:train", max_per_class=20))
    assert result["slice_on"] == "adversarial" and "under fgsm" in result["slice_data"]
    assert result["clean_slice_data"] == "digits:train"
    assert result["slice_neuron_fraction"] == pytest.approx(neuron_fraction(on_adversarial))
    assert result["tpr"] == pytest.approx(expected_tpr(MLP, on_adversarial))
    assert result["clean_slice_neuron_fraction"] == pytest.approx(neuron_fraction(clean))
    assert result["clean_slice_tpr"] == pytest.approx(expected_tpr(MLP, clean))
    changed = sum(len(set(a.kept) ^ set(clean.layers[name].kept)) for name, a in on_adversarial.layers.items())
    assert changed > 0 and result["slice_changed_neurons"] == changed and result["slice_differs_from_clean"]


def test_slice_on_adversarial_takes_the_given_slices_settings(tmp_path) -> None:
    """With --slice (global, ratio 0.25) the adversarial slice keeps its settings: a quarter of every hidden
    layer (oracle: ceil(0.25 C) per layer, the global rule); --slice-on clean without --slice, or with --theta,
    is exit 2 naming the option."""
    clean = api.select(MLP, None, strategy="global", ratio=0.25, data=load_data("digits:train", max_per_class=10))
    clean.save(tmp_path / "g.json")
    result = readapt_json(str(MLP), "--slice", str(tmp_path / "g.json"), "--slice-on", "adversarial", "--data",
                          "digits:train", "--max-per-class", "10", "--epochs", "0", "-o", str(tmp_path / "o.onnx"))
    assert result["slice_strategy"] == "global" and result["slice_ratio"] == 0.25
    sizes = [layer.size for layer in clean.layers.values()]
    assert result["slice_neuron_fraction"] == pytest.approx(sum(-(-s // 4) for s in sizes) / sum(sizes))
    for args, option in [((), "--slice"), (("--slice", str(tmp_path / "g.json"), "--theta", "0.9"), "--theta")]:
        code, _, err = run("readapt", str(MLP), *args, "--data", "digits:train", "--max-per-class", "5",
                           "-o", str(tmp_path / "x.onnx"))
        assert code == 2 and option in err and len(err.strip().splitlines()) == 1, err
