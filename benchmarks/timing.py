"""Wall-clock timing for the benchmark scripts: several rounds (these machines are shared and noisy)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def best_time(run: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` wall-clock timings of ``run()``, in seconds."""
    return interleaved(repeats, {"run": run})["run"]


def rounds(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds of each run in each of ``repeats`` rounds, the runs taking turns within a round so that a slow
    spell of the machine hits them all."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def interleaved(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each run over interleaved rounds."""
    return {name: min(times) for name, times in rounds(repeats, runs).items()}


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of one run's time over another's in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
