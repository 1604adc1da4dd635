"""Profiling: activations read through onnxruntime, the five contribution metrics, CKA statistics, profile.npz.

Oracles: forward hooks on the PyTorch models the ONNX files were exported from (activations), autograd
and captum on those originals (taylor, deeplift), numpy on the activations (avg, var, ens, H), and the
file read back.
"""

from __future__ import annotations

import copy
import json
import math
import re
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from captum.attr import LayerDeepLift
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.profiling import METRICS, Metric, Profile, profile_model, profiler
from onnxslice.profiling.profiler import cka_samples, with_observed_outputs, with_spatial_means
from onnxslice.profiling.similarity import as_samples_neurons_positions
from onnxslice.runtime import ReusedOutputs, Runner
from onnxslice_cli.profile_cmd import profile as profile_command
from tests.helpers import CNN, MLP, MODELS, example_torch_model, export_onnx, random_npz

JAX_CNN = MODELS / "jax_cnn_digits.onnx"
TORCHVISION = ("resnet18", "mobilenet_v2", "densenet121")

#: ONNX layer of the example models -> path of the module of the PyTorch original that outputs its activation.
#: The CNN's convs have BatchNorm folded in, so a conv without activation maps to its conv+BN Sequential.
EXAMPLE_SOURCES = {
    "mlp": {"/0/Gemm": "1", "/2/Gemm": "3"},
    "cnn": {
        "/features/features.0/features.0.0/Conv": "features.1",
        "/features/features.2/conv1/conv1.0/Conv": "features.2.relu",  # the block's first ReLU call
        "/features/features.2/conv2/conv2.0/Conv": "features.2.conv2",
        "/features/features.3/features.3.0/Conv": "features.4",
        "/classifier/classifier.1/Gemm": "classifier.2",
    },
}


def torch_source(model: torch.nn.Module, node_name: str) -> tuple[torch.nn.Module, int]:
    """The module a legacy-exported node came from and which call of it it was.

    The exporter scopes '/layer1/layer1.0/relu_1/Relu' for the second call of module 'layer1.0.relu';
    a scope that extends its parent's ('features.0' under 'features') continues the dotted path.
    """
    *scopes, _op = node_name.strip("/").split("/")
    path, parent = "", ""
    for scope in scopes:
        if parent and scope.startswith(parent + "."):
            path += scope[len(parent):]
        else:
            path = f"{path}.{scope}" if path else scope
        parent = scope
    try:
        return model.get_submodule(path), 0
    except AttributeError:
        base, _, call = path.rpartition("_")
        return model.get_submodule(base), int(call)


def hooked_outputs(model: torch.nn.Module, sources: dict[str, tuple[torch.nn.Module, int]], x: torch.Tensor,
                   clone: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` and keep the output of the given call of each module; ``clone`` copies it before later
    in-place ops (resnet's ``out += identity``) can change it, else autograd can differentiate it."""
    calls: dict[int, list[torch.Tensor]] = {id(module): [] for module, _ in sources.values()}
    handles = [module.register_forward_hook(lambda m, i, o: calls[id(m)].append(o.clone() if clone else o))
               for module in {id(m): m for m, _ in sources.values()}.values()]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, {layer: calls[id(module)][call] for layer, (module, call) in sources.items()}


def onnxruntime_activations(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The hidden layers' observed activations, read by a plain onnxruntime session over the whole batch."""
    model = load_model(path)
    layers = find_neuron_layers(model).hidden
    session = ort.InferenceSession(with_observed_outputs(model, layers).SerializeToString())
    values = session.run([layer.output for layer in layers], {session.get_inputs()[0].name: x})
    return dict(zip([layer.name for layer in layers], values, strict=True))


def untangled_cnn() -> torch.nn.Module:
    """The CNN original with its residual block's ReLU split into two modules (same function).

    captum's DeepLift and per-call hooks need each nonlinearity module to be called once.
    """
    model = copy.deepcopy(example_torch_model("cnn"))
    block = model.features[2]
    block.relu_out = torch.nn.ReLU()
    block.forward = types.MethodType(lambda self, x: self.relu_out(self.conv2(self.relu(self.conv1(x))) + x), block)
    return model


def without_inplace(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return model


def with_random_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fresh BatchNorm layers are the identity; random statistics and affine parameters make them count."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def torchvision_models(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, str]]:
    """Random-weight torchvision classifiers at 32x32, exported once per module with BatchNorm kept
    (so that every observed activation has a PyTorch module to hook)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("torchvision")
    built = {}
    for name in TORCHVISION:
        module = with_random_batchnorm(without_inplace(getattr(torchvision.models, name)(weights=None, num_classes=10)))
        built[name] = (module, str(export_onnx(module, (3, 32, 32), folder / f"{name}.onnx", keep_batchnorm=True)))
    return built


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """Equal within ``rtol`` of each value or of the array's largest magnitude (deep random nets have tiny
    gradients in early layers, so the scale is the array's own)."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_example_activations_through_onnxruntime_equal_the_pytorch_original(name):
    path, original = {"mlp": MLP, "cnn": CNN}[name], example_torch_model(name)
    x, _ = load_data("digits:test", max_per_class=3).arrays()
    x = x.reshape(len(x), 64) if name == "mlp" else x
    sources = {layer: (original.get_submodule(module), 0) for layer, module in EXAMPLE_SOURCES[name].items()}
    with torch.no_grad():
        _, expected = hooked_outputs(original, sources, torch.from_numpy(x), clone=True)
    actual = onnxruntime_activations(path, x)
    assert set(actual) == set(expected)
    for layer, value in actual.items():
        assert_close(value, expected[layer].numpy())


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_activations_through_onnxruntime_equal_forward_hooks(torchvision_models, name):
    original, path = torchvision_models[name]
    model = load_model(path)
    layers = find_neuron_layers(model).hidden
    assert len(layers) > 15
    sources = {layer.name: torch_source(original, (layer.tail or (layer.name,))[-1]) for layer in layers}
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        _, expected = hooked_outputs(original, sources, torch.from_numpy(x), clone=True)
    actual = onnxruntime_activations(path, x)
    for layer in layers:
        assert_close(actual[layer.name], expected[layer.name].numpy())


@pytest.mark.parametrize("path", [CNN, JAX_CNN], ids=["cnn", "jax_nhwc"])
def test_activation_metrics_and_cka_statistics_equal_numpy(path):
    """avg / var / ens per category and over all data, and H on the first max_per_class samples of each
    category, against numpy on activations read in one batch; profiling streams in batches of 7."""
    data = load_data("digits:test:0-2")
    profile = profile_model(path, data, ["avg", "var", "ens"], max_per_class=10, batch_size=7, progress=False)
    x, labels = data.arrays()
    x = x.reshape(len(x), 8, 8, 1) if path == JAX_CNN else x
    model = load_model(path)
    assert profile.categories == [0, 1, 2] and profile.samples == {c: int((labels == c).sum()) for c in range(3)}
    for layer in find_neuron_layers(model).hidden:
        act = np.moveaxis(onnxruntime_activations(path, x)[layer.name], layer.channel_axis, 1)
        act = act.reshape(len(x), layer.size, -1).astype(np.float64)
        mean = act.mean(axis=2)
        groups = [labels == c for c in range(3)] + [np.ones(len(labels), bool)]
        avg = np.stack([mean[g].mean(axis=0) for g in groups])
        var = np.stack([mean[g].var(axis=0) for g in groups])
        scale = lambda v: (v - v.min(1, keepdims=True)) / (v.max(1, keepdims=True) - v.min(1, keepdims=True))  # noqa: E731
        assert_close(profile.contributions["avg"][layer.name], avg, rtol=1e-5)
        assert_close(profile.contributions["var"][layer.name], var, rtol=1e-5)
        assert_close(profile.contributions["ens"][layer.name], scale(avg) + scale(var), rtol=1e-5)
        for c in range(3):
            first = act[labels == c][:10]
            for centered in (True, False):
                a = first - first.mean(axis=0) if centered else first
                cross = np.einsum("nis,njt->ijst", a, a)
                assert_close(profile.similarity_matrix(layer.name, c, centered), (cross**2).sum(axis=(2, 3)))


def _original_gradient_metrics(original: torch.nn.Module, sources: dict, x: np.ndarray,
                               labels: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """taylor (autograd) and deeplift (captum) on the PyTorch original: per-sample |Σ_positions ...|,
    averaged per category and over all samples, the target being each sample's own label."""
    inputs, targets = torch.from_numpy(x), torch.from_numpy(labels)
    out, acts = hooked_outputs(original, sources, inputs)
    names = list(acts)
    grads = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), [acts[n] for n in names])
    per_sample = {"taylor": {}, "deeplift": {}}
    for name, grad in zip(names, grads, strict=True):
        act = acts[name]
        per_sample["taylor"][name] = (act * grad).reshape(len(x), act.shape[1], -1).sum(2).abs().detach().numpy()
        module = sources[name][0]
        attribution = LayerDeepLift(original, module).attribute(inputs, baselines=0.0, target=targets)
        per_sample["deeplift"][name] = attribution.reshape(len(x), act.shape[1], -1).sum(2).abs().detach().numpy()
    groups = [labels == c for c in np.unique(labels)] + [np.ones(len(labels), bool)]
    return {metric: {name: np.stack([v[g].mean(axis=0) for g in groups]) for name, v in values.items()}
            for metric, values in per_sample.items()}


@pytest.mark.parametrize("name", ["mlp", "cnn", "mobilenet_v2"])
def test_gradient_metrics_through_the_onnx_round_trip_equal_the_pytorch_original(torchvision_models, tmp_path, name):
    if name == "mobilenet_v2":
        original, path = torchvision_models[name]
        data = load_data(str(random_npz(tmp_path / "random.npz", (3, 32, 32), classes=3, per_class=2)))
        sources = {layer.name: torch_source(original, (layer.tail or (layer.name,))[-1])
                   for layer in find_neuron_layers(load_model(path)).hidden}
    else:
        path = MLP if name == "mlp" else CNN
        original = example_torch_model("mlp") if name == "mlp" else untangled_cnn()
        data = load_data("digits:test:0-2", max_per_class=6)
        sources = {layer: (original.get_submodule(module), 0) for layer, module in EXAMPLE_SOURCES[name].items()}
    x, labels = data.arrays()
    expected = _original_gradient_metrics(original, sources, x.reshape(len(x), 64) if name == "mlp" else x, labels)
    profile = profile_model(path, data, ["taylor", "deeplift"], max_per_class=4, batch_size=5, progress=False)
    for metric in ("taylor", "deeplift"):
        assert set(profile.contributions[metric]) == set(expected[metric])
        for layer, value in expected[metric].items():
            assert_close(profile.contributions[metric][layer], value)


def test_cka_samples_are_the_first_of_each_category_and_the_rest_is_everything_else():
    """Oracle: a loop over the labels in data order, taking a sample while its category has fewer than the cap."""
    labels = np.random.default_rng(0).integers(0, 4, 60)
    labels[labels == 3] = 2  # category 2 is frequent, and no sample has label 3
    first, rest = cka_samples(labels, [0, 1, 2], cap=5)
    taken: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for position, label in enumerate(labels):
        if len(taken[label]) < 5:
            taken[label].append(position)
    assert [list(f) for f in first] == [taken[0], taken[1], taken[2]]
    assert list(rest) == sorted(set(range(60)) - {p for t in taken.values() for p in t})


def test_a_sixth_metric_is_one_class(monkeypatch):
    """A metric registered by name is profiled like the built-in ones, and one that reads activations position by
    position gets them at every position for all the data (oracle: numpy on activations read in one batch; a
    metric given spatial means would get the square of the mean, not the mean of the squares)."""

    class SquareMean(Metric):
        name = "square_mean"

        def sample_values(self, batch):
            return {"square": (batch.activation.astype(np.float64) ** 2).mean(axis=2)}

        def combine(self, means):
            return means["square"]

    monkeypatch.setitem(METRICS, SquareMean.name, SquareMean)
    data = load_data("digits:test:0-1")
    profile = profile_model(CNN, data, ["avg", "square_mean"], max_per_class=3, batch_size=8, progress=False)
    x, labels = data.arrays()
    for layer in find_neuron_layers(load_model(CNN)).hidden:
        act = as_samples_neurons_positions(onnxruntime_activations(CNN, x)[layer.name], layer.channel_axis)
        square = (act.astype(np.float64) ** 2).mean(axis=2)
        expected = np.stack([square[labels == c].mean(axis=0) for c in (0, 1)] + [square.mean(axis=0)])
        assert_close(profile.contributions["square_mean"][layer.name], expected, rtol=1e-5)


class Permute(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def channels_last_model(path) -> str:
    """A conv whose activation is observed after an NHWC Transpose, exported at opset 17 (ReduceMean's axes are
    an attribute there, an input from opset 18 on)."""
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), Permute(), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(8 * 8 * 4, 3))
    return str(export_onnx(module.eval(), (1, 8, 8), path, opset=17))


@pytest.mark.parametrize("name", ["cnn", "jax_nhwc", "mlp", "channels_last_opset17"])
def test_spatial_means_read_from_the_graph_equal_numpy_means_of_the_activations(name, tmp_path):
    """Oracle: numpy's mean over the positions of the observed activations, read whole."""
    path = {"cnn": CNN, "jax_nhwc": JAX_CNN, "mlp": MLP}.get(name) or channels_last_model(tmp_path / "nhwc.onnx")
    x = load_data("digits:test").arrays()[0][:20]
    x = x.reshape(len(x), 8, 8, 1) if path == JAX_CNN else x.reshape(len(x), -1) if path == MLP else x
    model = load_model(path)
    layers = find_neuron_layers(model).hidden
    extended, names = with_spatial_means(model, layers)
    session = ort.InferenceSession(extended.SerializeToString())
    means = session.run(names, {session.get_inputs()[0].name: x})
    whole = onnxruntime_activations(path, x)
    for layer, mean in zip(layers, means, strict=True):
        act = as_samples_neurons_positions(whole[layer.name], layer.channel_axis)
        assert as_samples_neurons_positions(mean, layer.channel_axis).shape == (len(x), layer.size, 1)
        assert_close(as_samples_neurons_positions(mean, layer.channel_axis)[:, :, 0], act.mean(axis=2), rtol=1e-5)
    if name == "channels_last_opset17":
        assert [layer.channel_axis for layer in layers] == [3]
        assert [n.op_type for n in extended.graph.node if n.output[0] in names] == ["ReduceMean"]


def test_reused_outputs_read_what_an_ordinary_run_reads_batch_after_batch():
    """Oracle: Runner.run on the same batch. Batches of changing sizes and contents, each read (and copied) before the
    next, as the profiler reads them; the first batch of a size is read by an ordinary run, the others through the
    reused arrays."""
    model = load_model(CNN)
    layers = find_neuron_layers(model).hidden
    means_model, outputs = with_spatial_means(model, layers)
    runner = Runner.create(means_model, "cpu")
    read = ReusedOutputs(runner, outputs)
    x = load_data("digits:test").arrays()[0][:23]
    for batch in (x[:5], x[5:10], x[10:15], x[15:18], x[18:23]):
        got = [array.copy() for array in read(batch)]
        for actual, expected in zip(got, runner.run(batch, outputs), strict=True):
            np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("enough", [True, False], ids=["rest-pays-for-a-session", "rest-too-short"])
def test_after_the_cka_samples_only_spatial_means_are_computed(monkeypatch, enough):
    """avg, var and ens need only spatial means: the CKA samples (10 of each of 3 categories) are read whole, every
    other sample, when they make enough batches, through a session whose graph outputs the means and not the whole
    activations (onnxruntime computes every graph output, asked for or not), their means gathered into one block of
    many batches before the metrics add them; else through the first session, a batch at a time.
    Oracle for the values: the same profile with every sample read whole."""
    runs = []
    run, reused = Runner.run, ReusedOutputs.__call__
    monkeypatch.setattr(Runner, "run", lambda self, x, outputs=None: runs.append(
        (outputs, len(x), {out.name for out in self.model.graph.output})) or run(self, x, outputs))
    monkeypatch.setattr(ReusedOutputs, "__call__", lambda self, x: runs.append(
        (self.outputs, len(x), {out.name for out in self.runner.model.graph.output})) or reused(self, x))
    model = load_model(CNN)
    layers = find_neuron_layers(model).hidden
    data = load_data("digits:test:0-2")
    rest_batches = math.ceil((len(data) - 30) / 7)
    monkeypatch.setattr(profiler, "MEANS_SESSION_BATCHES", rest_batches if enough else rest_batches + 1)
    profile = profile_model(CNN, data, ["avg", "var", "ens"], max_per_class=10, batch_size=7, progress=False)
    whole, means = [layer.output for layer in layers], with_spatial_means(model, layers)[1]
    rest = [means if enough else whole] * rest_batches
    assert [(outputs, n) for outputs, n, _ in runs[:2]] == [(whole, 2), (whole, 3)]  # the batch-axis probes
    del runs[:2]
    assert [outputs for outputs, _, _ in runs] == [whole] * 6 + rest  # the CKA samples in batches of 7 and 3
    assert sum(n for _, n, _ in runs[:6]) == 30 and sum(n for _, n, _ in runs[6:]) == len(data) - 30
    assert runs[-1][2] == (set(means) if enough else set(whole)) | {out.name for out in model.graph.output}
    monkeypatch.setattr(profiler, "MEANS_SESSION_BATCHES", 10**9)
    read_whole = profile_model(CNN, data, ["avg", "var", "ens"], max_per_class=10, batch_size=7, progress=False)
    for metric in ("avg", "var", "ens"):
        for layer in profile.layers:
            assert_close(profile.contributions[metric][layer], read_whole.contributions[metric][layer], rtol=1e-5)


def test_cli_writes_a_profile_that_loads_back_with_the_model_hash(tmp_path):
    out = tmp_path / "profile.npz"
    result = CliRunner().invoke(profile_command, [str(MLP), "--data", "digits:test:0-2", "--metric", "ens",
                                                  "--metric", "taylor", "--max-per-class", "8", "-o", str(out),
                                                  "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metrics"] == ["ens", "taylor"] and summary["categories"] == [0, 1, 2]
    assert [layer["size"] for layer in summary["layers"]] == [512, 256]
    loaded = Profile.load(out)
    assert loaded.model_sha256 == sha256_of(MLP) == summary["model_sha256"]
    direct = profile_model(MLP, load_data("digits:test:0-2"), ["ens", "taylor"], max_per_class=8, progress=False)
    for layer in direct.layers:
        for metric in ("ens", "taylor"):
            np.testing.assert_array_equal(loaded.contributions[metric][layer], direct.contributions[metric][layer])
            assert loaded.contribution(metric, layer, 1).shape == (direct.layer_sizes[layer],)
        for centered in (True, False):
            np.testing.assert_array_equal(loaded.similarity_matrix(layer, 2, centered),
                                          direct.similarity_matrix(layer, 2, centered))
    assert loaded.samples == direct.samples and loaded.max_per_class == 8


def test_a_profile_of_an_older_format_asks_to_profile_again(tmp_path):
    """Format 2 (no spatial-mean CKA statistics) is not read as format 3: one line naming the file and what to do."""
    path = tmp_path / "profile.npz"
    profile_model(MLP, load_data("digits:test:0-1", max_per_class=5), ["avg"], max_per_class=3,
                  progress=False).save(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "format": "onnxslice.profile/2"}))
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=r"profile\.npz: profile format onnxslice\.profile/2 .* run onnxslice "
                                         r"profile again"):
        Profile.load(path)


def test_cli_lists_layers_with_sizes_roles_and_skipped_nodes():
    result = CliRunner().invoke(profile_command, [str(CNN), "--list-layers", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert [(layer["size"], layer["role"]) for layer in listing["layers"]] == [
        (16, "hidden"), (16, "hidden"), (16, "hidden"), (32, "hidden"), (64, "hidden"), (10, "output")]
    assert listing["skipped"] == []
    table = CliRunner().invoke(profile_command, [str(CNN), "--list-layers"]).stdout
    assert "/classifier/classifier.3/Gemm" in table and "output" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "digits:test"], "needs --data DATA and -o"),
        (["--data", "digits:test", "-o", "{model}"], "would overwrite the input"),
        (["--data", "digitz", "-o", "{out}"], "unknown data set"),
        (["--data", "{npz}", "-o", "{out}"], r"sample shape \[3, 4, 4\] does not match the model input \[64\]"),
        (["--data", "digits:test", "-o", "{tmp}/no/such/folder/p.npz"], "does not exist"),
        (["--data", "digits:test", "-o", "{out}", "--metric", "nope"], "Invalid value for '--metric'"),
        (["--data", "digits:test", "-o", "{out}", "--max-per-class", "0"], "Invalid value for '--max-per-class'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    model = tmp_path / "model.onnx"
    model.write_bytes(MLP.read_bytes())
    npz = random_npz(tmp_path / "wrong.npz", (3, 4, 4), classes=2, per_class=2)
    fill = {"model": str(model), "out": str(tmp_path / "p.npz"), "npz": str(npz), "tmp": str(tmp_path)}
    result = CliRunner().invoke(profile_command, [str(model), *[a.format(**fill) for a in args]])
    assert result.exit_code == 2
    assert re.search(message, result.output)
    if "Invalid value" not in message:
        assert result.output.startswith("onnxslice: error:") and result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "wrong.npz"]
    assert model.read_bytes() == MLP.read_bytes()


def test_missing_model_and_model_without_hidden_layers_are_input_errors(tmp_path):
    data = load_data("digits:test:0-1", max_per_class=2)
    with pytest.raises(InputError, match="no such model file"):
        profile_model(tmp_path / "missing.onnx", data)
    linear = export_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), (1, 8, 8),
                         tmp_path / "linear.onnx")
    with pytest.raises(InputError, match="no hidden neuron layers"):
        profile_model(linear, data)
