"""Transformers: activations whose samples do not lie on axis 0, and the MLP blocks of a vision transformer.

Oracles that do not depend on onnxslice's own code: numpy on a hand-built graph (the activation computed by
hand, averaged over samples and positions); the PyTorch original of the exported ViT (Taylor contributions of
its sequence-first attention in-projection and of its MLP hidden layer, captured by hooks and autograd); and
for the pipeline, restructure's own check against the masked original plus the count of weights removed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxslice.data import DataSource
from onnxslice.graph import canonicalize, find_neuron_layers, load_model
from onnxslice.profiling import profile_model
from onnxslice.profiling.batch import batch_axis_of, find_batch_axes
from onnxslice.profiling.profiler import with_observed_outputs
from onnxslice.profiling.similarity import as_samples_neurons_positions
from onnxslice.runtime import make_session
from onnxslice_cli.main import cli

TOKENS, FEATURES, HIDDEN, MERGED, CLASSES = 3, 4, 6, 5, 10


def _sequence_first_graph() -> onnx.ModelProto:
    """x (N, 3, 4) -> Transpose -> (3, N, 4) -> MatMul W1 + b1 -> Relu: ``first``, (3, N, 6), samples on axis 1;
    -> Reshape (-1, 6) -> (3N, 6) -> MatMul W2 -> ``merged``, (3N, 5), samples merged with the tokens;
    -> Reshape (3, -1, 5) -> Transpose -> (N, 3, 5) -> ReduceMean over tokens -> MatMul W3 -> logits (N, 10)."""
    rng = np.random.default_rng(0)
    consts = {"w1": rng.normal(size=(FEATURES, HIDDEN)), "b1": rng.normal(size=HIDDEN),
              "w2": rng.normal(size=(HIDDEN, MERGED)), "w3": rng.normal(size=(MERGED, CLASSES)),
              "flat": np.array([-1, HIDDEN]), "unflat": np.array([TOKENS, -1, MERGED]), "axes": np.array([1])}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], "to_sequence_first", perm=[1, 0, 2]),
             helper.make_node("MatMul", ["t", "w1"], ["m1"], "first"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], "first_bias"),
             helper.make_node("Relu", ["a1"], ["r1"], "first_relu"),
             helper.make_node("Reshape", ["r1", "flat"], ["f"], "merge"),
             helper.make_node("MatMul", ["f", "w2"], ["m2"], "merged"),
             helper.make_node("Reshape", ["m2", "unflat"], ["u"], "unmerge"),
             helper.make_node("Transpose", ["u"], ["b"], "to_batch_first", perm=[1, 0, 2]),
             helper.make_node("ReduceMean", ["b"], ["pooled"], "pool", axes=[1], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w3"], ["logits"], "head")]
    initializers = [numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
                    for k, v in consts.items() if k != "axes"]
    graph = helper.make_graph(nodes, "sequence_first",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TOKENS, FEATURES])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              initializers)
    return canonicalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_the_batch_axis_is_found_by_running_the_model_not_by_position():
    """Oracle: the graph's construction — ``first`` has its samples on axis 1 (after a Transpose), ``merged`` has
    them merged with the tokens (3N rows: kept whole, the reason says so)."""
    model = _sequence_first_graph()
    layers = find_neuron_layers(model).hidden
    assert [layer.name for layer in layers] == ["first", "merged"]
    session = make_session(with_observed_outputs(model, layers), "cpu")
    sample = np.zeros((1, TOKENS, FEATURES), np.float32)
    found = find_batch_axes(layers, lambda x, names: session.run(names, {"x": x}), sample)
    assert [(layer.name, layer.batch_axis) for layer in found.layers] == [("first", 1)]
    assert list(found.excluded) == ["merged"]
    assert "merged with another axis" in found.excluded["merged"]
    assert batch_axis_of((2, 17, 64), (3, 17, 64)) == 0
    assert "several axes" in batch_axis_of((2, 2, 5), (3, 3, 5))
    assert "no axis" in batch_axis_of((17, 64), (17, 64))


def test_a_static_batch_takes_axis_0_only_where_it_has_that_size():
    """Oracle: shapes stated by hand — a fixed batch of 1 gives (3, 1, 6) and (3, 5): neither axis 0 is the batch."""
    shapes = {"r1": (TOKENS, 1, HIDDEN), "m2": (TOKENS, MERGED)}
    layers = find_neuron_layers(_sequence_first_graph()).hidden
    found = find_batch_axes(layers, lambda x, names: [np.zeros(shapes[n]) for n in names], np.zeros((1, 3, 4)), 1)
    assert found.layers == [] and set(found.excluded) == {"first", "merged"}
    assert "fixed batch size of 1" in found.excluded["first"]


def test_samples_on_axis_1_are_moved_first():
    """Oracle: numpy's transpose, written out — (T, N, C) becomes (N, C, T)."""
    activation = np.arange(3 * 2 * 4).reshape(3, 2, 4)
    got = as_samples_neurons_positions(activation, -1, 1)
    np.testing.assert_array_equal(got, activation.transpose(1, 2, 0))
    nhwc = np.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4)  # the default (batch 0) is unchanged
    np.testing.assert_array_equal(as_samples_neurons_positions(nhwc, 3), np.moveaxis(nhwc, 3, 1).reshape(2, 4, 15))


@pytest.mark.parametrize("means_session", [False, True], ids=["whole-activations", "spatial-means-session"])
def test_profile_of_a_sequence_first_layer_equals_numpy_and_skips_the_merged_one(tmp_path, monkeypatch,
                                                                                 means_session):
    """Oracle: numpy — the average over samples and tokens of relu(x @ W1 + b1) per neuron, read whole or through
    the session that outputs only means (averaged over the tokens, not the samples); the merged layer is not in the
    profile and its reason is."""
    from onnxslice.profiling import profiler

    made = []
    if means_session:
        monkeypatch.setattr(profiler, "MEANS_SESSION_BATCHES", 1)
        spatial_means = profiler.with_spatial_means
        monkeypatch.setattr(profiler, "with_spatial_means", lambda *a: made.append(1) or spatial_means(*a))
    model = _sequence_first_graph()
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, TOKENS, FEATURES)).astype(np.float32)
    y = np.repeat(np.arange(CLASSES), 8)  # 4 per class for CKA, the other 40 in 3 batches
    result = profile_model(path, DataSource.from_arrays("seq", x, y), ["avg", "var"], 4, "cpu", batch_size=16,
                           progress=False)
    assert result.layers == ["first"] and "merged with another axis" in result.excluded["merged"]
    assert len(made) == int(means_session)
    consts = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    hidden = np.maximum(x @ consts["w1"] + consts["b1"], 0)  # (N, T, 6)
    np.testing.assert_allclose(result.contribution("avg", "first"), hidden.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(result.contribution("var", "first"), hidden.mean(axis=1).var(axis=0), rtol=1e-4,
                               atol=1e-7)
    result.save(tmp_path / "p.npz")
    assert type(result).load(tmp_path / "p.npz").excluded == result.excluded


# -- the vision transformer of issue 16 ---------------------------------------------------------------------------

def _vit() -> torch.nn.Module:
    """torchvision's VisionTransformer, small; its zero-initialised head re-drawn so that outputs vary."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=64,
                                               mlp_dim=128, num_classes=10)
    torch.nn.init.normal_(net.heads.head.weight, std=0.1)
    return net.eval()


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> dict[str, Path]:
    """The ViT exported with both exporters (legacy: opset 17), and 3 x 32 x 32 digits (10 per class)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("vit")
    net, example = _vit(), torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(folder / "legacy.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        torch.onnx.export(net, (example,), str(folder / "dynamo.onnx"), dynamo=True, input_names=["input"],
                          output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1024)}})
    digits = load_digits()
    picked = np.concatenate([np.flatnonzero(digits.target == c)[:10] for c in range(10)])
    images = torch.from_numpy((digits.images[picked] / 16.0).astype(np.float32))[:, None]
    x = torch.nn.functional.interpolate(images, size=32, mode="bilinear").repeat(1, 3, 1, 1).numpy()
    np.savez(folder / "digits32.npz", x=x, y=digits.target[picked])
    return {"legacy": folder / "legacy.onnx", "dynamo": folder / "dynamo.onnx", "data": folder / "digits32.npz"}


def _torch_taylor(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Taylor contributions on the PyTorch original, |Σ_tokens a · ∂logit_y/∂a| averaged over samples, of block 0's
    attention in-projection (sequence-first (17, N, 192), captured where multi-head attention calls ``linear``
    with its in-projection weight) and of its MLP hidden layer (after its GELU, mlp.1, (N, 17, 128))."""
    net = _vit()
    block = net.encoder.layers[0]
    captured: dict[str, torch.Tensor] = {}
    original = torch.nn.functional.linear

    def linear(inp, weight, bias=None):
        out = original(inp, weight, bias)
        if weight is block.self_attention.in_proj_weight:
            captured["in_proj"] = out
        return out

    handle = block.mlp[1].register_forward_hook(lambda _m, _i, out: captured.__setitem__("mlp", out))
    torch.nn.functional.linear = linear
    try:
        with torch.enable_grad():
            logits = net(torch.from_numpy(x))
            target = logits.gather(1, torch.from_numpy(y.astype(np.int64))[:, None]).sum()
            grads = torch.autograd.grad(target, [captured["in_proj"], captured["mlp"]])
    finally:
        torch.nn.functional.linear = original
        handle.remove()
    in_proj = (captured["in_proj"] * grads[0]).sum(0).abs().mean(0)  # tokens on axis 0, samples on axis 1
    mlp = (captured["mlp"] * grads[1]).sum(1).abs().mean(0)
    return {"in_proj": in_proj.detach().numpy(), "mlp": mlp.detach().numpy()}


def test_taylor_of_the_sequence_first_attention_projection_equals_the_pytorch_original(vit):
    """Oracle: the PyTorch ViT (autograd through its own attention); legacy export, whose opset 17 writes GELU out
    (Div, Erf, Add, Mul, Mul): mlp.0 is observed after it, as the dynamo export's Gelu op."""
    data = np.load(vit["data"])
    x, y = data["x"][:20], data["y"][:20]
    result = profile_model(vit["legacy"], DataSource.from_arrays("d", x, y), ["taylor"], 4, "cpu", progress=False)
    block = "/encoder/layers/encoder_layer_0"
    layers = find_neuron_layers(load_model(vit["legacy"])).by_name()
    assert layers[f"{block}/mlp/mlp.0/MatMul"].output == f"{block}/mlp/mlp.1/Mul_1_output_0"
    want = _torch_taylor(x, y)
    np.testing.assert_allclose(result.contribution("taylor", f"{block}/self_attention/MatMul"), want["in_proj"],
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(result.contribution("taylor", f"{block}/mlp/mlp.0/MatMul"), want["mlp"], rtol=1e-3,
                               atol=1e-6)
    assert set(result.excluded) == {f"/encoder/layers/encoder_layer_{i}/self_attention/Gemm" for i in (0, 1)}


BLOCK0 = "encoder.layers.encoder_layer_0.self_attention"  #: module path of block 0's attention
WIDTH, HEADS, HEAD_DIM = 64, 2, 32  #: the in-projection writes Q, K, V (64 each) of 2 heads of 32 channels


def _channels(part: str, head: int) -> set[int]:
    """The in-projection channels of one head's Q, K or V (packed Q | K | V, heads in order within each)."""
    start = "qkv".index(part) * WIDTH + head * HEAD_DIM
    return set(range(start, start + HEAD_DIM))


def _block0(model: onnx.ModelProto) -> dict[str, str]:
    """Node names (exporter-given) of block 0's in-projection, its bias Add and its out-projection."""
    layers = {layer.display: layer for layer in find_neuron_layers(model).layers}
    return {"in": layers[BLOCK0].name, "bias": layers[BLOCK0].tail[0], "out": layers[f"{BLOCK0}.out_proj"].name}


def _restructure_block0(path: Path, data: Path, dropped: set[int]) -> tuple[onnx.ModelProto, onnx.ModelProto, object]:
    """Restructure the ViT dropping ``dropped`` channels of block 0's in-projection; verified against the mask by
    restructure's own check on the digits, and here by onnxruntime on them. Returns (original, pruned, report)."""
    from onnxslice.surgery.mask import mask_model
    from onnxslice.surgery.restructure import restructure
    from onnxslice.surgery.verify import verify

    model = load_model(path)
    kept = {_block0(model)["in"]: sorted(set(range(3 * WIDTH)) - dropped)}
    pruned, report = restructure(model, kept)
    x = np.load(data)["x"][:16]
    check = verify(model, pruned, kept, samples=x)
    assert check.informative and check.output_scale > 0.1
    masked = make_session(mask_model(model, kept), "cpu").run(None, {"input": x})[0]
    got = make_session(pruned, "cpu").run(None, {"input": x})[0]
    np.testing.assert_allclose(got, masked, rtol=0, atol=1e-5 * np.abs(masked).max())
    return model, pruned, report


def _weights(model: onnx.ModelProto, names: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """Shapes of block 0's in-projection weight, its bias (the Add's constant) and the out-projection weight."""
    nodes = {node.name: node for node in model.graph.node}
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    bias = next(shapes[name] for name in nodes[names["bias"]].input if name in shapes)
    return {"in": shapes[nodes[names["in"]].input[1]], "bias": bias, "out": shapes[nodes[names["out"]].input[1]]}


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(init.dims)) for init in model.graph.initializer if init.data_type == TensorProto.FLOAT)


def _score_shapes(model: onnx.ModelProto) -> set[tuple]:
    """(heads, tokens, tokens) of every 4-D tensor of attention scores (N, heads, 17, 17)."""
    from onnxslice.graph_utils import tensor_shapes

    return {tuple(shape[1:]) for shape in tensor_shapes(model.graph).values()
            if len(shape) == 4 and shape[2:] == [17, 17]}


@pytest.mark.parametrize("kind", ["legacy", "dynamo"])
@pytest.mark.parametrize("dropped", ["v", "qkv"], ids=["v-only", "q-k-and-v"])
def test_a_head_whose_v_channels_are_all_dropped_is_removed_whole(vit, kind, dropped):
    """Oracle: the masked model (restructure's check and onnxruntime on the digits) and counts by hand. Dropping
    every V channel of head 1 (its Q and K kept by the slice, or dropped too) removes the head: 96 in-projection
    rows, 32 out-projection columns, one head in every Reshape (block 0's attention scores now hold 1 head, block
    1's still 2); the float parameters fall by 96 x 64 + 64 x 32 weights and the bias's 96 entries (where the export
    shares one zero bias between the blocks' in-projections, the shared bias stays and block 0 gets its own 96: 192
    more); the size a slice predicts (the slicing groups) is the size restructure reaches."""
    from onnxslice.api import Model
    from onnxslice.slicing.groups import SelectionGroups

    dropped_channels = set().union(*(_channels(part, 1) for part in dropped))
    model, pruned, report = _restructure_block0(vit[kind], vit["data"], dropped_channels)
    names = _block0(model)
    assert report.channels[names["in"]] == (192, 96)
    assert report.attention_heads[0] == {"in_projection": names["in"], "heads": 2, "head_dim": 32, "removed": [1],
                                         "kept": {}}
    assert report.attention_heads[1]["removed"] == []
    assert _weights(model, names) == {"in": (64, 192), "bias": (192,), "out": (64, 64)}
    assert _weights(pruned, names) == {"in": (64, 96), "bias": (96,), "out": (64, 32)}
    assert _score_shapes(model) == {(2, 17, 17)} and _score_shapes(pruned) == {(1, 17, 17), (2, 17, 17)}
    bias = next(name for name in next(n for n in model.graph.node if n.name == names["bias"]).input
                if name in {init.name for init in model.graph.initializer})
    shared = sum(bias in node.input for node in model.graph.node) > 1
    _, base, _ = _restructure_block0(vit[kind], vit["data"], set())
    assert _params(base) - _params(pruned) == 96 * 64 + 64 * 32 + 96 - (192 if shared else 0)
    kept = {names["in"]: sorted(set(range(192)) - dropped_channels)}
    assert SelectionGroups.of_model(model).size_of_slice(kept)["params"] == Model(pruned).params  # Q, K follow


@pytest.mark.parametrize("kind", ["legacy", "dynamo"])
def test_a_head_with_a_v_channel_kept_stays_whole_and_says_why(vit, kind):
    """Oracle: the masked model (as above). Dropping 31 of head 1's V channels and all of head 0's Q channels removes
    nothing (no head loses every V channel; a Q channel never goes alone): the dropped channels are zeroed, the
    report gives each head's reason, and the outputs equal the mask's."""
    dropped = set(range(160, 191)) | _channels("q", 0)
    model, pruned, report = _restructure_block0(vit[kind], vit["data"], dropped)
    names = _block0(model)
    assert report.channels[names["in"]] == (192, 192)
    assert report.zeroed == len(dropped)
    assert report.attention_heads[0]["removed"] == []
    assert set(report.attention_heads[0]["kept"]) == {0, 1}
    assert all("keeps some of its V channels" in reason for reason in report.attention_heads[0]["kept"].values())
    assert _weights(pruned, names) == _weights(model, names)


def test_dropping_every_v_channel_keeps_one_head_zeroed(vit):
    """Oracle: the masked model (as above). A Reshape cannot be given 0 heads, so with every V channel dropped head 0
    stays (zeroed, the reason given) and head 1 goes."""
    model, pruned, report = _restructure_block0(vit["legacy"], vit["data"], _channels("v", 0) | _channels("v", 1))
    assert report.attention_heads[0]["removed"] == [1]
    assert "one head stays" in report.attention_heads[0]["kept"][0]
    assert _weights(pruned, _block0(model))["in"] == (64, 96)


def _pipeline(model: Path, data: Path, folder: Path) -> dict:
    """profile (avg, taylor) -> slice global 0.5 (each metric) -> restructure -> evaluate, through the CLI, and the
    taylor slice with ``--round-to 1`` -> restructure; every step must exit 0. Returns the restructure reports and the
    slices by metric ("taylor-round-1": that restructure's report)."""
    runner = CliRunner()

    def run(*args: str) -> dict:
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, (args, result.output, result.stderr)
        return json.loads(result.stdout)

    profile = run("profile", str(model), "--data", str(data), "--metric", "avg", "--metric", "taylor",
                  "--max-per-class", "8", "-q", "-o", str(folder / "p.npz"))
    out = {"profile": profile}
    for metric in ("avg", "taylor"):
        run("slice", str(model), "--profile", str(folder / "p.npz"), "--data", str(data), "--metric", metric,
            "--strategy", "global", "--ratio", "0.5", "-o", str(folder / f"{metric}.json"))
        report = run("restructure", str(model), "--slice", str(folder / f"{metric}.json"), "--data", str(data),
                     "-o", str(folder / f"{metric}.onnx"))
        evaluation = run("evaluate", str(folder / f"{metric}.onnx"), "--data", str(data))
        out[metric] = {"restructure": report, "evaluate": evaluation,
                       "slice": json.loads((folder / f"{metric}.json").read_text())}
    run("slice", str(model), "--profile", str(folder / "p.npz"), "--metric", "taylor", "--strategy", "global",
        "--ratio", "0.5", "--round-to", "1", "-o", str(folder / "round1.json"))
    out["taylor-round-1"] = run("restructure", str(model), "--slice", str(folder / "round1.json"), "--data", str(data),
                                "-o", str(folder / "round1.onnx"))
    return out


def _mlp_removed(original: Path, pruned: Path) -> float:
    """The fraction of MLP-block hidden neurons (the input rows of every mlp.3 weight, its node found by module path in
    the original; restructure keeps node names) the pruned model lost."""
    layers = find_neuron_layers(load_model(original)).layers
    names = [layer.name for layer in layers if layer.display.endswith(".mlp.3")]
    assert len(names) == 2

    def hidden(path: Path) -> int:
        model = load_model(path)
        layers = find_neuron_layers(model).by_name()
        weights = {init.name: init for init in model.graph.initializer}
        return sum(weights[layers[name].weight].dims[0] for name in names)

    return 1 - hidden(pruned) / hidden(original)


#: kind -> metric -> the kept MLP hidden neurons of each block, by module path (filled by the pipeline tests)
KEPT_MLP: dict[str, dict[str, dict[str, list[int]]]] = {}


def _check_pipeline(vit: dict[str, Path], kind: str, folder: Path) -> None:
    result = _pipeline(vit[kind], vit["data"], folder)
    KEPT_MLP[kind] = {metric: {layer["display"]: layer["kept"] for layer in result[metric]["slice"]["layers"].values()
                               if (layer.get("display") or "").endswith(".mlp.0")} for metric in ("avg", "taylor")}
    kept_whole = {item["name"] for item in result["profile"]["kept_whole"]}
    assert len(kept_whole) == 2  # the out-projections: samples merged with the tokens
    for metric in ("avg", "taylor"):
        assert set(result[metric]["slice"]["kept_whole"]) == kept_whole
        report = result[metric]["restructure"]
        removed = _mlp_removed(vit[kind], folder / f"{metric}.onnx")
        heads = report["attention_heads"]
        assert len(heads) == 2 and all(block["heads"] == 2 for block in heads)
        print(f"{kind} {metric}: MLP neurons removed {removed:.0%}, attention heads removed "
              f"{sum(len(block['removed']) for block in heads)} of 4, max |pruned - masked| "
              f"{report['max_abs_diff']:.2g}, output scale {report['output_scale']:.3g}")
        assert removed >= 0.4
        assert report["output_scale"] > 0.1  # a real check: the outputs vary
        assert report["max_abs_diff"] <= 1e-4 * report["output_scale"]
        assert report["params_after"] < report["params_before"]
        assert 0.0 <= result[metric]["evaluate"]["accuracy"] <= 1.0
    # 2 heads per block: the default --round-to 8 keeps both; at --round-to 1 the ratio keeps one, the other goes
    assert all(block["removed"] == [] for metric in ("avg", "taylor")
               for block in result[metric]["restructure"]["attention_heads"])
    report = result["taylor-round-1"]
    assert [len(block["removed"]) for block in report["attention_heads"]] == [1, 1]
    assert report["output_scale"] > 0.1 and report["max_abs_diff"] <= 1e-4 * report["output_scale"]


def test_the_legacy_vit_goes_through_profile_slice_restructure_and_evaluate(vit, tmp_path):
    """Oracle: restructure's verification against the masked original on the data (non-degenerate output scale),
    and the MLP weights of the written model: at least 40 % of the MLP hidden neurons gone at a 0.5 slice; no attention
    head removed at the default --round-to 8 (2 heads a block round up to 2), one a block at --round-to 1."""
    _check_pipeline(vit, "legacy", tmp_path)


@pytest.mark.slow
def test_the_dynamo_vit_goes_through_profile_slice_restructure_and_evaluate(vit, tmp_path):
    """The same for the dynamo export (default opset, GELU as one op); and where the legacy export ran first,
    the legacy export of the same module as the oracle: both slices keep the same MLP hidden neurons."""
    _check_pipeline(vit, "dynamo", tmp_path)
    if "legacy" in KEPT_MLP:
        assert KEPT_MLP["dynamo"] == KEPT_MLP["legacy"]
        assert all(len(kept) == 2 for kept in KEPT_MLP["legacy"].values())


def test_deeplift_does_not_read_a_sequence_first_layer_and_says_why(tmp_path):
    """Oracle: the graph's construction — captum's DeepLIFT splits inputs and baselines along axis 0, so the layer
    whose samples lie on axis 1 is not profiled with it; with no layer left, the error names both reasons."""
    from onnxslice.errors import InputError

    path = tmp_path / "seq.onnx"
    onnx.save(_sequence_first_graph(), path)
    x = np.random.default_rng(2).normal(size=(20, TOKENS, FEATURES)).astype(np.float32)
    data = DataSource.from_arrays("seq", x, np.repeat(np.arange(CLASSES), 2))
    with pytest.raises(InputError, match="first: its samples lie on axis 1 and deeplift reads them on axis 0 only"):
        profile_model(path, data, ["deeplift"], 2, "cpu", progress=False)
