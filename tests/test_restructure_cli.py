"""`onnxslice restructure` on the command line: what it writes, reports, and refuses.

Oracles: the written model equals ``onnxslice.surgery.mask.mask_model`` of the same slice in onnxruntime;
parameter counts come from the written file's own initializers; a failed verification leaves no file.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxslice import large
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.measure.stats import count_params, latency
from onnxslice.runtime import input_name, make_session
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.surgery import restructure as surgery_restructure
from onnxslice.surgery.mask import mask_model
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP


def write_slice(model_path, path, seed=0, layers=None) -> Slice:
    scan = find_neuron_layers(load_model(model_path))
    rng = np.random.default_rng(seed)
    chosen = layers or scan.hidden
    piece = Slice(sha256_of(model_path), {
        layer.name: LayerSlice(layer.size, sorted(rng.choice(layer.size, layer.size // 2, replace=False).tolist()))
        for layer in chosen})
    piece.save(path)
    return piece


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model, "cpu").run(None, {input_name(model): x})[0]


def test_json_report_and_written_model_equal_the_mask(tmp_path):
    piece = write_slice(CNN, tmp_path / "slice.json")
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(cli, ["restructure", str(CNN), "--slice", str(tmp_path / "slice.json"),
                                      "-o", str(out), "--json", "--latency-batch", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("params_before", "params_after", "macs_before", "macs_after", "latency_ms_before",
                "latency_ms_after", "max_abs_diff", "kept_whole", "channels_removed_fraction"):
        assert key in report
    written = onnx.load(str(out))
    assert report["params_after"] == count_params(written) < report["params_before"]
    assert report["macs_after"] < report["macs_before"]
    assert 0 < report["channels_removed_fraction"] <= 0.5
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    expected = outputs(mask_model(load_model(CNN), piece.kept()), x)
    np.testing.assert_allclose(outputs(written, x), expected, atol=1e-4 * np.abs(expected).max())


def test_human_table(tmp_path):
    write_slice(MLP, tmp_path / "slice.json")
    result = CliRunner().invoke(cli, ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"),
                                      "-o", str(tmp_path / "p.onnx"), "--latency-batch", "4"])
    assert result.exit_code == 0, result.output
    assert "params" in result.output and "MACs" in result.output and "verified" in result.output


def test_verification_failure_writes_nothing_and_exits_1(tmp_path, monkeypatch):
    """A restructure that computes something else (here: a different slice) must be caught before writing."""
    write_slice(MLP, tmp_path / "slice.json")
    real = surgery_restructure.restructure
    other = {layer.name: list(range(layer.size // 2)) for layer in find_neuron_layers(load_model(MLP)).hidden}
    monkeypatch.setattr(surgery_restructure, "restructure", lambda model, kept: real(model, other))
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(cli, ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"),
                                      "-o", str(out)])
    assert result.exit_code == 1
    assert "differs from the masked one" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "slice.json"]


@pytest.mark.parametrize("problem", ["other model", "overwrite", "missing slice"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, problem):
    write_slice(CNN if problem == "other model" else MLP, tmp_path / "slice.json")
    out = tmp_path / "pruned.onnx"
    slice_arg = str(tmp_path / ("absent.json" if problem == "missing slice" else "slice.json"))
    args = ["restructure", str(MLP), "--slice", slice_arg, "-o", str(MLP if problem == "overwrite" else out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("onnxslice: error:") and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_large_models_are_written_with_external_data(tmp_path, monkeypatch):
    """Above the size limit (lowered here) the weights go to <output>.data; the file loads and runs."""
    write_slice(MLP, tmp_path / "slice.json")
    monkeypatch.setattr(large, "EXTERNAL_DATA_BYTES", 10_000)
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(cli, ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"),
                                      "-o", str(out), "--json", "--latency-batch", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["external_data"] == "pruned.onnx.data"
    data_size = (tmp_path / "pruned.onnx.data").stat().st_size
    assert data_size > out.stat().st_size
    again = CliRunner().invoke(cli, ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"),
                                     "-o", str(out), "--latency-batch", "4"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "pruned.onnx.data").stat().st_size == data_size  # replaced, not appended to
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.onnx", "pruned.onnx.data", "slice.json"]
    model = onnx.load(str(out))  # loads the external weights from beside the file
    x = np.zeros((2, 64), np.float32)
    assert outputs(model, x).shape == (2, 10)


def test_latency_seconds_0_skips_the_measurement(tmp_path):
    """--latency-seconds 0: the JSON says the latency was skipped and holds no figures; the table says so."""
    write_slice(MLP, tmp_path / "slice.json")
    args = ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"), "-o", str(tmp_path / "p.onnx"),
            "--latency-seconds", "0"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["latency_skipped"] is True
    assert report["latency_ms_before"] is None and report["latency_ms_after"] is None
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and "not measured" in table.stdout


def test_latency_is_bounded_by_default(tmp_path):
    """Without the option each model's measurement is bounded by 2 s: the JSON carries the bound and the
    measurement's own count of runs and seconds (no wall-clock assertion here)."""
    write_slice(MLP, tmp_path / "slice.json")
    result = CliRunner().invoke(cli, ["restructure", str(MLP), "--slice", str(tmp_path / "slice.json"),
                                      "-o", str(tmp_path / "p.onnx"), "--json", "--latency-batch", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["latency_skipped"] is False and report["latency_max_seconds"] == 2.0
    assert all(runs >= 1 for runs in report["latency_runs"])
    assert report["latency_ms_before"] > 0 and report["latency_ms_after"] > 0


def test_latency_stops_at_its_bound_and_measures_at_least_once():
    """Oracle: the measurement's own count and time. With far more runs asked for than fit in the bound it stops
    early (fewer runs than asked) and not before the bound has passed; with a bound shorter than one run it
    still times exactly one run."""
    model = load_model(MLP)
    bounded = latency(model, batch=4, repeats=10**6, rounds=3, device="cpu", max_seconds=0.2)
    assert 1 <= bounded.runs < 3 * 10**6
    assert bounded.seconds >= 0.2 and bounded.ms > 0
    once = latency(model, batch=4, device="cpu", max_seconds=1e-9)
    assert once.runs == 1 and once.ms > 0
    unbounded = latency(model, batch=4, repeats=5, rounds=2, device="cpu")
    assert unbounded.runs == 10


def test_latency_casts_inputs_for_float16_models(tmp_path):
    """A bounded measurement still feeds a float16 model float16 inputs (onnxruntime refuses float32 there)."""
    from tests.test_exports import _export, _network

    model = load_model(_export(_network(), tmp_path / "fp16.onnx", dynamic=True, half=True))
    assert latency(model, batch=2, repeats=2, rounds=1, device="cpu", max_seconds=1.0).ms > 0
