"""Small file helpers shared by every stage: hashing and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from onnxslice.errors import InputError


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_path(output: str | Path, *inputs: str | Path | None) -> Path:
    """Refuse to overwrite an input and fail early when the output folder does not exist."""
    out = Path(output)
    for given in inputs:
        if given is not None and Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise InputError(f"{out}: output would overwrite an input file")
    if not out.parent.exists():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    return out


def write_atomically(output: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``output`` only once it is complete.

    A failure anywhere leaves no file behind: neither the output nor the temporary file.
    """
    out = Path(output)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the output the usual mode
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
