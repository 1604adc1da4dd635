"""Run ONNX models with onnxruntime: provider choice, the class-score output, batched inference.

The execution provider is chosen automatically: CUDA when onnxruntime-gpu is installed and a GPU
answers, else the CPU. ``device="cpu"`` or ``"cuda"`` forces one (``cuda`` without a GPU is an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxslice.data import DataSource
from onnxslice.errors import InputError, first_line
from onnxslice.graph_utils import data_inputs, dims
from onnxslice.large import FLOAT_TYPES, through_file
from onnxslice.precision import float_boundaries

DEVICES = ("auto", "cpu", "cuda")
#: CPUs this process's work may keep busy (None: every core): the threads of the sessions it creates when a call
#: names none, and of the profiler's CKA pool. A Ray worker sets it to the CPUs its task holds, so that two tasks on
#: two cores do not run four busy threads.
task_cpus: int | None = None
# graph optimisers log through the default logger, not the session's: e.g. a warning per Unsqueeze of a transformer's
# attention that they cannot remove, dozens of lines on stderr per session; errors are still shown
ort.set_default_logger_severity(3)
#: onnxruntime's names of the input types a model may take -> numpy's.
_NUMPY_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
                "tensor(double)": np.dtype(np.float64)}


def providers_for(device: str = "auto") -> list[str]:
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if not has_cuda:
            raise InputError("--device cuda: onnxruntime has no CUDA provider here (install onnxruntime-gpu "
                             "in place of onnxruntime, see README)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"--device {device}: expected one of {', '.join(DEVICES)}")


def make_session(model: onnx.ModelProto, device: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime session of ``model``; one that takes or gives bfloat16, which numpy has no type for, takes
    and gives float32 instead (:func:`onnxslice.precision.float_boundaries`)."""
    model = float_boundaries(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads or task_cpus:
        options.intra_op_num_threads = threads or task_cpus
    try:
        return through_file(model, lambda source: ort.InferenceSession(source, options,
                                                                       providers=providers_for(device)))
    except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:  # type: ignore[attr-defined]
        raise InputError(f"onnxruntime cannot load the model: {first_line(exc)}") from None


def session_input_type(session: ort.InferenceSession) -> np.dtype:
    """The numpy type of a session's first input (float32 unless the model says otherwise)."""
    return _NUMPY_TYPES.get(session.get_inputs()[0].type, np.dtype(np.float32))


def run_session(session: ort.InferenceSession, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run a session on any number of samples ``x``, cast to its input's type (a float16 model takes float16); a
    model exported with a fixed batch size runs batch by batch at that size, the last batch padded with zeros."""
    x = x.astype(session_input_type(session), copy=False)
    name, size = session.get_inputs()[0].name, static_batch(session)
    if size is None or len(x) == size:
        return session.run(outputs, {name: x})
    padded = np.zeros((-(-len(x) // size) * size, *x.shape[1:]), x.dtype)
    padded[:len(x)] = x
    parts = [session.run(outputs, {name: padded[i:i + size]}) for i in range(0, len(padded), size)]
    return [np.concatenate(arrays)[:len(x)] for arrays in zip(*parts, strict=True)]


def static_batch(session: ort.InferenceSession) -> int | None:
    """The batch size a model exported with a fixed one takes, else None."""
    first = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None
    return first if isinstance(first, int) and first > 0 else None


def input_shape(model: onnx.ModelProto) -> list[int | str]:
    """Shape of the single data input: ints where fixed, the symbolic name (or '?') where dynamic."""
    inputs = data_inputs(model.graph)
    if len(inputs) != 1:
        raise InputError(f"model has {len(inputs)} data inputs; onnxslice handles classifiers with one input")
    return [size if size is not None else "?" for size in dims(inputs[0])]


def input_name(model: onnx.ModelProto) -> str:
    return data_inputs(model.graph)[0].name


def scores_output(model: onnx.ModelProto) -> tuple[str, int]:
    """The output holding per-class scores (logits or probabilities): the first float tensor of rank 2.

    Exporters such as skl2onnx add a label output beside the probabilities; those are skipped.
    Returns the output name and the number of classes.
    """
    for out in model.graph.output:
        tensor = out.type.tensor_type
        if not out.type.HasField("tensor_type") or tensor.elem_type not in FLOAT_TYPES:
            continue
        shape = dims(out)
        if len(shape) == 2 and isinstance(shape[1], int):
            return out.name, shape[1]
    raise InputError("model has no class-score output (a float tensor of shape [N, classes]); "
                     "for scikit-learn exports use skl2onnx's zipmap=False")


def scores_index(model: onnx.ModelProto) -> int:
    """The position of the class-score output (:func:`scores_output`) among the model's outputs."""
    return [out.name for out in model.graph.output].index(scores_output(model)[0])


@dataclass
class Runner:
    """A model ready to run: its session, input name and shape, and the class-score output."""

    model: onnx.ModelProto
    session: ort.InferenceSession
    input: str
    input_shape: list[int | str]
    output: str
    num_classes: int

    @classmethod
    def create(cls, model: onnx.ModelProto, device: str = "auto") -> Runner:
        output, num_classes = scores_output(model)
        return cls(model, make_session(model, device), input_name(model), input_shape(model), output, num_classes)

    def prepare(self, data: DataSource) -> DataSource:
        """Check that the data fits this model: sample shape and labels the model can output."""
        data = data.shaped_for(self.input_shape)
        if len(data) and int(data.labels.max()) >= self.num_classes:
            raise InputError(f"{data.name}: label {int(data.labels.max())} cannot be output by the model "
                             f"({self.num_classes} classes)")
        return data

    def run(self, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        """The outputs for samples ``x``, as float32 where the model computes in less (see :func:`run_session`)."""
        results = run_session(self.session, x, outputs or [self.output])
        return [r.astype(np.float32) if r.dtype.kind == "f" and r.itemsize < 4 else r for r in results]

    def scores(self, data: DataSource, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, y in data.batches(batch_size):
            yield self.run(x)[0], y


class ReusedOutputs:
    """Runs a session for the same outputs batch after batch into arrays it reuses (onnxruntime's I/O binding):
    no output is allocated and converted on every run, which took about a tenth of the time of a model as small
    as the digits CNN asked for five outputs. A result holds until the next call; copy what must outlive it."""

    def __init__(self, runner: Runner, outputs: list[str]) -> None:
        self.runner, self.outputs = runner, outputs
        self.binding = runner.session.io_binding()
        self.rows = -1
        self.arrays: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        session = self.runner.session
        if static_batch(session) is not None or session_input_type(session) != np.float32:
            return self.runner.run(x, self.outputs)  # binding reused arrays pays off for the common case only
        x = np.ascontiguousarray(x, np.float32)
        if len(x) != self.rows:  # the first batch of a size: an ordinary run gives the outputs' shapes and types
            self.arrays = self.runner.session.run(self.outputs, {self.runner.input: x})
            for name, array in zip(self.outputs, self.arrays, strict=True):
                self.binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
            self.rows = len(x)
            return self.arrays
        self.binding.bind_cpu_input(self.runner.input, x)
        self.runner.session.run_with_iobinding(self.binding)
        return self.arrays
