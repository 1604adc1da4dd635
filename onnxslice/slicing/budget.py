"""Slicing to a size budget: the strategy's parameter that makes the restructured model a given fraction.

The strategy ranks the classes once; the restructured size is then a step function of its parameter (Θ or the
ratio) that never decreases, with a step at each class's key. Bisection over those keys finds the two steps
around the target, each evaluated by the size terms of :mod:`onnxslice.surgery.cost` (no model runs), and the
closer one is taken when it lies within ``tolerance`` of the target; otherwise the target cannot be reached
and an InputError names the nearest fraction that can.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxslice.errors import InputError
from onnxslice.graph import find_neuron_layers
from onnxslice.profiling.artifact import Profile
from onnxslice.slicing.artifact import Slice
from onnxslice.slicing.groups import SelectionGroups
from onnxslice.slicing.strategies import Ranking, Strategy, choose, make_strategy, select, slice_from_ranking

DEFAULT_ROUND_TO = 8
DEFAULT_TOLERANCE = 0.02


def slice_to_budget(model: onnx.ModelProto, profile: Profile, metric: str, strategy: str, *,
                    target_params: float | None = None, target_macs: float | None = None,
                    round_to: int = DEFAULT_ROUND_TO, tolerance: float = DEFAULT_TOLERANCE,
                    groups: SelectionGroups | None = None, step: int = 1, centered: bool = True,
                    representation: str | None = None) -> Slice:
    """The slice of ``model`` whose restructured parameters (or MACs) are ``target_*`` of the original's,
    within ± ``tolerance`` (absolute fraction). ``groups`` may be passed when already computed for ``model``."""
    kind, target = budget_kind(target_params, target_macs)
    if metric not in profile.metrics:
        raise InputError(f"--metric {metric}: not in the profile (it has {', '.join(profile.metrics)})")
    chosen = make_strategy(strategy, step=step, centered=centered, representation=representation)
    groups = groups or SelectionGroups.of_model(model)
    ranked = chosen.rank(profile, metric, groups)
    value, reached = bisect(ranked, chosen, groups, kind, target, round_to)
    if abs(reached - target) > tolerance:
        raise InputError(f"--target-{kind} {target:g}: not reachable with --strategy {strategy} and --round-to "
                         f"{round_to} (the nearest restructured fraction is {reached:.4f})")
    piece = slice_from_ranking(profile, metric, chosen.with_value(value), groups, ranked, round_to)
    piece.target = {"metric": kind, "fraction": target}
    return piece


def budget_kind(target_params: float | None, target_macs: float | None) -> tuple[str, float]:
    """("params" | "macs", fraction) from the two options, exactly one of which must be given, in (0, 1]."""
    if (target_params is None) == (target_macs is None):
        raise InputError("give exactly one of --target-params and --target-macs")
    kind, target = ("params", target_params) if target_params is not None else ("macs", target_macs)
    if not 0.0 < target <= 1.0:
        raise InputError(f"--target-{kind} must be in (0, 1], got {target}")
    return kind, float(target)


def candidate_values(ranked: Ranking, strategy: Strategy) -> np.ndarray:
    """Parameter values at which the kept set changes, increasing (the smallest keeps only what must stay)."""
    keys = np.unique(ranked.keys[-1][np.isfinite(ranked.keys[-1])])
    if strategy.parameter == "theta":
        return np.unique(np.concatenate([[0.0], keys[(keys >= 0) & (keys <= 1)], [1.0]]))
    # a ratio keeps the keys strictly below it: just above each key, and 1 (everything)
    return np.unique(np.concatenate([np.minimum(np.nextafter(keys[keys >= 0], 2.0), 1.0), [1.0]]))


def bisect(ranked: Ranking, strategy: Strategy, groups: SelectionGroups, kind: str, target: float,
           round_to: int) -> tuple[float, float]:
    """The candidate value whose restructured ``kind`` fraction is nearest ``target``, and that fraction."""
    values = candidate_values(ranked, strategy)

    def fraction(index: int) -> float:
        return groups.size(choose(ranked, float(values[index]), groups, round_to))[f"{kind}_fraction"]

    low, high = 0, len(values) - 1  # invariant: fraction(low) < target <= fraction(high), unless at an end
    low_fraction, high_fraction = fraction(low), fraction(high)
    if low_fraction >= target:
        return float(values[low]), low_fraction
    if high_fraction < target:
        return float(values[high]), high_fraction
    while high - low > 1:
        middle = (low + high) // 2
        middle_fraction = fraction(middle)
        if middle_fraction < target:
            low, low_fraction = middle, middle_fraction
        else:
            high, high_fraction = middle, middle_fraction
    if target - low_fraction < high_fraction - target:
        return float(values[low]), low_fraction
    return float(values[high]), high_fraction


def slice_model(model: onnx.ModelProto, profile: Profile, metric: str, strategy: str, *,
                theta: float | None = None, ratio: float | None = None, step: int = 1, centered: bool = True,
                representation: str | None = None, round_to: int = DEFAULT_ROUND_TO, target_params: float | None = None,
                target_macs: float | None = None, tolerance: float = DEFAULT_TOLERANCE,
                groups: SelectionGroups | None = None) -> Slice:
    """The slice ``onnxslice slice`` writes: at Θ / the ratio, or to a size budget (``target_*``), deciding on
    the model's channel groups and reporting the size restructure reaches."""
    if target_params is None and target_macs is None:
        chosen = make_strategy(strategy, theta, ratio, step, centered, representation)
        piece = select(profile, metric, chosen, groups or SelectionGroups.of_model(model), round_to)
    elif theta is not None or ratio is not None:
        raise InputError("--theta / --ratio and --target-params / --target-macs exclude each other: "
                         "a budget chooses the parameter")
    else:
        piece = slice_to_budget(model, profile, metric, strategy, target_params=target_params,
                                target_macs=target_macs, round_to=round_to, tolerance=tolerance, groups=groups,
                                step=step, centered=centered, representation=representation)
    piece.name_layers(find_neuron_layers(model))
    return piece
