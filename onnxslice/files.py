"""Small file helpers shared by every stage: hashing, output checks and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from onnxslice.errors import InputError


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_outputs(outputs: Iterable[tuple[str, str | Path]], inputs: Iterable[str | Path]) -> list[Path]:
    """Check every output before any work starts: it names a file (not a folder) in an existing, writable folder,
    it is none of the inputs nor inside an input folder, and no two outputs are the same file.

    ``outputs`` are (option, path) pairs, named in the errors; ``inputs`` are every file or folder the command
    reads. Symbolic links, ``..`` and hard links are seen through.
    """
    read = [Path(p) for p in inputs]
    checked: list[tuple[str, Path]] = []
    for option, given in outputs:
        out = Path(given)
        if out.is_dir():
            raise InputError(f"{option} {given}: is a folder; give a file name")
        folder = out.parent
        if not folder.is_dir():
            raise InputError(f"{option} {given}: folder {folder} does not exist")
        for source in read:
            if _same_file(out, source):
                raise InputError(f"{option} {given}: would overwrite the input {source}")
            if source.is_dir() and _inside(out, source):
                raise InputError(f"{option} {given}: is inside the input folder {source}")
        for other_option, other in checked:
            if _same_file(out, other):
                raise InputError(f"{option} {given}: the same file as {other_option}")
        _check_writable(option, given, folder)
        checked.append((option, out))
    return [out for _, out in checked]


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_writable(option: str, given: str | Path, folder: Path) -> None:
    """Create and remove a file in ``folder``: permission bits alone do not tell (root, read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"{option} {given}: cannot write in {folder} ({exc.strerror})") from None


def write_atomically(output: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``output`` only once it is complete.

    A failure anywhere leaves no file behind: neither the output nor the temporary file. An existing output is
    replaced and keeps its permission bits; a new one gets the usual mode (0666 less the umask).
    """
    out = Path(output)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, output_mode(out))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def output_mode(out: Path) -> int:
    """The mode a file written to ``out`` gets: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(out.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask
