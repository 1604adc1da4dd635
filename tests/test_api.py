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


#: Library modules a command may import anything from: the API, its errors, opening DATA arguments, and how files
#: are written and guarded (atomic writes, external data, outputs that must not overwrite inputs).
CLI_MODULES = {"onnxslice", "onnxslice.api", "onnxslice.errors", "onnxslice.data", "onnxslice.files",
               "onnxslice.large"}


def allowed_from_anywhere(name: str) -> bool:
    """Option defaults and registries (UPPER_CASE), settings classes whose defaults an option shows (``*Options``)
    and option-value parsers (``parse_*``)."""
    return name.isupper() or name.endswith("Options") or name.startswith("parse_")


def test_the_commands_use_the_library_only_through_the_api():
    """Oracle: the rule the commands are written to — parse, one call into ``onnxslice.api``, print. Every import
    from ``onnxslice`` in a module under cli/ (module level or inside a function) is from :data:`CLI_MODULES`,
    or names only option defaults, registries, settings classes or option parsers; and no command calls
    ``onnx.save`` (models are written by ``Model.save``)."""
    import ast

    broken = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                broken += [f"{path.name}: import {a.name}" for a in node.names
                           if a.name.startswith("onnxslice.") and a.name not in CLI_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "onnxslice":
                if node.module not in CLI_MODULES:
                    broken += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                               if not allowed_from_anywhere(a.name)]
                elif node.module == "onnxslice":
                    broken += [f"{path.name}: from onnxslice import {a.name}" for a in node.names
                               if a.name not in ("api", "__version__")]
            elif isinstance(node, ast.Attribute) and node.attr == "save" and getattr(node.value, "id", "") == "onnx":
                broken.append(f"{path.name}: onnx.save")
    assert broken == []


def test_the_slicing_commands_write_what_the_api_returns(tmp_path):
    """Oracle: the API on the same inputs — ``onnxslice profile`` writes the contributions ``osl.profile``
    measures, ``onnxslice evaluate`` reports ``osl.evaluate``'s accuracy, ``onnxslice slice --data`` writes the
    slice ``osl.select`` makes from the same data (profiled there), ``onnxslice restructure`` the model
    ``osl.restructure(...).model`` saves (byte for byte), ``onnxslice inspect --model`` reports what
    ``osl.inspect`` does, and ``onnxslice sweep`` gives ``osl.sweep``'s points."""
    import json

    from click.testing import CliRunner

    from onnxslice_cli.main import cli
    from tests.helpers import MLP

    def command(*args: str) -> dict:
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    import numpy as np

    model = osl.load(MLP)
    data = osl.load_data("digits:train")
    command("profile", str(MLP), "--data", "digits:train", "--metric", "avg", "--max-per-class", "20", "-q", "-o",
            str(tmp_path / "profile.npz"))
    written, measured = osl.Profile.load(tmp_path / "profile.npz"), osl.profile(model, data, ["avg"], 20)
    assert written.model_sha256 == measured.model_sha256 and written.layer_sizes == measured.layer_sizes
    for layer, values in measured.contributions["avg"].items():
        assert np.array_equal(written.contributions["avg"][layer], values), layer
    assert command("evaluate", str(MLP), "--data", "digits:test")["accuracy"] == osl.evaluate(model,
                                                                                            "digits:test")["accuracy"]

    command("slice", str(MLP), "--data", "digits:train", "--metric", "avg", "--strategy", "global", "--ratio",
            "0.5", "--max-per-class", "20", "-o", str(tmp_path / "cli.json"))
    piece = osl.select(model, None, "avg", "global", data=data, ratio=0.5, max_per_class=20)
    piece.save(tmp_path / "api.json")
    assert (tmp_path / "cli.json").read_text() == (tmp_path / "api.json").read_text()

    command("restructure", str(MLP), "--slice", str(tmp_path / "cli.json"), "--latency-seconds", "0", "-o",
            str(tmp_path / "cli.onnx"))
    osl.restructure(model, piece).model.save(tmp_path / "api.onnx")
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "api.onnx").read_bytes()

    report = command("inspect", str(tmp_path / "cli.json"), "--model", str(MLP))
    assert report == {"slice": str(tmp_path / "cli.json"), **osl.inspect(piece, model)}

    report = command("sweep", str(MLP), "--data", "digits:test", "--max-per-class", "10", "--metric", "avg",
                     "--strategies", "global", "--ratios", "0.3,0.6")
    swept = osl.sweep(model, None, "digits:test", ["global"], ratios=[0.3, 0.6], metrics=["avg"], max_per_class=10)
    assert report["points"] == json.loads(json.dumps(swept.points))
    assert report["accuracy_original"] == swept.accuracy_original
