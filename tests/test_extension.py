"""A new op family, metric, strategy or command is one class plus its registration: each is added here, from
this file alone, used end to end through the public path (``onnxslice.api``, the ``onnxslice`` command), and
removed again after its test (monkeypatch).

Oracles: (a) the op family: the restructured model equals the masked model (onnxruntime on random inputs;
``api.restructure`` also verifies it) and loses the channels that the unknown op kept before; (b) the metric: its
contributions are the root mean square of each neuron's spatial mean, so rms² = var + avg² of the same profile,
and the global strategy keeps each independent layer's top half by it; (c) the strategy: it keeps each
independent layer's bottom half by contribution; (d) the command: listed by ``onnxslice --help``, and it counts
the model's op types as onnx does.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxslice import api
from onnxslice.data import DataSource
from onnxslice.profiling.artifact import Profile
from onnxslice.profiling.metrics import METRICS, LayerBatch, Metric
from onnxslice.runtime import make_session
from onnxslice.slicing.artifact import LayerSlice, Slice
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import STRATEGIES, Ranking, Strategy, class_scores, ranking
from onnxslice.surgery.analysis import Analysis
from onnxslice.surgery.ops import OPS, OpFamily, family_of, register
from onnxslice_cli.main import COMMANDS, cli

MLP = Path(__file__).parent.parent / "models" / "mlp_digits.onnx"


# -- (a) an op family: Cos, which the op table does not know -------------------------------------------------------

class Cosine(OpFamily):
    """Cos: each channel maps on its own, so a removed channel's constant c becomes cos(c); nothing to edit."""

    ops = frozenset({"Cos"})

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        track = analysis.tracks[node.input[0]]
        analysis.set_track(node.output[0], track.elems, np.cos(track.value), track.axis)


def _cosine_model(path: Path) -> Path:
    """Conv -> Relu -> Cos -> Conv (1 x 1, no padding: cos(0) = 1 of a removed channel folds into its bias) ->
    Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)

    def constant(name: str, *shape: int) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Cos", ["r1"], ["cos"], name="cos"),
        helper.make_node("Conv", ["cos", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cosine", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [constant("w1", 8, 3, 3, 3), constant("b1", 8), constant("w2", 6, 8, 1, 1), constant("b2", 6),
         constant("w3", 4, 6), constant("b3", 4)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _half_of_conv1(model: api.Model) -> Slice:
    layers = {layer.name: LayerSlice(layer.size, list(range(0, layer.size, 2)) if layer.name == "conv1"
                                     else list(range(layer.size)), {}) for layer in model.layers.hidden}
    return Slice(model_sha256=model.sha256, layers=layers)


def _outputs(model: api.Model, x: np.ndarray) -> np.ndarray:
    session = make_session(model.proto, "cpu")
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_an_unknown_op_keeps_the_channels_it_reads(tmp_path):
    assert "Cos" not in OPS
    model = api.load(_cosine_model(tmp_path / "cosine.onnx"))
    result = api.restructure(model, _half_of_conv1(model))
    assert result.report.channels["conv1"] == (8, 8)
    assert any("Cos node 'cos' is not understood" in kept["reason"] for kept in result.report.kept_whole)


def test_a_new_op_family_is_restructured_like_the_mask(tmp_path, monkeypatch):
    for op in Cosine.ops:  # what @register does, undone after the test
        monkeypatch.setitem(OPS, op, Cosine())
    assert isinstance(family_of("Cos"), Cosine)
    model = api.load(_cosine_model(tmp_path / "cosine.onnx"))
    piece = _half_of_conv1(model)
    result = api.restructure(model, piece)  # verifies against the masked model too
    assert result.report.channels["conv1"] == (8, 4)
    x = np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32)
    masked = _outputs(api.mask(model, piece), x)
    np.testing.assert_allclose(_outputs(result.model, x), masked, rtol=1e-4, atol=1e-4 * np.abs(masked).max())


def test_an_op_has_one_family():
    class AnotherRelu(OpFamily):
        ops = frozenset({"Relu", "Cos"})

    with pytest.raises(ValueError, match="already in the table: Relu"):
        register(AnotherRelu)
    assert "Cos" not in OPS


# -- (b) a metric and (c) a strategy, on the bundled MLP ----------------------------------------------------------

class Rms(Metric):
    """Root mean square over samples of each neuron's spatial mean."""

    name = "rms"
    reads_positions = False

    def sample_values(self, batch: LayerBatch) -> dict[str, np.ndarray]:
        return {"square": batch.spatial_mean_squared}

    def combine(self, means: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.sqrt(means["square"])


@dataclass
class LowestStrategy(Strategy):
    """The ``ratio`` of each coupled group with the lowest contribution over all data (a control for ``global``)."""

    ratio: float
    name: ClassVar[str] = "lowest"
    parameter: ClassVar[str] = "ratio"

    def rank(self, profile: Profile, metric: str, groups: SelectionGroups) -> Ranking:
        score = class_scores(profile, metric, groups, None)
        keys = np.empty(len(score))
        for group in np.unique(groups.coupled):
            members = np.flatnonzero(groups.coupled == group)
            keys[members[ranking(-score[members])]] = np.arange(len(members)) / len(members)
        lowest = {layer: int(ranking(-profile.contribution(metric, layer))[0]) for layer in profile.layers}
        return Ranking(keys[None, :], -score, False, [], lowest)


@pytest.fixture(scope="module")
def digits() -> DataSource:
    return DataSource.from_arrays("digits", *_digits())


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32)[:300], data.target[:300]


def _half(values: np.ndarray, largest: bool) -> list[int]:
    order = ranking(values if largest else -values)
    return sorted(order[: int(np.ceil(len(values) / 2))].tolist())


def test_a_new_metric_is_profiled_and_sliced_on(tmp_path, monkeypatch, digits):
    assert Rms.name not in METRICS
    monkeypatch.setitem(METRICS, Rms.name, Rms)
    model = api.load(MLP)
    profile = api.profile(model, digits, metrics=["avg", "var", "rms"])
    for layer in profile.layers:
        avg, var, rms = (profile.contribution(m, layer) for m in ("avg", "var", "rms"))
        np.testing.assert_allclose(rms**2, var + avg**2, rtol=1e-5, atol=1e-9)
    piece = api.select(model, profile, "rms", "global", ratio=0.5, round_to=1)
    assert piece.metric == "rms"
    for layer in profile.layers:
        assert piece.layers[layer].kept == _half(profile.contribution("rms", layer), largest=True)
    api.restructure(model, piece, data=digits)  # verified against the masked model
    assert _slice_command(tmp_path, "--metric", "rms", "--strategy", "global").layers == piece.layers


def test_a_new_strategy_slices_and_restructures(tmp_path, monkeypatch, digits):
    assert LowestStrategy.name not in STRATEGIES
    monkeypatch.setitem(STRATEGIES, LowestStrategy.name, LowestStrategy)
    model = api.load(MLP)
    groups = model.groups  # every layer is a coupled group of its own: the oracle holds per layer
    owners = Counter(g for classes in groups.layer_classes.values() for g in set(groups.coupled[classes].tolist()))
    assert max(owners.values()) == 1
    profile = api.profile(model, digits, metrics=["avg"])
    piece = api.select(model, profile, "avg", "lowest", ratio=0.5, round_to=1)
    assert piece.strategy == "lowest" and piece.ratio == 0.5
    for layer in profile.layers:
        assert piece.layers[layer].kept == _half(profile.contribution("avg", layer), largest=False)
    result = api.restructure(model, piece, data=digits)
    assert result.report.removed_fraction > 0.4
    assert _slice_command(tmp_path, "--metric", "avg", "--strategy", "lowest").layers == piece.layers


def _slice_command(tmp_path: Path, *options: str) -> Slice:
    """The slice the ``slice`` command writes for the MLP on the test's digits (a registered name is a choice)."""
    data = tmp_path / "digits.npz"
    np.savez(data, x=_digits()[0], y=_digits()[1])
    out = tmp_path / "slice.json"
    result = CliRunner().invoke(cli, ["slice", str(MLP), "--data", str(data), *options, "--ratio", "0.5",
                                      "--round-to", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return Slice.load(out)


# -- (d) a command --------------------------------------------------------------------------------------------

@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
def ops(model_path: str) -> None:
    """Count MODEL's op types and name each one's op family ('-': none, the channels it reads are kept)."""
    counts = Counter(node.op_type for node in api.load(model_path).proto.graph.node)
    for op_type, count in sorted(counts.items()):
        click.echo(f"{op_type} {count} {type(OPS[op_type]).__name__ if op_type in OPS else '-'}")


def test_a_new_command_is_listed_and_runs(tmp_path, monkeypatch):
    assert "ops" not in COMMANDS
    module = types.ModuleType("onnxslice_cli.ops_cmd")  # COMMANDS names a module of onnxslice_cli
    module.ops = ops
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(COMMANDS, "ops", ("ops_cmd", "Count MODEL's op types and their op families."))
    runner = CliRunner()
    assert "Count MODEL's op types and their op families." in runner.invoke(cli, ["--help"]).output
    path = _cosine_model(tmp_path / "cosine.onnx")
    result = runner.invoke(cli, ["ops", str(path)])
    assert result.exit_code == 0, result.output
    expected = Counter(node.op_type for node in api.load(path).proto.graph.node)
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()}
    assert {op: int(count) for op, (count, _) in rows.items()} == expected
    assert rows["Cos"][1] == "-" and rows["Relu"][1] == "Elementwise"
