"""Issue 17, "feel": progress bars on a terminal, the inspect plot's title and labels, --batch-size on slice and
sweep, image folders read with the model's channel count."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from onnxslice.compression.loop import compress
from onnxslice.compression.methods import make_method
from onnxslice.compression.sweep import sweep
from onnxslice.data import load_data
from onnxslice.graph import load_model
from onnxslice.maintain.roundtrip import FrozenGuard, Trainable, train_masked
from onnxslice.maintain.training import TrainingOptions, neuron_vectors
from onnxslice.profiling import profile_model
from onnxslice.progress import progress_bar
from onnxslice.slicing.plot import distinct_labels, layers_figure, plot_title
from onnxslice_cli.common import input_channels, open_data
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """Make stderr a terminal for the rest of the test (set in the test itself: pytest's capture swaps sys.stderr
    between a fixture's setup and the test)."""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def run_cli(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_progress_bar_draws_only_on_a_terminal(monkeypatch):
    """Oracle: tqdm's own output — a bar with its description on a terminal; nothing on a pipe, nor when
    progress is off."""
    for stream, enabled, drawn in [(Terminal(), True, True), (io.StringIO(), True, False), (Terminal(), False, False)]:
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(3, "work", "step", enabled) as bar:
            for _ in range(3):
                bar.update(1)
        assert ("work" in stream.getvalue() and "3/3" in stream.getvalue()) is drawn, stream.getvalue()


def test_compress_draws_one_step_per_sparsity_iteration(monkeypatch):
    """Oracle: the result's history — the bar ends at the number of iterations evaluated."""
    terminal = on_terminal(monkeypatch)
    data = load_data("digits:test", max_per_class=10)
    result = compress(load_model(MLP), data, make_method("global"), step=0.3, max_drop=1.0, device="cpu",
                      max_iterations=3, progress=True)
    shown = terminal.getvalue()
    assert "compress" in shown and f"{len(result.history)}/3" in shown


def test_sweep_draws_one_step_per_point(monkeypatch):
    """Oracle: the points returned — the bar counts every one of them."""
    terminal = on_terminal(monkeypatch)
    data = load_data("digits:test", max_per_class=10)
    profile = profile_model(MLP, data, ["avg"], max_per_class=10, device="cpu", progress=False)
    points = sweep(load_model(MLP), profile, data, ["semantic", "global"], [0.9, 0.95], [0.5], device="cpu",
                   batch_size=7, progress=True)
    assert len(points) == 3
    assert "sweep" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_masked_training_draws_one_step_per_epoch(monkeypatch):
    """Oracle: the epochs asked for — readapt and incremental train through train_masked."""
    terminal = on_terminal(monkeypatch)
    trainable = Trainable.from_onnx(load_model(MLP))
    chosen = {layer.name: [0, 1] for layer in trainable.scan.layers}
    guard = FrozenGuard(trainable.module, trainable.masks(neuron_vectors(trainable.scan, chosen, default=False)))
    x = torch.from_numpy(np.random.default_rng(0).random((32, 64)).astype(np.float32))
    y = torch.from_numpy(np.arange(32) % 10)
    train_masked(trainable, guard, [x], y, TrainingOptions(epochs=2, batch_size=16, progress=True))
    assert "train" in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_json_output_stays_parseable_without_a_terminal(tmp_path):
    """Oracle: json.loads of stdout — off a terminal no bar is drawn, and a bar never goes to stdout."""
    piece = tmp_path / "s.json"
    made = run_cli("slice", MLP, "--data", "digits:test", "--metric", "avg", "-o", piece, "--json")
    assert made.exit_code == 0, made.output
    run = run_cli("compress", MLP, "--slice", piece, "--data", "digits:test", "--method", "global", "--step", "0.3",
                  "--max-drop", "1", "--max-iterations", "2", "-o", tmp_path / "c.onnx", "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["ni"] >= 1
    assert "compress" not in run.stderr


def test_inspect_plot_title_names_model_strategy_and_theta(tmp_path):
    """Oracle: the slice's own settings — the title carries the model's file name, the strategy and Θ (or the
    ratio, and a size budget); the CLI writes a PNG."""
    piece = tmp_path / "s.json"
    assert run_cli("slice", CNN, "--data", "digits:test", "--metric", "avg", "--theta", "0.93", "-o", piece,
                   "--json").exit_code == 0
    plot = tmp_path / "layers.png"
    shown = run_cli("inspect", piece, "--model", CNN, "--plot", plot, "--json")
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    title = plot_title(result, CNN.name)
    assert title.startswith("cnn_digits.onnx: semantic, avg, Θ = 0.93")
    figure = layers_figure(result["layers"], title)
    axes = figure.axes[0]
    assert axes.get_title() == title
    assert [t.get_text() for t in axes.get_yticklabels()] == [row["display"] for row in result["layers"]]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ratio = {"strategy": "global", "metric": "taylor", "theta": None, "ratio": 0.5,
             "target": {"metric": "macs", "fraction": 0.4}, "neuron_fraction": 0.5}
    assert plot_title(ratio, "m.onnx") == "m.onnx: global, taylor, ratio = 0.5, target macs 0.4 (neurons kept 50.0%)"


def test_layer_labels_are_shortened_and_told_apart():
    """Oracle: by construction — every label fits or keeps its distinguishing end, and no two are alike."""
    names = ["encoder.layer.0.attention.output.dense", "encoder.layer.1.attention.output.dense",
             "short", "a" * 60, "short"]
    labels = distinct_labels(names, width=20)
    assert len(set(labels)) == len(labels)
    assert labels[2] == "short [2]" and labels[4] == "short [4]"
    assert labels[0].endswith("0.attention.output.dense") and labels[0].startswith("…")
    assert len(labels[3]) == 20


def test_batch_size_is_validated_and_used():
    """Oracle: the CLI contract — --batch-size 0 is a usage error in one line (exit 2); 7 profiles and slices."""
    bad = run_cli("slice", MLP, "--data", "digits:test", "--batch-size", "0", "-o", "unused.json")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--batch-size" in bad.stderr
    bad = run_cli("sweep", MLP, "--data", "digits:test", "--batch-size", "0")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--batch-size" in bad.stderr


def test_slice_and_sweep_run_with_a_batch_size(tmp_path):
    """Oracle: exit 0 and the same slice as the default batch size (avg contributions are batch-independent up
    to rounding; the kept channels agree)."""
    ones, sevens = tmp_path / "a.json", tmp_path / "b.json"
    for out, extra in ((ones, []), (sevens, ["--batch-size", "7"])):
        run = run_cli("slice", MLP, "--data", "digits:test", "--metric", "avg", "--strategy", "global", "-o", out,
                      *extra)
        assert run.exit_code == 0, run.output
    assert json.loads(ones.read_text())["layers"] == json.loads(sevens.read_text())["layers"]
    run = run_cli("sweep", MLP, "--data", "digits:test", "--metric", "avg", "--strategies", "global", "--ratios",
                  "0.5", "--batch-size", "7", "--json")
    assert run.exit_code == 0, run.output
    assert len(json.loads(run.stdout)["points"]) == 1


def _image_folder(root: Path, mode: str, count: int = 30) -> Path:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for i in range(count):
        folder = root / str(bunch.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        grey = (bunch.images[i] / 16 * 255).astype(np.uint8)
        image = Image.fromarray(np.stack([grey] * 3, -1), "RGB") if mode == "RGB" else Image.fromarray(grey, "L")
        image.save(folder / f"{i}.png")
    return root


def test_rgb_image_folder_is_read_as_grayscale_for_a_one_channel_model(tmp_path):
    """Oracle: the model's input (1×8×8) — RGB PNGs of the digits evaluate (exit 0) on models/cnn_digits.onnx,
    as grey values equal to the built-in digits' (the same pixels, scaled to [0, 1])."""
    folder = _image_folder(tmp_path / "rgb", "RGB")
    run = run_cli("evaluate", CNN, "--data", folder, "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["samples"] == 30
    data = open_data(str(folder), {}, model=load_model(CNN))
    assert data.sample_shape == (1, 8, 8)


def test_grey_images_are_read_as_rgb_for_a_three_channel_model(tmp_path):
    """Oracle: the model's input (3 channels) — L images come back with 3 equal channels; axis 3 with
    --channels-last."""
    folder = _image_folder(tmp_path / "grey", "L", count=10)
    for shape, last in (([None, 3, 8, 8], False), ([None, 8, 8, 3], True)):
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        model = helper.make_model(graph)
        assert input_channels(model, last) == 3
        data = open_data(str(folder), {"channels_last": last}, model=model)
        x = data.samples(np.arange(2))
        assert data.sample_shape == ((8, 8, 3) if last else (3, 8, 8))
        channels = np.moveaxis(x, -1 if last else 1, 0)
        np.testing.assert_array_equal(channels[0], channels[2])
    assert input_channels(load_model(MLP)) is None
    assert isinstance(load_model(CNN), onnx.ModelProto) and input_channels(load_model(CNN)) == 1
