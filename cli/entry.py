"""The console script: signals and Ctrl-C handled before anything heavy is imported, so that neither start-up
nor a running command answers them with a traceback or leaves a temporary file behind."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def main() -> None:
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _exit_on_signal)
    try:
        from onnxslice_cli.main import cli
    except KeyboardInterrupt:
        print("onnxslice: interrupted", file=sys.stderr)
        sys.exit(130)
    cli()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Unwind like Ctrl-C does (every ``finally`` runs: temporary files go), then exit with 128 + the signal."""
    print(f"onnxslice: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    raise SystemExit(128 + signum)
