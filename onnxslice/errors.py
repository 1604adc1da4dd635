"""The one error type users see: bad input, reported as one line, exit code 2; and how a message becomes one line."""

from __future__ import annotations

#: The longest message a command prints; longer ones (lists of classes, onnxruntime's errors) are cut.
MESSAGE_CHARS = 300


class InputError(Exception):
    """Bad input or usage: a file, node, option or data set that cannot be used as given.

    The message is one line that names what is wrong; the command line prints it and exits with 2.
    """


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed) and at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's multi-line report), cut to one short line."""
    lines = str(exc).strip().splitlines()
    return one_line(lines[0]) if lines else type(exc).__name__
