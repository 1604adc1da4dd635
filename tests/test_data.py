"""Data sources: built-in digits, .npz files, image folders, class filters and per-class caps.

Oracles: scikit-learn's own digits arrays, the arrays written to the files, and counting by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits as sk_digits
from sklearn.model_selection import train_test_split

from onnxslice.data import ImageOptions, load_data, parse_class_filter
from onnxslice.errors import InputError


def test_digits_split_is_fixed_stratified_and_complete():
    train, val, test, whole = (load_data(f"digits{split}") for split in (":train", ":val", ":test", ""))
    assert len(train) + len(val) + len(test) == len(whole) == 1797
    assert train.sample_shape == val.sample_shape == (1, 8, 8)
    # stratified: every class in every part, in proportion within one or two samples
    for c in range(10):
        whole_count = (whole.labels == c).sum()
        assert abs((test.labels == c).sum() / whole_count - 0.3) < 0.02
        assert abs((val.labels == c).sum() / whole_count - 0.7 * 0.2) < 0.02
    # the same split every time
    np.testing.assert_array_equal(load_data("digits:test").labels, test.labels)
    x, _ = whole.arrays()
    np.testing.assert_allclose(x[:, 0], sk_digits().images / 16.0, rtol=1e-6)


def test_digits_splits_are_disjoint_cover_the_data_and_test_is_the_split_drawn_before_val_existed():
    """Oracle: scikit-learn's train_test_split (30% stratified, seed 0) gives the test indices the test split had
    before digits:val was carved out; samples are matched to indices by their pixels (no two digits images are
    equal, checked)."""
    x, y = load_data("digits").arrays()
    flat = x.reshape(len(x), -1)
    index = {row.tobytes(): i for i, row in enumerate(flat)}
    parts = {}
    for split in ("train", "val", "test"):
        samples, labels = load_data(f"digits:{split}").arrays()
        rows = [index[row.tobytes()] for row in samples.reshape(len(samples), -1)]
        np.testing.assert_array_equal(y[rows], labels)
        parts[split] = set(rows)
    assert len(index) == len(flat)  # no two images are equal: the pixels name the sample
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert parts["train"] | parts["val"] | parts["test"] == set(range(len(y)))
    _, old_test = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0, stratify=sk_digits().target)
    assert parts["test"] == set(old_test.tolist())


def test_class_filter_works_on_the_validation_split():
    val = load_data("digits:val")
    picked = load_data("digits:val:3,7-8")
    assert picked.classes == [3, 7, 8]
    assert len(picked) == int(np.isin(val.labels, [3, 7, 8]).sum())
    assert load_data("digits:val", max_per_class=2).classes == list(range(10))


def test_class_filter_keeps_labels_and_only_those_classes():
    data = load_data("digits:train:0-4")
    assert data.classes == [0, 1, 2, 3, 4]
    assert parse_class_filter("1,3,5-7") == [(1, 1), (3, 3), (5, 7)]
    assert load_data("digits:test:2,9").classes == [2, 9]


def test_cap_per_class_takes_the_first_samples_of_each_class():
    data = load_data("digits:test", max_per_class=3)
    assert len(data) == 30
    assert all((data.labels == c).sum() == 3 for c in range(10))


def test_npz_roundtrip_and_batches(tmp_path):
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(10, 3)
    y = np.array([0, 1] * 5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_data(str(tmp_path / "d.npz"))
    batches = list(data.batches(4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_origin_opens_the_same_samples_from_another_folder(tmp_path, monkeypatch):
    """Oracle: the arrays saved. A Ray worker reopens data from its origin, maybe in another working folder: a
    relative path is recorded absolute, with its class filter and cap; data made in memory has no origin."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    monkeypatch.chdir(tmp_path)
    data = load_data("d.npz:0-1", max_per_class=1)
    assert data.origin.spec == f"{tmp_path / 'd.npz'}:0-1"
    monkeypatch.chdir(tmp_path.parent)
    again = data.origin.open()
    np.testing.assert_array_equal(again.samples(np.arange(len(again))), x[[0, 1]])
    np.testing.assert_array_equal(again.labels, [0, 1])
    assert load_data("digits:val").origin.spec == "digits:val" and data.subset(np.arange(1)).origin is None


def test_image_folder_labels_sorted_class_names_and_resize(tmp_path):
    for name, value in (("b_dog", 200), ("a_cat", 50)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 4, 3), value + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_data(str(tmp_path), ImageOptions(size=(5, 5), mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]))
    assert data.classes == [0, 1] and data.sample_shape == (3, 5, 5)
    x, y = data.arrays()
    assert list(y) == [0, 0, 0, 1, 1, 1]  # a_cat first
    np.testing.assert_allclose(x[0, 0, 0, 0], (50 / 255 - 0.5) / 0.5, rtol=1e-5)


def test_shaped_for_flattens_digits_for_a_dense_model_and_refuses_other_shapes():
    data = load_data("digits:test")
    assert data.shaped_for(["batch", 64]).samples(np.arange(2)).shape == (2, 64)
    with pytest.raises(InputError, match=r"sample shape \[1, 8, 8\] does not match the model input \[3, 32, 32\]"):
        data.shaped_for(["batch", 3, 32, 32])


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (None, "no/such/file.npz", "no such data file"),
        (None, "digitz", "unknown data set"),
        (None, "digits:test:11-12", r"class filter 11-12 asks for classes not in the data \(it has 0-9\)"),
        ("float_labels", "d.npz", "labels 'y' must be integers"),
        ("missing_y", "d.npz", "needs arrays 'x' and 'y'"),
        ("empty_class", "imgs", "class folder has no images"),
        ("not_npz", "d.txt", "must be a .npz file or a folder"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, monkeypatch, make, spec, message):
    monkeypatch.chdir(tmp_path)
    if make == "float_labels":
        np.savez("d.npz", x=np.zeros((2, 3), np.float32), y=np.array([0.5, 1.0]))
    elif make == "missing_y":
        np.savez("d.npz", x=np.zeros((2, 3), np.float32))
    elif make == "empty_class":
        (tmp_path / "imgs" / "a").mkdir(parents=True)
    elif make == "not_npz":
        (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(InputError, match=message) as info:
        load_data(spec)
    assert "\n" not in str(info.value)
