"""`onnxslice prune` and :func:`onnxslice.pipeline.prune`: profile → slice to a budget → restructure → fine-tune.

Oracles: MACs and parameters counted from the written file against the original's; the written model's
accuracy computed here with onnxruntime on digits:test; the exit-code rule checked against the figures the
report gives (accuracy drop, latency ratio); file hashes for outputs that must not overwrite inputs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice.files import sha256_of
from onnxslice.graph import load_model
from onnxslice.maintain.finetune import FinetuneOptions
from onnxslice.measure.stats import count_macs, count_params
from onnxslice.pipeline import MAX_ACCURACY_DROP, PruneResult, prune
from onnxslice.runtime import input_name, make_session
from onnxslice_cli.main import cli
from tests.helpers import MLP

FAST = ["--max-per-class", "20"]


def run(*args: str):
    return CliRunner().invoke(cli, ["prune", str(MLP), *args])


def ort_accuracy(model: onnx.ModelProto, data) -> float:
    x, y = data.arrays()
    scores = make_session(model, "cpu").run(None, {input_name(model): x.reshape(len(x), -1)})[0]
    return float((scores.argmax(axis=1) == y).mean())


def test_prune_reaches_the_mac_budget_and_reports_before_and_after(tmp_path) -> None:
    """--target-macs 0.5 on the bundled MLP: exit 0 (not slower, not 2 points less accurate), MACs of the written
    file within ±2% of half the original's, the design's JSON fields, and accuracy_after equal to the written
    model's own onnxruntime accuracy on --eval-data."""
    out = tmp_path / "pruned.onnx"
    result = run("--data", "digits:train", "--eval-data", "digits:test", "--target-macs", "0.5", "--epochs", "2",
                 "--latency-seconds", "0.5", *FAST, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("accuracy_before", "accuracy_after", "params_before", "params_after", "macs_before", "macs_after",
                "latency_ms_before", "latency_ms_after", "latency_ratio", "problems", "best_epoch"):
        assert key in report
    written, original = onnx.load(str(out)), load_model(MLP)
    assert report["macs_before"] == count_macs(original) and report["macs_after"] == count_macs(written)
    assert report["params_after"] == count_params(written) < report["params_before"]
    assert count_macs(written) / count_macs(original) == pytest.approx(0.5, abs=0.02)
    test = load_data("digits:test")
    assert report["accuracy_after"] == pytest.approx(ort_accuracy(written, test))
    assert report["accuracy_before"] == pytest.approx(ort_accuracy(original, test))
    assert report["accuracy_after"] >= report["accuracy_before"] - MAX_ACCURACY_DROP
    assert report["latency_ratio"] <= 1.05 and report["problems"] == [] and report["acceptable"] is True
    table = run("--data", "digits:train", "--target-macs", "0.5", "--epochs", "0", "--latency-seconds", "0", *FAST,
                "--allow-worse", "-o", str(tmp_path / "p2.onnx"))  # the table's form is checked, not the accuracy rule
    assert table.exit_code == 0, table.output
    assert "MACs / sample" in table.stdout and "accuracy" in table.stdout and "latency not measured" in table.stdout


def test_a_much_worse_model_is_written_but_exits_3(tmp_path) -> None:
    """--target-macs 0.1 with no fine-tuning loses far more than 2 points: exit 3 with one line naming the drop,
    and the model is still written (documented); --allow-worse turns it into a warning and exit 0."""
    out = tmp_path / "pruned.onnx"
    args = ["--data", "digits:train", "--target-macs", "0.1", "--epochs", "0", "--latency-seconds", "0", *FAST,
            "-o", str(out)]
    worse = run(*args, "--json")
    assert worse.exit_code == 3
    lines = worse.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxslice: error:") and "less accurate" in lines[0]
    report = json.loads(worse.stdout)
    assert report["accuracy_before"] - report["accuracy_after"] > MAX_ACCURACY_DROP
    assert report["acceptable"] is False and out.exists()
    out.unlink()
    allowed = run(*args, "--allow-worse")
    assert allowed.exit_code == 0, allowed.output
    assert "warning" in allowed.stderr and "less accurate" in allowed.stderr and out.exists()


def test_problems_name_a_slower_model() -> None:
    """The rule itself: > 5% slower or > 2 points less accurate is a problem; within both, none."""
    def result(latency_after: float, accuracy_after: float) -> PruneResult:
        return PruneResult(None, None, None, None, {"params": 10, "macs": 10, "accuracy": 0.9, "latency_ms": 1.0},
                           {"params": 5, "macs": 5, "accuracy": accuracy_after, "latency_ms": latency_after},
                           accuracy_after, "digits:test", 32)

    assert result(1.04, 0.885).problems() == []
    slower = result(1.2, 0.9).problems()
    assert len(slower) == 1 and "20.0% slower" in slower[0]
    assert len(result(1.2, 0.85).problems()) == 2
    assert result(None, 0.9).problems() == [] and result(None, 0.9).latency_ratio is None


def test_library_call_with_a_parameter_budget() -> None:
    """prune() on a loaded model (no file path): the parameter budget is reached within ±2%, the returned model is
    the restructured one (no fine-tuning asked), and it runs."""
    model = load_model(MLP)
    result = prune(model, load_data("digits:train").cap_per_class(30), target_params=0.5,
                   options=FinetuneOptions(epochs=0), latency_seconds=0, max_per_class=20)
    assert count_params(result.model) / count_params(model) == pytest.approx(0.5, abs=0.02)
    assert result.finetuned.best_epoch == 0 and result.after["accuracy"] == result.accuracy_pruned
    x = np.zeros((3, 64), np.float32)
    assert make_session(result.model, "cpu").run(None, {input_name(result.model): x})[0].shape == (3, 10)


@pytest.mark.parametrize("target", ["data", "model"])
def test_prune_never_overwrites_its_inputs(tmp_path, target: str) -> None:
    """-o naming the --data file or the model: exit 2, one line, before any work, the file unchanged."""
    data = tmp_path / "data.npz"
    x, y = load_data("digits:train").cap_per_class(5).arrays()
    np.savez(data, x=x, y=y)
    victim = data if target == "data" else MLP
    digest = sha256_of(victim)
    result = run("--data", str(data), "--target-macs", "0.5", "-o", str(victim))
    assert result.exit_code == 2
    assert result.stderr.startswith("onnxslice: error:") and len(result.stderr.strip().splitlines()) == 1
    assert sha256_of(victim) == digest


def test_a_budget_is_required() -> None:
    result = run("--data", "digits:train", "-o", "x.onnx")
    assert result.exit_code == 2 and "--target-params" in result.stderr
