"""Wall-clock timing for the benchmark scripts: best of several runs (these machines are shared and noisy)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def best_time(run: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` wall-clock timings of ``run()``, in seconds."""
    return interleaved(repeats, {"run": run})["run"]


def interleaved(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each run, the runs taking turns so that a slow spell of the machine hits them all."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of one run's time over another's in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def last_line_in_fresh_process(script: str, *args: str) -> str:
    """Run ``script`` with ``args`` in a new Python process (nothing left over from earlier runs) and return the
    last line it prints."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]
