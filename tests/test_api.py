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
