"""Set up in every Ray worker of the tests (``worker_process_setup_hook``): a worker that really dies, once, when a
test asks for it — no hook in the library."""

from __future__ import annotations

import os

#: The environment variable naming the file whose existence arms the death: the worker that removes it dies.
ARM = "ONNXSLICE_TEST_DIE_WHEN"


def die_once_when_armed() -> None:
    """Make this worker's next profiling block, once the armed file exists, end the process (``os._exit``) in the
    middle of its shard: the first worker to remove the file dies, every other one carries on."""
    from onnxslice.profiling import profiler

    add = profiler.CategoryMeans.add

    def add_or_die(self: profiler.CategoryMeans, rows, values) -> None:
        try:
            os.remove(os.environ[ARM])
        except (FileNotFoundError, KeyError):
            return add(self, rows, values)
        os._exit(1)

    profiler.CategoryMeans.add = add_or_die
