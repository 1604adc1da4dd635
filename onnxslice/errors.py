"""Every error type onnxslice raises on purpose, and how a message becomes one line.

Users see two: :class:`InputError` (bad input, exit code 2) and :class:`VerificationError` (a rewrite we refuse to
write, exit code 1); ``cli.common.reports_errors`` maps them. :class:`SparsityUnreachable` never reaches the user:
the compression loop stops on it and reports why.
"""

from __future__ import annotations

#: The longest message a command prints; longer ones (lists of classes, onnxruntime's errors) are cut.
MESSAGE_CHARS = 300


class InputError(Exception):
    """Bad input or usage: a file, node, option or data set that cannot be used as given.

    The message is one line that names what is wrong; the command line prints it and exits with 2.
    """


class VerificationError(Exception):
    """The restructured (or re-exported) model is not what the mask (or the trained module) computes: our failure,
    not the user's input; the command line prints it and exits with 1."""


class SparsityUnreachable(ValueError):
    """The method cannot prune that much (e.g. Uniform+ once every prunable layer is empty)."""


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed) and at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's multi-line report), cut to one short line."""
    lines = str(exc).strip().splitlines()
    return one_line(lines[0]) if lines else type(exc).__name__
