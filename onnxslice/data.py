"""Labelled data sources: a `.npz`, a folder of class sub-folders of images, or a built-in set.

A data argument is ``SOURCE[:CLASSES]``: ``digits``, ``digits:train``, ``digits:val``, ``digits:test``, ``data.npz``
or ``images/``, optionally followed by a class filter such as ``:0-4`` or ``:1,3,5-7``. Labels keep
their original values (a filter does not renumber them). Sources iterate in batches; a folder is
read batch by batch, never loaded whole.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from onnxslice.errors import InputError, one_line

BUILTINS = ("digits", "digits:train", "digits:val", "digits:test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_CLASS_FILTER = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
DIGITS_TEST_FRACTION = 0.3
#: digits:val is this stratified fraction of the 70% training part (the rest is digits:train).
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
#: Labels are int64: a class filter bound past this is clipped before comparing (it matches no label anyway).
_LABEL_MAX = 2**62


@dataclass
class ImageOptions:
    """How images of a folder become arrays: size (H, W), colour mode, scaling and normalisation."""

    size: tuple[int, int] | None = None
    grayscale: bool = False
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and min(self.size) < 1:
            raise InputError(f"--image-size {self.size[0]} {self.size[1]}: both sides must be at least 1")
        for option, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and not np.all(np.isfinite(values)):
                raise InputError(f"{option} {' '.join(map(str, values))}: values must be finite")
        if self.std is not None and np.any(np.asarray(self.std) == 0):
            raise InputError(f"--std {' '.join(map(str, self.std))}: a standard deviation of 0 divides by zero")


@dataclass(frozen=True)
class DataOrigin:
    """How a data set was opened (its data argument and options), so that another process (a Ray worker) opens the
    same samples in the same order itself: only this crosses to it, never the samples."""

    spec: str
    image_options: ImageOptions
    max_per_class: int | None = None

    def open(self) -> DataSource:
        return load_data(self.spec, self.image_options, self.max_per_class)


@dataclass
class DataSource:
    """A labelled data set: samples are produced on demand, labels are known up front."""

    name: str
    labels: np.ndarray
    _load: object = field(repr=False)  # callable(indices) -> float32 array (n, *sample_shape)
    sample_shape: tuple[int, ...] = ()
    #: how to open it again elsewhere; None for data made in this process (arrays, subsets, reshaped views)
    origin: DataOrigin | None = None

    @classmethod
    def from_arrays(cls, name: str, x: np.ndarray, y: np.ndarray) -> DataSource:
        """A data set held in memory: samples ``x`` (N, ...) and integer labels ``y`` (N,); NaN or infinite
        samples are an InputError (they would slice and prune silently wrong)."""
        bad = np.flatnonzero(~np.isfinite(x).all(axis=tuple(range(1, x.ndim)))) if x.dtype.kind == "f" else []
        if len(bad):
            raise InputError(f"{name}: {len(bad)} samples hold NaN or infinite values (the first is sample {bad[0]})")
        return cls(name, y, lambda idx: x[idx], tuple(x.shape[1:]))

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    def samples(self, indices: np.ndarray) -> np.ndarray:
        return self._load(np.asarray(indices))  # type: ignore[operator]

    def subset(self, indices: np.ndarray, name: str | None = None) -> DataSource:
        indices = np.asarray(indices, dtype=np.int64)
        parent = self
        return DataSource(name or self.name, self.labels[indices], lambda idx: parent.samples(indices[idx]),
                          self.sample_shape)

    def filter_classes(self, ranges: Sequence[tuple[int, int]]) -> DataSource:
        """The samples whose label lies in one of the inclusive ``ranges``; every class a range names must be
        present (checked by counting, so a range as wide as 0-99999999999 costs nothing)."""
        present = np.asarray(self.classes)
        for low, high in ranges:
            inside = int(np.count_nonzero((present >= min(low, _LABEL_MAX)) & (present <= min(high, _LABEL_MAX))))
            if inside != high - low + 1:
                raise InputError(f"{self.name}: class filter {_ranges_text(ranges)} asks for classes not in the "
                                 f"data (it has {_ranges(self.classes)})")
        keep = np.flatnonzero(np.isin(self.labels, [c for low, high in ranges for c in range(low, high + 1)]))
        return self.subset(keep, f"{self.name}:{_ranges_text(ranges)}")

    def cap_per_class(self, max_per_class: int | None) -> DataSource:
        """The first ``max_per_class`` samples of each class, in their original order."""
        if max_per_class is None:
            return self
        if max_per_class < 1:
            raise InputError(f"--max-per-class must be at least 1, got {max_per_class}")
        keep = np.concatenate([np.flatnonzero(self.labels == c)[:max_per_class] for c in self.classes])
        return self.subset(np.sort(keep))

    def fraction(self, fraction: float, seed: int = 0) -> DataSource:
        """A stratified random fraction of the samples (at least one per class)."""
        rng = np.random.default_rng(seed)
        keep = []
        for c in self.classes:
            members = np.flatnonzero(self.labels == c)
            count = max(1, int(round(fraction * len(members))))
            keep.append(rng.choice(members, size=min(count, len(members)), replace=False))
        return self.subset(np.sort(np.concatenate(keep)))

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            yield self.samples(idx), self.labels[idx]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples at once (for the small data sets that training and attacks need)."""
        return self.samples(np.arange(len(self))), self.labels

    def shaped_for(self, input_shape: Sequence[int | str | None]) -> DataSource:
        """Reshape samples to a model input of the same size when only the layout of axes of size 1
        or a flattening differs (e.g. 8x8 digits for a model taking 64 features); else an error."""
        want = tuple(input_shape[1:])
        have = self.sample_shape
        if _matches(have, want):
            return self
        fixed = [d for d in want if isinstance(d, int) and d > 0]
        if len(fixed) == len(want) and int(np.prod(fixed)) == int(np.prod(have)):
            squeeze_have = [d for d in have if d != 1]
            squeeze_want = [d for d in fixed if d != 1]
            if squeeze_have == squeeze_want or len(squeeze_want) == 1:
                parent = self
                shape = tuple(fixed)
                return DataSource(self.name, self.labels,
                                  lambda idx: parent.samples(idx).reshape((len(idx), *shape)), shape)
        raise InputError(f"{self.name}: sample shape {list(have)} does not match the model input "
                         f"{['?' if not isinstance(d, int) or d <= 0 else d for d in want]}")


def _matches(have: tuple[int, ...], want: tuple) -> bool:
    if len(have) != len(want):
        return False
    return all(not isinstance(w, int) or w <= 0 or w == h for h, w in zip(have, want, strict=True))


def _ranges(values: Sequence[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


def parse_class_filter(text: str) -> list[tuple[int, int]]:
    """``1,3,5-7`` -> [(1, 1), (3, 3), (5, 7)]: inclusive ranges, never expanded (a range may be huge)."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        lo, hi = int(low), int(high or low)
        if hi < lo:
            raise InputError(f"class filter {one_line(text, 40)!r}: range {one_line(part, 40)} is empty")
        ranges.append((lo, hi))
    return ranges


def classes_in(ranges: Sequence[tuple[int, int]], limit: int) -> list[int]:
    """The classes of ``ranges``, all below ``limit`` (e.g. the model's number of classes), else an InputError."""
    if any(high >= limit for _, high in ranges):
        raise InputError(f"classes {_ranges_text(ranges)}: the model has classes 0-{limit - 1}")
    return sorted({c for low, high in ranges for c in range(low, high + 1)})


def _ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    return one_line(",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges), 60)


def split_spec(spec: str) -> tuple[str, list[tuple[int, int]] | None]:
    """A data argument's source and its class filter (None when it has none)."""
    head, sep, last = spec.rpartition(":")
    if sep and _CLASS_FILTER.match(last) and head:
        return head, parse_class_filter(last)
    return spec, None


def source_path(spec: str) -> Path | None:
    """The file or folder a data argument reads; None for a built-in data set."""
    source, _ = split_spec(spec)
    return None if source in BUILTINS else Path(source)


def load_data(spec: str, image_options: ImageOptions | None = None, max_per_class: int | None = None) -> DataSource:
    """Open a data argument (see the module docstring)."""
    source, classes = split_spec(spec)
    data = _open_source(source, image_options or ImageOptions())
    if len(data) == 0:
        raise InputError(f"{source}: data set is empty")
    if classes is not None:
        data = data.filter_classes(classes)
    data = data.cap_per_class(max_per_class)
    # a worker may start in another folder: a relative path is made absolute (its class filter kept)
    absolute = spec if source in BUILTINS else str(Path(source).absolute()) + spec[len(source):]
    data.origin = DataOrigin(absolute, image_options or ImageOptions(), max_per_class)
    return data


def _open_source(source: str, image_options: ImageOptions) -> DataSource:
    if source in BUILTINS:
        return load_digits(source.partition(":")[2] or "all")
    path = Path(source)
    if path.is_dir():
        return _load_image_folder(path, image_options)
    if path.suffix == ".npz":
        if not path.is_file():
            raise InputError(f"{path}: no such data file")
        return _load_npz(path)
    if path.exists():
        raise InputError(f"{path}: data must be a .npz file or a folder of class sub-folders of images")
    if ":" in source or "/" not in source and "." not in source:
        raise InputError(f"{source!r}: unknown data set (built-ins: {', '.join(BUILTINS)}; "
                         "or a .npz file or an image folder, optionally followed by :CLASSES such as :0-4)")
    raise InputError(f"{path}: no such data file or folder")


def _check_labels(name: str, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1:
        raise InputError(f"{name}: labels 'y' must be one label per sample, got shape {list(labels.shape)}")
    whole_floats = labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    if labels.dtype.kind in "iu" or whole_floats:
        out = labels.astype(np.int64)
    else:
        raise InputError(f"{name}: labels 'y' must be integers, got {labels.dtype} values")
    if out.size and out.min() < 0:
        raise InputError(f"{name}: labels 'y' must be non-negative, found {int(out.min())}")
    return out


def _load_npz(path: Path) -> DataSource:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise InputError(f"{path}: a data .npz needs arrays 'x' and 'y', found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({one_line(str(exc), 120)})") from None
    if x.ndim == 0 or y.ndim == 0:
        raise InputError(f"{path}: 'x' and 'y' must hold one entry per sample, got single values")
    if x.dtype.kind not in "fiub":
        raise InputError(f"{path}: samples 'x' must be numeric, got {x.dtype}")
    if len(x) != len(y):
        raise InputError(f"{path}: 'x' has {len(x)} samples but 'y' has {len(y)} labels")
    labels = _check_labels(str(path), y)
    x = x.astype(np.float32, copy=False)
    return DataSource.from_arrays(str(path), x, labels)


def load_digits(split: str = "all") -> DataSource:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], shaped (1, 8, 8). Fixed stratified splits: "test" is
    30% of the whole, "val" 20% of the remaining 70%, "train" the rest; "all" is every sample."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    index = np.arange(len(y)) if split == "all" else digits_split(y)[split]
    name = "digits" if split == "all" else f"digits:{split}"
    return DataSource.from_arrays(name, x[index], y[index])


def digits_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Sorted sample indices of the "train", "val" and "test" splits: disjoint, together every sample. The test
    split is the one drawn before the validation split existed, so carving "val" leaves it unchanged."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    training, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                      stratify=labels)
    train, val = train_test_split(training, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                  stratify=labels[training])
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _load_image_folder(root: Path, options: ImageOptions) -> DataSource:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise InputError(f"{root}: an image folder needs one sub-folder per class")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{class_dir}: class folder has no images")
        files += images
        labels += [label] * len(images)
    first = _read_image(files[0], options)

    def load(idx: np.ndarray) -> np.ndarray:
        batch = np.zeros((len(idx), *first.shape), np.float32)
        for row, i in enumerate(idx):
            image = _read_image(files[i], options)
            if image.shape != first.shape:
                raise InputError(f"{files[i]}: image shape {list(image.shape)} differs from "
                                 f"{list(first.shape)} of {files[0].name}; give --image-size H W")
            batch[row] = image
        return batch

    return DataSource(str(root), np.asarray(labels, np.int64), load, tuple(first.shape))


def _read_image(path: Path, options: ImageOptions) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if options.grayscale else "RGB")
            if options.size is not None:
                image = image.resize((options.size[1], options.size[0]))
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({one_line(str(exc), 120)})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    for option, values in (("--mean", options.mean), ("--std", options.std)):
        if values is not None and len(values) not in (1, array.shape[2]):
            raise InputError(f"{option}: {len(values)} values for images of {array.shape[2]} channels")
    if options.mean is not None:
        array = array - np.asarray(options.mean, np.float32)
    if options.std is not None:
        array = array / np.asarray(options.std, np.float32)
    return array if options.channels_last else np.ascontiguousarray(array.transpose(2, 0, 1))
