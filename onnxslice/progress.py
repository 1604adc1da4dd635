"""Progress bars on stderr, drawn only when stderr is a terminal (so that logs, pipes and JSON stay clean)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, progress: bool = True) -> tqdm:
    """A tqdm bar of ``total`` steps on stderr; disabled (drawing nothing) unless ``progress`` is set and stderr
    is a terminal. Use it as a context manager and call ``update(1)`` per step."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not (progress and sys.stderr.isatty()),
                dynamic_ncols=True)
