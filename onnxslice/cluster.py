"""Work spread over a Ray cluster (the optional extra ``onnxslice[ray]``): profiles in shards, and the evaluations
of ``sweep`` and ``compress`` in parallel.

Nothing here schedules or moves data itself. Ray runs each piece of work as a task (a CPU each, or a GPU each
where the cluster has GPUs and the device allows them), runs a task again when its worker process dies
(``max_retries``), and holds the model in its object store, from which every worker reads it. A worker opens the
data itself from its :class:`~onnxslice.data.DataOrigin` (so the same file or folder must be readable on every
node): only indices, settings and statistics travel. A Python exception raised by a task is not retried (it would
fail the same way again, e.g. bad input); it cancels the other tasks and is raised here as itself.

Ray is imported only when a cluster is asked for, so the command line starts as fast without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from onnxslice.errors import InputError

if TYPE_CHECKING:
    import onnx
    from tqdm import tqdm

    from onnxslice.data import DataOrigin, DataSource

log = logging.getLogger("onnxslice")

#: ``--ray`` without an address: a Ray started on this machine for the command, and stopped after it.
LOCAL = "local"
INSTALL = "pip install onnxslice[ray]"
#: Times a task is run again when its worker process dies (killed, out of memory, its node lost).
MAX_RETRIES = 3
#: CPUs each task holds; its onnxruntime session (and PyTorch) run that many threads.
CPUS_PER_TASK = 1


def import_ray() -> Any:
    """The ``ray`` module, or an InputError naming the option and how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray: Ray is not installed; install it with {INSTALL}") from None
    return ray


@dataclass
class Cluster:
    """A connected Ray and how this job's tasks use it."""

    ray: Any
    use_gpus: bool  #: each task holds a GPU (and runs on CUDA) rather than only a CPU
    startup_seconds: float  #: spent starting or connecting to Ray (0 when this process was already connected)

    @property
    def slots(self) -> int:
        """Tasks that can run at once: the cluster's GPUs, or its CPUs over those each task holds."""
        resources = self.ray.cluster_resources()
        if self.use_gpus:
            return max(1, int(resources.get("GPU", 0)))
        return max(1, int(resources.get("CPU", 1) // CPUS_PER_TASK))

    def put(self, value: object) -> Any:
        """``value`` in the object store, read from there by every task given the returned reference."""
        return self.ray.put(value)

    def run(self, function: Callable[..., Any], calls: Sequence[tuple], bar: tqdm | None = None,
            steps: Sequence[int] | None = None) -> list[Any]:
        """``function(*call)`` for every call, as Ray tasks, their results in the order of ``calls``. ``bar``
        advances by ``steps[i]`` (default 1) when call i has finished. The first task that raises cancels the rest
        and its exception is raised here, as the task raised it."""
        ray = self.ray
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, num_cpus=CPUS_PER_TASK,
                            num_gpus=1 if self.use_gpus else 0)(_in_worker)
        refs = [remote.remote(function, CPUS_PER_TASK, *call) for call in calls]
        position = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # raises the task's error as soon as it fails
                if bar is not None:
                    bar.update(steps[position[done[0]]] if steps is not None else 1)
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            _cancel(ray, pending)
            raise exc.cause from None
        except BaseException:
            _cancel(ray, pending)
            raise

    def accuracies(self, models: Sequence[Any], data: DataSource, device: str, batch_size: int,
                   kept: Sequence[Mapping[str, Sequence[int]]] | None = None, bar: tqdm | None = None) -> list[float]:
        """Accuracy on ``data`` of each model (a ModelProto, or a reference from :meth:`put` to its bytes), with
        the neurons outside ``kept[i]`` masked when given; one task per model."""
        origin = worker_origin(data)
        refs = [model if not hasattr(model, "SerializeToString") else self.put(model.SerializeToString())
                for model in models]
        masks = kept if kept is not None else [None] * len(refs)
        return self.run(_accuracy, [(ref, mask, origin, device, batch_size) for ref, mask in zip(refs, masks,
                                                                                                strict=True)], bar)


@contextmanager
def connected(address: str, device: str = "auto") -> Iterator[Cluster]:
    """Ray, connected for the duration: a local Ray started here and stopped at the end (``"local"``), or the
    cluster at ``address`` (``"auto"``: the one this machine belongs to, as ``ray start`` set it up; or
    ``ray://host:port``, or ``host:port``). A process already connected (``ray.init`` called) keeps its
    connection. Tasks hold a GPU each when the cluster has GPUs and ``device`` is not ``"cpu"``."""
    ray = import_ray()
    owned = not ray.is_initialized()
    started = time.perf_counter()
    if owned:
        settings = {"logging_level": logging.WARNING, "log_to_driver": True}
        try:
            if address == LOCAL:
                ray.init(include_dashboard=False, **settings)
            else:
                ray.init(address=address, **settings)
        except (ConnectionError, ValueError) as exc:
            raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]})"
                             ) from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
        if device == "cuda" and not gpus:
            raise InputError("--device cuda: the Ray cluster has no GPU")
        cluster = Cluster(ray, gpus and device != "cpu", time.perf_counter() - started if owned else 0.0)
        log.info("Ray: %d task slots (%s), ready in %.1f s", cluster.slots, "GPUs" if cluster.use_gpus else "CPUs",
                 cluster.startup_seconds)
        yield cluster
    finally:
        if owned:
            ray.shutdown()


def worker_origin(data: DataSource) -> DataOrigin:
    """How a worker opens ``data`` itself, or an InputError when it was made in this process."""
    if data.origin is None:
        raise InputError(f"--ray: the data {data.name} was made in this process (arrays, a subset); Ray workers "
                         "open data themselves: give a data argument (a .npz, an image folder or a built-in name)")
    return data.origin


_opened: tuple[DataOrigin, DataSource] | None = None


def open_in_worker(origin: DataOrigin) -> DataSource:
    """The data set of ``origin``, opened once per worker process for the tasks that follow (Ray reuses workers)."""
    global _opened
    if _opened is None or _opened[0] != origin:
        _opened = (origin, origin.open())
    return _opened[1]


def _in_worker(function: Callable[..., Any], cpus: int, *args: Any) -> Any:
    """Run ``function`` in a Ray worker whose threads (onnxruntime's, the profiler's; Ray sets PyTorch's) keep busy
    only the ``cpus`` its task holds."""
    from onnxslice import runtime

    runtime.task_cpus = cpus
    return function(*args)


def _accuracy(model: bytes, kept: dict[str, Sequence[int]] | None, origin: DataOrigin, device: str,
              batch_size: int) -> float:
    import onnx

    from onnxslice.measure.evaluate import accuracy
    from onnxslice.surgery.mask import mask_model

    proto: onnx.ModelProto = onnx.load_from_string(model)
    if kept is not None:
        proto = mask_model(proto, kept)
    return accuracy(proto, open_in_worker(origin), device, batch_size)["accuracy"]


def _cancel(ray: Any, refs: Sequence[Any]) -> None:
    for ref in refs:
        ray.cancel(ref)
