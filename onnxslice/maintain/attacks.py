"""Adversarial samples from torchattacks (FGSM, PGD), for any valid input range.

torchattacks assumes inputs in [0, 1] and clamps to it. Data of another range [low, high] (normalised
images, standardised features) is attacked through a wrapper that maps [0, 1] onto [low, high], so the
attack clamps to the data's own range; ``eps`` is given in the data's units and rescaled accordingly.
Adding an attack is one entry in :data:`ATTACKS`.

A fixed eps is a different strength on every model: the paper's attacks bring its models to 18.53% (FGSM) and
3.8% (PGD) accuracy, where eps = 0.1 of the range leaves the bundled MLP at 45% (FGSM). :func:`calibrate_eps`
finds, per model, the smallest eps of a geometric grid that brings the accuracy on the attacked samples to
:data:`TARGET_ACCURACY` or below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchattacks
from torch import nn

from onnxslice.errors import InputError

#: name -> builder(model on [0, 1] inputs, eps in [0, 1] units) -> torchattacks attack
ATTACKS: dict[str, Callable[[nn.Module, float], torchattacks.attack.Attack]] = {
    "fgsm": lambda model, eps: torchattacks.FGSM(model, eps=eps),
    "pgd": lambda model, eps: torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / PGD_STEPS, steps=PGD_STEPS,
                                               random_start=True),
}
#: PGD iterations, with step 2.5 eps / steps (Madry et al.): enough to reach the edge of the eps ball and move along it.
PGD_STEPS = 40
#: Default budget as a fraction of the input range (0.1 on [0, 1] data) when eps is neither given nor calibrated.
DEFAULT_EPS_FRACTION = 0.1
#: Accuracy on the attacked samples that :func:`calibrate_eps` brings each attack down to (the paper's strength).
TARGET_ACCURACY = {"fgsm": 0.20, "pgd": 0.05}
#: The calibration grid: eps = range x EPS_GRID_START x EPS_GRID_FACTOR^k, up to the whole range.
EPS_GRID_START, EPS_GRID_FACTOR = 0.01, 1.25


@dataclass(frozen=True)
class AttackSpec:
    name: str
    eps: float  #: L-infinity budget in input units
    low: float  #: valid input range
    high: float

    @classmethod
    def create(cls, name: str, eps: float | None, clip: tuple[float, float] | None, x: np.ndarray) -> AttackSpec:
        """Fill in the range from the data's min and max and eps from the range where not given."""
        low, high = clip if clip else (float(x.min()), float(x.max()))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"--clip {low} {high}: the input range must be finite")
        if not high > low:
            raise InputError(f"--clip: the input range [{low}, {high}] is empty")
        eps = DEFAULT_EPS_FRACTION * (high - low) if eps is None else eps
        if not (math.isfinite(eps) and eps > 0):
            raise InputError(f"--eps must be a positive number, got {eps}")
        return cls(name, eps, low, high)


class _UnitRange(nn.Module):
    """``scores`` on inputs rescaled from [0, 1] to [low, high]."""

    def __init__(self, scores: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module, low: float,
                 high: float) -> None:
        super().__init__()
        self.owner = owner  # registered so that torchattacks finds the parameters (and their device)
        self.scores, self.low, self.high = scores, low, high

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scores(self.low + z * (self.high - self.low))


def adversarial(spec: AttackSpec, scores: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module,
                x: np.ndarray, y: np.ndarray, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Adversarial counterparts of ``x`` against ``scores`` (the module ``owner``'s class scores)."""
    span = spec.high - spec.low
    attack = ATTACKS[spec.name](_UnitRange(scores, owner, spec.low, spec.high), spec.eps / span)
    torch.manual_seed(seed)
    z = torch.from_numpy(np.clip((x - spec.low) / span, 0.0, 1.0).astype(np.float32))
    labels = torch.from_numpy(y.astype(np.int64))
    out = [attack(z[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]
    return (spec.low + torch.cat(out).detach().numpy() * span).astype(np.float32)


def calibrate_eps(spec: AttackSpec, scores: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module,
                  x: np.ndarray, y: np.ndarray, target: float | None = None, seed: int = 0) -> float:
    """The smallest eps of the grid (see :data:`EPS_GRID_START`) whose attack leaves ``scores`` at most ``target``
    (default: :data:`TARGET_ACCURACY` of the attack) accurate on ``x``; the whole input range when none does.
    Calibrate on the data the attack is trained or chosen on, not on the reported test data."""
    target = TARGET_ACCURACY[spec.name] if target is None else target
    span = spec.high - spec.low
    fraction = EPS_GRID_START
    while True:
        eps = min(fraction, 1.0) * span
        adv = adversarial(replace(spec, eps=eps), scores, owner, x, y, seed)
        if fraction >= 1.0 or _accuracy(scores, owner, adv, y) <= target:
            return eps
        fraction *= EPS_GRID_FACTOR


def _accuracy(scores: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``scores`` on ``x`` in eval mode (a forward pass in train mode would move BatchNorm's running
    statistics); ``owner`` is left in the mode it was in."""
    training = owner.training
    owner.eval()
    try:
        with torch.no_grad():
            predicted = torch.cat([scores(torch.from_numpy(x[i:i + 256])).argmax(1) for i in range(0, len(y), 256)])
    finally:
        owner.train(training)
    return float((predicted.numpy() == y).mean())
