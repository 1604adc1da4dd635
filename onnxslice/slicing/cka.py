"""Linear CKA between a neuron subset and its whole layer, and the exact prefix scan over it.

For activations A (n samples × C neurons × S positions), per-neuron kernels K_j = A_j A_jᵀ and the
C × C matrix H[i, j] = ⟨K_i, K_j⟩_F = ‖A_iᵀ A_j‖²_F give, for a subset Ω of neurons,

    CKA(Ω) = Σ_{i∈Ω} Σ_j H[i, j] / sqrt(Σ_{i,j∈Ω} H[i, j] · Σ_{i,j} H[i, j]).

Centring A over samples gives the centred CKA of Kornblith et al. (2019); without it, the paper's Eq. 2.
"""

from __future__ import annotations

import numpy as np


def as_samples_neurons_positions(activation: np.ndarray, channel_axis: int) -> np.ndarray:
    """Reshape an activation batch (N, ...) to (N, C, S) with the neurons on axis 1."""
    moved = np.moveaxis(activation, channel_axis, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def similarity_matrix(acts: np.ndarray, centered: bool = True) -> np.ndarray:
    """H (C × C, float64) from activations (n, C, S), in whichever space is cheaper.

    Feature space (dense layers, small S): H[i, j] = ‖A_iᵀ A_j‖²_F from the (C·S)² feature Gram.
    Sample space (conv layers, large S): H = V Vᵀ with V[j] = vec(K_j), the n × n kernels.
    """
    a = np.asarray(acts, dtype=np.float64)
    if centered:
        a = a - a.mean(axis=0, keepdims=True)
    n, c, s = a.shape
    if (c * s) ** 2 <= c * n * n:
        flat = a.reshape(n, c * s)
        gram = (flat.T @ flat).reshape(c, s, c, s)
        return np.einsum("isjt,isjt->ij", gram, gram)
    kernels = np.einsum("acs,bcs->cab", a, a).reshape(c, n * n)
    return kernels @ kernels.T


def prefix_cka(h: np.ndarray, order: np.ndarray) -> np.ndarray:
    """CKA of every prefix of ``order`` (neurons by decreasing contribution): entry k-1 is CKA(order[:k]).

    Exact and O(C²): the numerator adds row sums, the quadratic term adds one bordered block per step.
    """
    hp = h[np.ix_(order, order)]
    total = hp.sum()
    if total <= 0:
        return np.ones(len(order))  # a layer that is constant on these samples: any subset represents it
    numerator = np.cumsum(hp.sum(axis=1))
    # Σ_{i,j<k} hp[i,j] grows by 2·Σ_{j<k-1} hp[k-1, j] + hp[k-1, k-1] at step k.
    lower = np.tril(hp, k=-1).sum(axis=1)
    quadratic = np.cumsum(2.0 * lower + np.diag(hp))
    with np.errstate(divide="ignore", invalid="ignore"):
        cka = numerator / np.sqrt(np.maximum(quadratic, 0.0) * total)
    return np.nan_to_num(cka, nan=0.0)


def cka_from_scratch(acts: np.ndarray, subset: np.ndarray, centered: bool = True) -> float:
    """Reference CKA of a neuron subset with the whole layer, straight from the activations.

    Linear CKA of the two representations X = A[:, Ω] and Y = A (flattened per sample):
    ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), with the per-neuron kernels summed over positions.
    """
    a = np.asarray(acts, dtype=np.float64)
    if centered:
        a = a - a.mean(axis=0, keepdims=True)
    kernel = lambda idx: np.einsum("acs,bcs->ab", a[:, idx], a[:, idx])  # noqa: E731
    k_sub, k_all = kernel(np.asarray(subset)), kernel(np.arange(a.shape[1]))
    denominator = np.sqrt((k_sub * k_sub).sum() * (k_all * k_all).sum())
    return float((k_sub * k_all).sum() / denominator) if denominator > 0 else 1.0


def smallest_prefix(h: np.ndarray, order: np.ndarray, theta: float, step: int = 1) -> int:
    """Smallest prefix length k (a multiple of ``step``, or all) whose CKA exceeds ``theta``."""
    cka = prefix_cka(h, order)
    sizes = np.arange(step, len(order) + step, step).clip(max=len(order))
    passing = sizes[cka[sizes - 1] > theta]
    return int(passing[0]) if len(passing) else len(order)
