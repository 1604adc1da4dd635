"""The command line: help and version, `evaluate` on the example models, and bad input.

Oracles: the example models' accuracy measured independently with onnxruntime and numpy; for bad
input, exit code 2, exactly one line on stderr naming the culprit, no traceback, no file written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxslice.data import load_data
from onnxslice_cli.main import COMMANDS, cli
from tests.helpers import CNN, MLP

DESIGN_COMMANDS = {"profile", "slice", "restructure", "mask", "evaluate", "readapt", "incremental", "compress",
                   "sweep", "inspect", "finetune", "prune"}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_help_lists_every_design_command_and_each_has_help():
    result = run("--help")
    assert result.exit_code == 0
    for name in DESIGN_COMMANDS:
        assert f"  {name} " in result.output
    assert set(COMMANDS) == DESIGN_COMMANDS
    for name in DESIGN_COMMANDS:
        assert run(name, "--help").exit_code == 0


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "onnxslice, version" in result.output


@pytest.mark.parametrize(("model", "input_shape"), [(MLP, (-1, 64)), (CNN, (-1, 1, 8, 8))])
def test_evaluate_reports_accuracy_above_90_percent(model, input_shape):
    result = run("evaluate", str(model), "--data", "digits:test", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # oracle: plain onnxruntime + numpy on the same split
    x, y = load_data("digits:test").arrays()
    session = ort.InferenceSession(str(model))
    logits = session.run(None, {"input": x.reshape(input_shape)})[0]
    expected = float((logits.argmax(1) == y).mean())
    assert report["accuracy"] == pytest.approx(expected) and report["accuracy"] > 0.9
    assert set(report["per_class"]) == {str(c) for c in range(10)}
    assert report["params"] > 0 and report["macs"] > 0 and report["latency_ms"] > 0


def test_evaluate_console_script_runs_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "onnxslice_cli", "evaluate", str(MLP), "--data", "digits:test:0-1"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "accuracy" in out.stdout


def _bad_inputs(tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(MLP.read_bytes()[:5000])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    wrong_shape = tmp_path / "wrong_shape.npz"
    np.savez(wrong_shape, x=np.zeros((4, 3, 5), np.float32), y=np.zeros(4, np.int64))
    float_labels = tmp_path / "float_labels.npz"
    np.savez(float_labels, x=np.zeros((4, 64), np.float32), y=np.array([0.1, 1, 2, 3]))
    big_labels = tmp_path / "big_labels.npz"
    np.savez(big_labels, x=np.zeros((4, 64), np.float32), y=np.array([0, 1, 2, 12]))
    empty = tmp_path / "images"
    (empty / "cat").mkdir(parents=True)
    return [
        ([str(tmp_path / "missing.onnx"), "--data", "digits"], "missing.onnx: no such model file"),
        ([str(truncated), "--data", "digits"], "truncated.onnx: "),
        ([str(text), "--data", "digits"], "notes.onnx: "),
        ([str(MLP), "--data", str(wrong_shape)], "wrong_shape.npz: sample shape [3, 5] does not match"),
        ([str(MLP), "--data", str(float_labels)], "float_labels.npz: labels 'y' must be integers"),
        ([str(MLP), "--data", str(big_labels)], "big_labels.npz: label 12 cannot be output by the model"),
        ([str(MLP), "--data", str(empty)], "cat: class folder has no images"),
        ([str(MLP), "--data", "digits:valid"], "'digits:valid': unknown data set"),
        ([str(MLP), "--data", "digits:test:7-12"], "class filter 7-12 asks for classes not in the data (it has 0-9)"),
    ]


def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path):
    for args, message in _bad_inputs(tmp_path):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        result = run("evaluate", *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.output
        assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_required_option_is_a_usage_error():
    result = run("evaluate", str(MLP))
    assert result.exit_code == 2 and "--data" in result.stderr


def test_evaluate_with_baseline_reports_both_models():
    result = run("evaluate", str(CNN), "--baseline", str(MLP), "--data", "digits:test", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["baseline"]["model"] == str(MLP) and report["model"] == str(CNN)
    assert report["baseline"]["params"] == 167_178  # 64*512+512 + 512*256+256 + 256*10+10
    table = run("evaluate", str(CNN), "--baseline", str(MLP), "--data", "digits:test").stdout
    assert "before" in table and "after/before" in table


def test_help_and_version_import_no_heavy_library():
    """Oracle: ``sys.modules`` of a fresh interpreter after ``onnxslice --help`` and ``--version`` — none of numpy,
    onnx, onnxruntime, torch (commands are listed from the registry in cli/main.py, imported only to run)."""
    import subprocess
    import sys

    code = ("import sys\nfrom onnxslice_cli.main import cli\n"
            "for args in (['--help'], ['--version']):\n"
            "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
            "print('loaded:', sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("loaded: []")


def test_pyproject_lists_every_package():
    """A wheel holds only the packages pyproject.toml lists (setuptools ``packages``): the oracle is the tree,
    every folder with an ``__init__.py`` under onnxslice/ (and cli/, installed as onnxslice_cli)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {".".join(init.parent.relative_to(root).parts) for init in (root / "onnxslice").rglob("__init__.py")}
    assert listed == in_tree | {"onnxslice_cli"}


def test_accuracy_with_known_classes_takes_the_prediction_among_them_only():
    """Oracle: by hand. An identity model on three classes; sample scores [0.1, 0.5, 0.9] with label 1: wrong over
    every class (argmax 2), right among classes {0, 1}; [0.9, 0.2, 0.1] with label 0: right either way."""
    from onnx import TensorProto, helper

    from onnxslice.data import DataSource
    from onnxslice.measure.evaluate import accuracy

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = DataSource.from_arrays("hand", np.array([[0.1, 0.5, 0.9], [0.9, 0.2, 0.1]], np.float32), np.array([1, 0]))
    assert accuracy(model, data, "cpu")["accuracy"] == 0.5
    assert accuracy(model, data, "cpu", classes=[0, 1])["accuracy"] == 1.0
