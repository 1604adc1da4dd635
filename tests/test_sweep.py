"""`onnxslice sweep`: one profile, many slices, points / plot / CSV."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from onnxslice.compression.sweep import parse_values
from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.graph import load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.slicing.artifact import Slice
from onnxslice.surgery.mask import mask_model
from onnxslice_cli.main import cli
from tests.helpers import MLP


def test_ranges_include_their_end():
    """Oracle: by hand — 0.90:0.99:0.01 is the paper's ten thresholds; a list is taken as given."""
    assert parse_values("0.90:0.99:0.01", "--thetas") == [0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]
    assert parse_values("0.5,1", "--ratios") == [0.5, 1.0]
    with pytest.raises(InputError, match="--thetas"):
        parse_values("0.99:0.9:0.01", "--thetas")


def test_sweep_points_match_separate_slice_and_mask_runs(tmp_path):
    """Oracle: the separate commands — the semantic and shared points' accuracies are those of `onnxslice slice`
    at the same Θ, masked and evaluated; keeping every neuron (ratio 1) removes nothing and keeps the original accuracy;
    DeepArc removes nothing from the MLP. The PNG and the CSV are written with one row per point."""
    runner = CliRunner()
    plot, table = tmp_path / "sweep.png", tmp_path / "sweep.csv"
    run = runner.invoke(cli, ["sweep", str(MLP), "--data", "digits:train", "--eval-data", "digits:test", "--metric",
                              "avg", "--strategies", "semantic,shared,global,deeparc", "--thetas", "0.95", "--ratios",
                              "0.5,1.0", "--plot", str(plot), "--csv", str(table), "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    points = {(p["strategy"], p.get("theta") or p.get("ratio") or p.get("threshold")): p for p in result["points"]}
    assert set(points) == {("semantic", 0.95), ("shared", 0.95), ("global", 0.5), ("global", 1.0), ("deeparc", 0.99)}
    assert points[("global", 1.0)]["compression"] == 0.0
    assert points[("global", 1.0)]["accuracy"] == result["accuracy_original"]
    assert points[("deeparc", 0.99)]["compression"] == 0.0
    assert 0.0 < points[("semantic", 0.95)]["compression"] < 1.0

    for strategy in ("semantic", "shared"):
        piece = tmp_path / f"{strategy}.json"
        made = runner.invoke(cli, ["slice", str(MLP), "--data", "digits:train", "--metric", "avg", "--strategy",
                                   strategy, "--theta", "0.95", "-o", str(piece)])
        assert made.exit_code == 0, made.output
        masked = mask_model(load_model(MLP), Slice.load(piece).kept())
        expected = accuracy(masked, load_data("digits:test"), "cpu")["accuracy"]
        assert points[(strategy, 0.95)]["accuracy"] == expected

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table.read_text().splitlines()) == 1 + len(result["points"])


def test_sweep_rejects_an_unknown_strategy_in_one_line():
    """Oracle: the CLI contract — exit 2 and one line naming the option."""
    run = CliRunner().invoke(cli, ["sweep", str(MLP), "--data", "digits:test", "--strategies", "semantic,magic"])
    assert run.exit_code == 2
    assert run.output.strip().splitlines() == [run.output.strip()] and "--strategies" in run.output


def test_sweep_takes_size_budgets(tmp_path):
    """`sweep --targets 0.5 --target-kind params`: one point per strategy at the budget, within ±0.02 of it,
    whose accuracy is that of `onnxslice slice --target-params 0.5` masked and evaluated (oracle: the separate
    commands)."""
    runner = CliRunner()
    run = runner.invoke(cli, ["sweep", str(MLP), "--data", "digits:train", "--eval-data", "digits:test", "--metric",
                              "avg", "--strategies", "global", "--ratios", "1.0", "--targets", "0.5", "--target-kind",
                              "params", "--json"])
    assert run.exit_code == 0, run.output
    point = next(p for p in json.loads(run.output)["points"] if p["target"] == 0.5)
    assert abs(point["params_fraction"] - 0.5) <= 0.02 and point["compression"] == 1.0 - point["params_fraction"]
    piece = tmp_path / "slice.json"
    made = runner.invoke(cli, ["slice", str(MLP), "--data", "digits:train", "--metric", "avg", "--strategy", "global",
                               "--target-params", "0.5", "-o", str(piece)])
    assert made.exit_code == 0, made.output
    masked = mask_model(load_model(MLP), Slice.load(piece).kept())
    assert point["accuracy"] == accuracy(masked, load_data("digits:test"), "cpu")["accuracy"]
