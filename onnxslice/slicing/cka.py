"""Linear CKA between a neuron subset and its whole layer, and the exact prefix scan over it.

For activations A (n samples × C neurons × S positions), per-neuron kernels K_j = A_j A_jᵀ and the
C × C matrix H[i, j] = ⟨K_i, K_j⟩_F = ‖A_iᵀ A_j‖²_F give, for a subset Ω of neurons,

    CKA(Ω) = Σ_{i∈Ω} Σ_j H[i, j] / sqrt(Σ_{i,j∈Ω} H[i, j] · Σ_{i,j} H[i, j]).

Centring A over samples gives the centred CKA of Kornblith et al. (2019); without it, the paper's Eq. 2.

Conventions (they matter for the semantic scan):

- A neuron that is constant over the samples (centred) or always zero (uncentred) has an exactly zero
  row in H: it adds nothing to any subset's CKA, so the scan never selects it (:func:`live_neurons`).
- The CKA of the empty set is 0; the CKA of a layer with H = 0 (nothing varies) is taken as 1 for
  every non-empty subset — any neuron represents a constant layer.
- "Exceeds Θ" is strict (``>``), as in the paper's Eq. 4.
"""

from __future__ import annotations

import numpy as np


def as_samples_neurons_positions(activation: np.ndarray, channel_axis: int) -> np.ndarray:
    """Reshape an activation batch (N, ...) to (N, C, S) with the neurons on axis 1."""
    moved = np.moveaxis(activation, channel_axis, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def prepared(acts: np.ndarray, centered: bool) -> np.ndarray:
    """Activations (n, C, S) in float64, centred over samples if asked.

    A neuron whose value at every position is the same for all samples is set to exactly zero when
    centring: subtracting a floating-point mean would leave rounding noise where the kernel is zero.
    """
    a = np.asarray(acts, dtype=np.float64)
    if not centered:
        return a
    constant = (a == a[:1]).all(axis=(0, 2))
    a = a - a.mean(axis=0, keepdims=True)
    a[:, constant] = 0.0
    return a


def similarity_matrix(acts: np.ndarray, centered: bool = True) -> np.ndarray:
    """H (C × C, float64) from activations (n, C, S), in whichever space is cheaper.

    Feature space (dense layers, small S): H[i, j] = ‖A_iᵀ A_j‖²_F from the (C·S)² feature Gram.
    Sample space (conv layers, large S): H = V Vᵀ with V[j] = vec(K_j), the n × n kernels.
    """
    a = prepared(acts, centered)
    n, c, s = a.shape
    if (c * s) ** 2 <= c * n * n:
        flat = a.reshape(n, c * s)
        gram = (flat.T @ flat).reshape(c, s, c, s)
        return np.einsum("isjt,isjt->ij", gram, gram)
    kernels = np.matmul(a.transpose(1, 0, 2), a.transpose(1, 2, 0)).reshape(c, n * n)  # batched BLAS: K_j = A_j A_jᵀ
    return kernels @ kernels.T


def live_neurons(h: np.ndarray) -> np.ndarray:
    """Boolean mask of the neurons with a non-zero row in H (H[j, j] = ‖A_jᵀ A_j‖²_F > 0)."""
    return np.diag(h) > 0


def prefix_cka(h: np.ndarray, order: np.ndarray) -> np.ndarray:
    """CKA of every prefix of ``order`` (neurons by decreasing contribution): entry k-1 is CKA(order[:k]).

    Exact and O(C²) once H is known: the numerator adds one row sum per step, the quadratic term adds
    one bordered block. Prefixes with a zero quadratic term (only dead neurons so far) have CKA 0.
    """
    order = np.asarray(order, dtype=np.int64)
    total = h.sum()
    if total <= 0:
        return np.ones(len(order))
    numerator = np.cumsum(h.sum(axis=1)[order])
    hp = h[np.ix_(order, order)]
    # Σ_{i,j<k} hp[i,j] grows by 2·Σ_{j<k-1} hp[k-1, j] + hp[k-1, k-1] at step k.
    lower = np.tril(hp, k=-1).sum(axis=1)
    quadratic = np.cumsum(2.0 * lower + np.diag(hp))
    denominator = np.sqrt(np.maximum(quadratic, 0.0) * total)
    return np.divide(numerator, denominator, out=np.zeros(len(order)), where=denominator > 0)


def cka_from_scratch(acts: np.ndarray, subset: np.ndarray, centered: bool = True) -> float:
    """Reference CKA of a neuron subset with the whole layer, straight from the paper's definition.

    The embedding landscapes are the n × n Gram matrices M = X Xᵀ of the flattened activations of the
    subset and of the whole layer (the paper's Eq. 1); centred CKA double-centres them (H M H with
    H = I - 1/n); CKA = ⟨M_Ω, M⟩_F / (‖M_Ω‖_F ‖M‖_F) (its Eq. 2). Independent of the H-matrix route.
    """
    a = np.asarray(acts, dtype=np.float64)
    subset = np.asarray(subset, dtype=np.int64)
    if len(subset) == 0:
        return 0.0
    n = len(a)
    x, y = a[:, subset].reshape(n, -1), a.reshape(n, -1)
    m_sub, m_all = x @ x.T, y @ y.T
    if centered:
        centring = np.eye(n) - 1.0 / n
        m_sub, m_all = centring @ m_sub @ centring, centring @ m_all @ centring
    denominator = np.sqrt((m_sub * m_sub).sum() * (m_all * m_all).sum())
    return float((m_sub * m_all).sum() / denominator) if denominator > 0 else 0.0


def smallest_prefix(h: np.ndarray, order: np.ndarray, theta: float, step: int = 1) -> int:
    """Smallest prefix length k (a multiple of ``step``, or all of ``order``) whose CKA exceeds ``theta``.

    Algorithm 1 of the paper with selection interval ``step``; all of ``order`` when no prefix passes.
    """
    if len(order) == 0:
        return 0
    cka = prefix_cka(h, order)
    sizes = np.arange(step, len(order) + step, step).clip(max=len(order))
    passing = sizes[cka[sizes - 1] > theta]
    return int(passing[0]) if len(passing) else len(order)
