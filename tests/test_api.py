"""The Python API: the README's example runs as written, the names resolve, and importing stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import onnxslice as osl
from onnxslice.measure.stats import count_params

ROOT = Path(__file__).resolve().parents[1]


def readme_python_example() -> str:
    section = (ROOT / "README.md").read_text().split("### Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_writes_a_smaller_model(tmp_path, monkeypatch, capsys):
    """Oracle: the example's own assertion (prune's result is acceptable: not slower, within 2 points), and the
    model it saves is the restructured one: fewer parameters than the original, still at least 90% on
    digits:test (the original's is 97.6%)."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    saved = onnx.load(str(tmp_path / "mlp_pruned.onnx"))
    original = onnx.load(str(ROOT / "models" / "mlp_digits.onnx"))
    assert count_params(saved) < count_params(original)
    accuracy = float(re.search(r"accuracy \S+ -> (\S+),", capsys.readouterr().out).group(1))
    assert accuracy >= 0.9


def test_every_public_name_resolves_even_where_a_module_has_the_same_name():
    """Oracle: the names listed in ``__all__``; ``profile`` and ``compress`` are functions although the
    library has the packages ``profiling`` and ``compression`` (they are imported here first)."""
    import onnxslice.compression.loop  # noqa: F401
    import onnxslice.profiling.profiler  # noqa: F401

    for name in osl.__all__:
        assert getattr(osl, name) is not None
    assert callable(osl.profile) and callable(osl.compress) and callable(osl.evaluate)
    with pytest.raises(AttributeError):
        _ = osl.no_such_function


def test_importing_onnxslice_loads_no_heavy_library():
    """Oracle: ``sys.modules`` of a fresh interpreter after ``import onnxslice`` — none of numpy, onnx,
    onnxruntime, torch (the command line's start-up depends on it)."""
    code = ("import sys, onnxslice; "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_api_and_the_commands_give_the_same_results(tmp_path):
    """Oracle: the commands on the same inputs — ``osl.mask`` writes the model ``onnxslice mask`` writes, and
    ``osl.readapt`` / ``osl.incremental`` / ``osl.compress`` report the figures their commands report (seeded)."""
    import json

    from click.testing import CliRunner

    from onnxslice_cli.main import cli
    from tests.helpers import MLP

    def command(*args: str) -> dict:
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    model = osl.load(MLP)
    profile = osl.profile(model, osl.load_data("digits:train", max_per_class=20), metrics=["avg"])
    piece = osl.select(model, profile, "avg", "semantic", theta=0.9)
    piece.save(tmp_path / "slice.json")
    command("mask", str(MLP), "--slice", str(tmp_path / "slice.json"), "-o", str(tmp_path / "masked.onnx"))
    masked = onnx.load(str(tmp_path / "masked.onnx"))
    assert osl.mask(model, piece).proto.SerializeToString() == masked.SerializeToString()

    small = ["--max-per-class", "10", "--epochs", "1"]
    cli_report = command("readapt", str(MLP), "--slice", str(tmp_path / "slice.json"), "--data", "digits:train",
                         *small, "-o", str(tmp_path / "adapted.onnx"))
    _, report = osl.readapt(model, piece, osl.load_data("digits:train", max_per_class=10), epochs=1)
    for key in ("tpr", "ra", "raa", "clean_before", "clean_after"):
        assert report[key] == pytest.approx(cli_report[key]), key

    old = osl.select(model, osl.profile(model, osl.load_data("digits:train:0-4", max_per_class=20), metrics=["avg"]),
                     "avg", "semantic", theta=0.9)
    old.save(tmp_path / "old.json")
    cli_report = command("incremental", str(MLP), "--slice", str(tmp_path / "old.json"), "--data",
                         "digits:train:5-9", *small, "-o", str(tmp_path / "new.onnx"))
    _, _, report = osl.incremental(model, old, osl.load_data("digits:train:5-9", max_per_class=10), epochs=1)
    assert report["task_b"] == pytest.approx(cli_report["task_b"])

    cli_report = command("compress", str(MLP), "--data", "digits:test", "--method", "lamp", "-o",
                         str(tmp_path / "compressed.onnx"))
    assert osl.compress(model, "digits:test", "lamp").to_json()["cr"] == pytest.approx(cli_report["cr"])
