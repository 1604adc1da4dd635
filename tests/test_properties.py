"""Property-based tests (hypothesis) of the library's entry points on generated, often broken, artifacts.

Oracle: the contract of every entry point that reads user files — it returns a valid result or raises InputError
(one line naming the file); any other exception is a bug. Generated: slice files (sizes, indices, types out of
range), profile files (array shapes, NaN and infinities, metadata) and data files (shapes, dtypes, NaN, empty sets,
labels out of range).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.files import sha256_of
from onnxslice.graph import find_neuron_layers, load_model
from onnxslice.measure.evaluate import accuracy
from onnxslice.profiling.artifact import FORMAT as PROFILE_FORMAT
from onnxslice.profiling.artifact import Profile
from onnxslice.slicing.artifact import FORMAT as SLICE_FORMAT
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.strategies import make_strategy, select
from onnxslice.surgery.mask import mask_model
from onnxslice.surgery.restructure import restructure
from tests.helpers import MLP

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: A value of any JSON type, including numbers out of every range.
anything_small = st.one_of(st.none(), st.booleans(), st.integers(-3, 600), st.floats(allow_nan=True),
                           st.text(max_size=3), st.just(10**30), st.just(1e400))


@pytest.fixture(scope="module")
def mlp():
    return load_model(MLP)


LAYER_SIZES = {"/0/Gemm": 512, "/2/Gemm": 256}


def _index_lists(size: int, broken: bool) -> st.SearchStrategy:
    good = st.lists(st.integers(0, size - 1), min_size=1, max_size=8, unique=True)
    return st.one_of(good, st.lists(anything_small, max_size=4), anything_small) if broken else good


@st.composite
def slice_documents(draw) -> dict:
    """Mostly well-formed slices of the example MLP; one in two has one part broken."""
    broken = draw(st.booleans())
    names = st.sampled_from([*LAYER_SIZES, "/4/Gemm", "nope"]) if broken else st.sampled_from(sorted(LAYER_SIZES))
    layers = {}
    for name in draw(st.lists(names, max_size=3, unique=True)):
        size = LAYER_SIZES.get(name, 10)
        if broken and draw(st.booleans()):
            size = draw(anything_small)
        bound = size if isinstance(size, int) and not isinstance(size, bool) and 0 < size < 10**6 else 8
        per_category = draw(st.dictionaries(st.sampled_from(["0", "1"]), _index_lists(bound, broken), max_size=2))
        layers[name] = {"size": size, "kept": draw(_index_lists(bound, broken)), "per_category": per_category}
    document = {"format": SLICE_FORMAT, "model_sha256": sha256_of(MLP), "layers": layers}
    if broken and draw(st.booleans()):
        document[draw(st.sampled_from(["format", "model_sha256", "layers"]))] = draw(anything_small)
    return document


@PROPERTY_SETTINGS
@given(document=slice_documents())
def test_generated_slices_load_and_apply_or_raise_input_error(mlp, document):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slice.json"
        path.write_text(json.dumps(document))
        try:
            piece = Slice.load(path)
            piece.check_against(sha256_of(MLP), find_neuron_layers(mlp), MLP)
            masked = mask_model(mlp, piece.kept())
            pruned, _ = restructure(mlp, piece.kept())
        except InputError:
            event("refused")
            return
    event("applied")
    assert len(masked.graph.node) > 0 and len(pruned.graph.node) > 0


@st.composite
def profile_archives(draw) -> dict[str, np.ndarray]:
    """Small profiles of two layers at most; one in two has its metadata or its arrays broken."""
    broken = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))
    categories = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True))
    meta = {"format": PROFILE_FORMAT, "model_sha256": "0" * 64, "data": "generated", "metrics": ["avg"],
            "categories": categories, "layers": [[f"layer{i}", c] for i, c in enumerate(sizes)],
            "samples": [[c, 3] for c in categories], "max_per_class": 3}
    if broken and draw(st.booleans()):
        meta[draw(st.sampled_from(sorted(meta)))] = draw(anything_small)
    arrays = {"meta": np.array(json.dumps(meta))}
    value = st.sampled_from([0.0, 1.0, np.nan, np.inf, -2.5]) if broken else st.floats(0, 10)
    offset = st.sampled_from([0, 0, -1, 1]) if broken else st.just(0)
    for index, size in enumerate(sizes):
        rows, columns = len(categories) + 1 + draw(offset), size + draw(offset)
        arrays[f"contrib/avg/{index}"] = np.full((max(rows, 0), max(columns, 0)), draw(value)) + np.arange(
            max(columns, 0)) * draw(st.sampled_from([0.0, 0.5]))
        with np.errstate(invalid="ignore"):
            h = np.eye(size) * draw(value) + draw(st.floats(0, 1))
        arrays[f"sim/{index}/centred"] = np.stack([h] * max(len(categories) + draw(offset), 1))
        arrays[f"sim/{index}/correction"] = np.zeros((len(categories), 2, size + draw(offset)))
        arrays[f"sim/{index}/factor"] = np.ones(len(categories)) * draw(value)
    if broken and draw(st.booleans()):
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    return arrays


@PROPERTY_SETTINGS
@given(arrays=profile_archives(), strategy=st.sampled_from(["semantic", "global", "category"]))
def test_generated_profiles_load_and_select_or_raise_input_error(arrays, strategy):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.npz"
        np.savez(path, **arrays)
        try:
            profile = Profile.load(path)
            result = select(profile, "avg", make_strategy(strategy))
        except InputError:
            event("refused")
            return
    event("selected")
    for name, layer in result.layers.items():
        assert 1 <= len(layer.kept) <= profile.layer_sizes[name]


@st.composite
def data_files(draw) -> tuple[dict[str, np.ndarray], str]:
    """Mostly usable digits-shaped data; one in two has one part broken (shape, values, labels, arrays, filter)."""
    broken = draw(st.sampled_from(["", "", "", "shape", "values", "labels", "length", "missing", "filter"]))
    count = draw(st.integers(0 if broken else 1, 6))
    shape = draw(st.sampled_from([(8, 8), (3, 5), ()])) if broken == "shape" else draw(
        st.sampled_from([(64,), (1, 8, 8)]))
    fill = draw(st.sampled_from([np.nan, np.inf, 1e30])) if broken == "values" else draw(st.floats(0, 1))
    dtype = draw(st.sampled_from([np.float32, np.float64] + ([np.int64] if broken == "values" else [])))
    with np.errstate(invalid="ignore"):
        x = np.full((count, *shape), fill).astype(dtype)
    labels = st.integers(-2, 12) if broken == "labels" else st.integers(0, 9)
    y = np.asarray(draw(st.lists(labels, min_size=count, max_size=count)), dtype=np.int64)
    if broken == "labels" and draw(st.booleans()):
        y = y + 0.5
    if broken == "length":
        y = y[: max(count - 1, 0)]
    arrays = {"x": x, "y": y}
    if broken == "missing":
        arrays.pop(draw(st.sampled_from(["x", "y"])))
    suffix = draw(st.sampled_from([":0-4", ":3", ":0-99999999999", ":9-2"])) if broken == "filter" else ""
    return arrays, suffix


@PROPERTY_SETTINGS
@given(generated=data_files())
def test_generated_data_evaluates_or_raises_input_error(mlp, generated):
    arrays, suffix = generated
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        np.savez(path, **arrays)
        try:
            result = accuracy(mlp, load_data(f"{path}{suffix}"), "cpu")
        except InputError:
            event("refused")
            return
    event("evaluated")
    assert 0.0 <= result["accuracy"] <= 1.0 and result["samples"] > 0
