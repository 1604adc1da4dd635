"""Hostile input at the command line: every case is refused with exit code 2 and one line on stderr naming the file,
node or option, no traceback, every input byte-identical afterwards and no file left in the output folder.

Oracles: the exit code and stderr as the command line contract states them (README "Exit codes"); the inputs'
sha256 before and after; the listing of the work folder before and after. Nothing here depends on how a command
computes its result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxslice.data import load_data
from onnxslice.graph import load_model
from onnxslice.profiling import profile_model
from onnxslice.slicing.strategies import GlobalStrategy, select
from onnxslice_cli.main import cli
from tests.helpers import MLP


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """One set of valid inputs, made once: the example MLP, a data file, a profile and a slice of it."""
    folder = tmp_path_factory.mktemp("originals")
    shutil.copy(MLP, folder / "model.onnx")
    x, y = load_data("digits:train").arrays()
    keep = np.concatenate([np.flatnonzero(y == c)[:12] for c in range(10)])
    np.savez(folder / "data.npz", x=x[keep], y=y[keep])
    profile = profile_model(folder / "model.onnx", load_data(str(folder / "data.npz")), ["avg"], 8, "cpu",
                            progress=False)
    profile.save(folder / "profile.npz")
    select(profile, "avg", GlobalStrategy(0.5)).save(folder / "slice.json")
    images = folder / "images"
    for label in ("0", "1"):
        (images / label).mkdir(parents=True)
        for k in range(2):
            from PIL import Image
            Image.fromarray(np.full((8, 8), 40 * k + 10, np.uint8)).save(images / label / f"{k}.png")
    return folder


@pytest.fixture
def work(originals, tmp_path) -> Path:
    """A fresh copy of the valid inputs for one test."""
    shutil.copytree(originals, tmp_path, dirs_exist_ok=True)
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (hidden temporary files included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def refused(work: Path, *args: str, names: str, code: int = 2) -> str:
    """Run the command inside ``work``: exit ``code``, one stderr line containing ``names``, nothing changed."""
    before = snapshot(work)
    old = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(cli, list(args))
    finally:
        os.chdir(old)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (args, result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and names in lines[0], (args, result.stderr)
    assert "Traceback" not in result.output and len(lines[0]) <= 400
    assert snapshot(work) == before, args
    return lines[0]


# 1. No output may be a file the command reads.

@pytest.mark.parametrize("args", [
    ["profile", "model.onnx", "--data", "data.npz", "--metric", "avg", "-o", "data.npz"],
    ["profile", "model.onnx", "--data", "data.npz:0-4", "--metric", "avg", "-o", "./data.npz"],
    ["slice", "model.onnx", "--data", "data.npz:0-4", "--metric", "avg", "-o", "data.npz"],
    ["slice", "model.onnx", "--profile", "profile.npz", "--metric", "avg", "-o", "profile.npz"],
    ["slice", "model.onnx", "--profile", "profile.npz", "--metric", "avg", "-o", "sub/../model.onnx"],
    ["restructure", "model.onnx", "--slice", "slice.json", "-o", "slice.json"],
    ["mask", "model.onnx", "--slice", "slice.json", "-o", "link.onnx"],
    ["readapt", "model.onnx", "--slice", "slice.json", "--data", "data.npz", "-o", "data.npz"],
    ["readapt", "model.onnx", "--slice", "slice.json", "--data", "data.npz", "--eval-data", "hard.npz",
     "-o", "hard.npz"],
    ["incremental", "model.onnx", "--slice", "slice.json", "--data", "data.npz:5-9", "-o", "data.npz"],
    ["incremental", "model.onnx", "--slice", "slice.json", "--data", "data.npz:5-9", "--replay", "data.npz:0-4",
     "-o", "new.onnx", "--old-task-out", "data.npz"],
    ["incremental", "model.onnx", "--slice", "slice.json", "--data", "data.npz:5-9", "-o", "new.onnx",
     "--old-task-out", "new.onnx"],
    ["compress", "model.onnx", "--data", "data.npz:0-4", "--method", "lamp", "-o", "data.npz"],
    ["sweep", "model.onnx", "--data", "data.npz", "--profile", "profile.npz", "--csv", "data.npz"],
    ["sweep", "model.onnx", "--data", "data.npz", "--profile", "profile.npz", "--plot", "profile.npz"],
    ["sweep", "model.onnx", "--data", "data.npz", "--csv", "points.csv", "--plot", "points.csv"],
    ["evaluate", "model.onnx", "--data", "images"],  # reads only: must still run (exit 0), see below
    ["profile", "model.onnx", "--data", "images", "--grayscale", "-o", "images/profile.npz"],
    ["inspect", "slice.json", "--plot", "slice.json"],
])
def test_no_output_overwrites_or_writes_into_an_input(work, args):
    os.mkdir(work / "sub")
    os.symlink(work / "model.onnx", work / "link.onnx")
    os.link(work / "data.npz", work / "hard.npz")
    if args[0] == "evaluate":
        return  # the one read-only command in the list: nothing to protect
    message = refused(work, *args, names="")
    assert any(word in message for word in ("would overwrite", "inside the input folder", "the same file as"))


def test_no_output_overwrites_the_models_external_data(work):
    model = onnx.load(str(work / "model.onnx"))
    onnx.save(model, str(work / "big.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    refused(work, "profile", "big.onnx", "--data", "data.npz", "--metric", "avg", "-o", "weights.bin",
            names="would overwrite the input")


# 2. Ranges and sweeps too large to materialise.

def test_huge_class_filters_are_checked_without_expanding_them(work):
    for spec in ("digits:train:0-99999999999", "digits:train:0-3000000", "data.npz:5-99999999999999999999999"):
        message = refused(work, "evaluate", "model.onnx", "--data", spec, names="asks for classes not in the data")
        assert len(message) < 200


def test_a_sweep_of_a_million_points_is_refused(work):
    refused(work, "sweep", "model.onnx", "--data", "data.npz", "--profile", "profile.npz", "--thetas", "0:1:1e-6",
            names="--thetas")


# 3. Input that would give silently wrong output.

def test_nan_or_infinite_samples_are_refused(work):
    x, y = load_data(str(work / "data.npz")).arrays()
    x[3, 0, 2, 2] = np.inf
    np.savez(work / "bad.npz", x=x, y=y)
    for args in (["profile", "model.onnx", "--data", "bad.npz", "--metric", "avg", "-o", "p.npz"],
                 ["slice", "model.onnx", "--data", "bad.npz", "--metric", "avg", "-o", "s.json"],
                 ["readapt", "model.onnx", "--slice", "slice.json", "--data", "bad.npz", "-o", "r.onnx"]):
        refused(work, *args, names="bad.npz: 1 samples hold NaN or infinite values")


@pytest.mark.parametrize(("option", "values"), [("--std", ["0"]), ("--std", ["nan"]), ("--mean", ["inf"])])
def test_normalisation_that_makes_infinite_inputs_is_refused(work, option, values):
    refused(work, "evaluate", "model.onnx", "--data", "images", "--grayscale", option, *values, names=option)


def _edit_slice(work: Path, change) -> None:
    raw = json.loads((work / "slice.json").read_text())
    change(raw)
    (work / "bad.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(("change", "names"), [
    (lambda raw: raw["layers"]["/0/Gemm"].update(kept=[]), "keeps no neuron"),
    (lambda raw: raw["layers"]["/0/Gemm"].update(size=1e400), "size must be a whole number"),
    (lambda raw: raw["layers"]["/0/Gemm"].update(kept=[0, 1, 512]), "neuron index 512 is outside [0, 512)"),
    (lambda raw: raw["layers"]["/0/Gemm"].update(kept=[0.5]), "must be a whole number"),
])
def test_malformed_slices_are_refused(work, change, names):
    _edit_slice(work, change)
    for command in ("restructure", "mask"):
        message = refused(work, command, "model.onnx", "--slice", "bad.json", "-o", "out.onnx", names=names)
        assert "bad.json: malformed slice file" in message


def test_deeply_nested_slice_json_is_refused(work):
    (work / "bad.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(work, "inspect", "bad.json", names="bad.json: not a JSON slice file")


def _edit_profile(work: Path, change) -> None:
    with np.load(work / "profile.npz") as archive:
        arrays = dict(archive)
    change(arrays)
    np.savez(work / "bad.npz", **arrays)


@pytest.mark.parametrize(("change", "names"), [
    (lambda a: a.update({"contrib/avg/0": a["contrib/avg/0"][:, :100]}), "have shape [11, 100], expected [11, 512]"),
    (lambda a: a.update({"contrib/avg/1": np.full_like(a["contrib/avg/1"], np.nan)}), "hold NaN"),
    (lambda a: a.update({"sim/0/centred": a["sim/0/centred"][:, :3, :3]}), "do not fit its 512 neurons"),
    (lambda a: a.update(meta=np.array(json.dumps([1, 2]))), "its metadata is not a JSON object"),
])
def test_damaged_profiles_are_refused(work, change, names):
    _edit_profile(work, change)
    message = refused(work, "slice", "model.onnx", "--profile", "bad.npz", "--metric", "avg", "-o", "s.json",
                      names=names)
    assert "error: bad.npz: " in message


def test_truncated_files_are_bad_input_not_internal_errors(work):
    for name in ("data.npz", "profile.npz"):
        (work / f"cut-{name}").write_bytes((work / name).read_bytes()[:3000])
    refused(work, "evaluate", "model.onnx", "--data", "cut-data.npz", names="cut-data.npz: not a readable .npz file")
    refused(work, "slice", "model.onnx", "--profile", "cut-profile.npz", "--metric", "avg", "-o", "s.json",
            names="cut-profile.npz: not a readable profile")


def test_a_regression_model_gets_no_accuracy(work):
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "W", "b"], ["score"])],
        "regression", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("W", TensorProto.FLOAT, [64, 1], np.ones(64, np.float32)),
         helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(work / "reg.onnx"))
    refused(work, "evaluate", "reg.onnx", "--data", "data.npz:0", names="outputs 1 score per sample")


def test_compress_refuses_to_write_a_model_far_below_the_original(work):
    raw = json.loads((work / "slice.json").read_text())
    for layer in raw["layers"].values():
        layer.update(kept=[0], per_category={})
    (work / "tiny.json").write_text(json.dumps(raw))
    refused(work, "compress", "model.onnx", "--slice", "tiny.json", "--data", "data.npz", "--method", "lamp",
            "-o", "c.onnx", names="more than --max-drop")


# 4. Signals.

def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    """A writer killed half-way by SIGTERM: the process exits 143 with one line and no temporary file stays."""
    script = f"""
import os, signal, sys
from pathlib import Path
from onnxslice_cli import entry
for stop in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(stop, entry._exit_on_signal)
from onnxslice.files import write_atomically
def write(tmp):
    tmp.write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGTERM)
    tmp.write_bytes(b"the whole model")
write_atomically(Path({str(tmp_path / 'out.onnx')!r}), write)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip().splitlines() == ["onnxslice: stopped by SIGTERM"]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_start_up_is_one_line_and_exit_130():
    """Ctrl-C arrives while the commands are being imported (a meta-path hook sends SIGINT at that import). SIGINT
    is given Python's handler first, as in a terminal: a background job (CI run with ``&``) starts with it ignored."""
    script = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
class Interrupt:
    def find_spec(self, name, path, target=None):
        if name == "onnxslice_cli.main":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["onnxslice", "--version"]
from onnxslice_cli.entry import main
main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == ["onnxslice: interrupted"]


# 5. Overwriting an existing output keeps its mode.

def test_an_existing_output_is_replaced_and_keeps_its_mode(work):
    out = work / "s.json"
    out.write_text("old")
    out.chmod(0o600)
    os.chdir(work)
    result = CliRunner().invoke(cli, ["slice", "model.onnx", "--profile", "profile.npz", "--metric", "avg",
                                      "--strategy", "global", "-o", "s.json"])
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text() != "old"


# 6. Bad input that used to be reported as an internal error.

def _unwritable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()  # root writes anywhere: take a folder the kernel refuses to anyone
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            (candidate / "onnxslice-probe").touch()
        except OSError:
            return candidate
    pytest.skip("no folder refuses writes on this machine")


def test_an_unwritable_output_folder_is_found_before_any_work(work):
    folder = _unwritable_folder(work)
    refused(work, "profile", "model.onnx", "--data", "data.npz", "--metric", "avg", "-o", str(folder / "p.npz"),
            names="cannot write in")


@pytest.mark.parametrize("eps", ["nan", "inf", "-1"])
def test_readapt_refuses_an_eps_that_is_not_a_positive_number(work, eps):
    refused(work, "readapt", "model.onnx", "--slice", "slice.json", "--data", "data.npz", "--eps", eps,
            "-o", "r.onnx", names="--eps")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (grayscale) and whose data is one empty row: PIL's
    decompression-bomb guard reads the header only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_bad_input(work):
    (work / "images" / "1" / "0.png").write_bytes(_png_claiming(30_000, 30_000))
    refused(work, "evaluate", "model.onnx", "--data", "images", "--grayscale", names="0.png: not a readable image")


# 7. Messages: one line, naming the file or option.

@pytest.mark.parametrize(("args", "names"), [
    (["evaluate", ".", "--data", "data.npz"], "'MODEL'"),
    (["profile", "model.onnx", "--data", "data.npz", "--metric", "bogus", "-o", "p.npz"], "'--metric'"),
    (["profile", "model.onnx", "--data", "data.npz", "--max-per-class", "0", "-o", "p.npz"], "'--max-per-class'"),
    (["profile", "model.onnx", "--data", "data.npz", "-o", "images"], "'--output'"),
    (["evaluate", "model.onnx"], "'--data'"),
])
def test_usage_errors_are_one_line(work, args, names):
    refused(work, *args, names=names)


def _save_variant(work: Path, name: str, change) -> None:
    model = onnx.load(str(work / "model.onnx"))
    change(model)
    onnx.save(model, str(work / name))


@pytest.mark.parametrize(("change", "names"), [
    (lambda m: m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 3])),
     "variant.onnx: the model has 2 data inputs"),
    (lambda m: m.opset_import[0].__setattr__("version", 99), "variant.onnx: the model uses ONNX opset 99"),
    (lambda m: (m.graph.node[-1].__setattr__("domain", "my.ops"), m.opset_import.append(
        helper.make_opsetid("my.ops", 1))), "variant.onnx: node '/4/Gemm' is my.ops:Gemm"),
])
def test_models_onnxruntime_cannot_run_are_named(work, change, names):
    _save_variant(work, "variant.onnx", change)
    refused(work, "evaluate", "variant.onnx", "--data", "data.npz", names=names)


def test_warnings_of_libraries_do_not_reach_stderr(work):
    """A model whose scores overflow to infinity: numpy warns while ranking them; the command's stderr holds only
    its own lines (none here: evaluate succeeds)."""
    def overflow(model: onnx.ModelProto) -> None:
        weight = next(i for i in model.graph.initializer if i.name.endswith("weight") and i.dims[0] == 10)
        weight.CopyFrom(onnx.numpy_helper.from_array(np.full(tuple(weight.dims), 3e38, np.float32), weight.name))
    _save_variant(work, "overflow.onnx", overflow)
    os.chdir(work)
    result = CliRunner().invoke(cli, ["evaluate", "overflow.onnx", "--data", "data.npz"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


# 9. Verification means something.

def test_restructure_probes_with_data_when_given_and_reports_the_probes(work):
    os.chdir(work)
    result = CliRunner().invoke(cli, ["restructure", "model.onnx", "--slice", "slice.json", "-o", "out.onnx",
                                      "--data", "data.npz", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["probes"] == "4 data samples" and report["verification_informative"] is True
    assert load_model(work / "out.onnx") is not None
