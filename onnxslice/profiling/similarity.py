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

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import get_blas_funcs


def as_samples_neurons_positions(activation: np.ndarray, channel_axis: int, batch_axis: int = 0) -> np.ndarray:
    """Reshape an activation batch to (N, C, S): the samples (on ``batch_axis``, e.g. 1 for a sequence-first
    attention projection) on axis 0, the neurons (on ``channel_axis``) on axis 1, the other axes flattened in order."""
    rank = activation.ndim
    batch, channel = batch_axis % rank, channel_axis % rank
    if (batch, channel) != (0, 1):
        rest = [axis for axis in range(rank) if axis not in (batch, channel)]
        activation = activation.transpose([batch, channel, *rest])
    return activation.reshape(activation.shape[0], activation.shape[1], -1)


@dataclass(frozen=True)
class SimilarityStatistics:
    """The CKA statistics H of one layer on one set of samples, in both forms, compactly:

        H_centred = factor · centred,   H_uncentred = factor · (centred + correctionᵀ correction).

    ``centred`` is C × C and ``correction`` r × C with r ≤ n + 1 (the uncentred form differs from the centred
    one by a term of rank at most n + 1, see :func:`similarity_statistics`); both hold entries of moderate
    size in the precision they were computed in (float32 in profiles), ``factor`` (float64) carries the scale.
    """

    centred: np.ndarray
    correction: np.ndarray
    factor: float

    def matrix(self, centered: bool = True) -> np.ndarray:
        """H (C × C, float64), centred or uncentred."""
        h = self.centred.astype(np.float64)
        if not centered:
            correction = self.correction.astype(np.float64)
            h += correction.T @ correction
        return h * self.factor


def similarity_statistics(acts: np.ndarray, dtype: type[np.floating] = np.float32) -> SimilarityStatistics:
    """The CKA statistics of activations (n, C, S), centred and uncentred, from one product.

    With A_j = A_c,j + 1 μ_jᵀ (μ_j the mean over samples) and K_c,j 1 = 0, the cross terms cancel and

        H_uncentred = H_centred + 2n · UᵀU + n² · m mᵀ = H_centred + LᵀL,   U[:, j] = A_c,j μ_j,   m_j = ‖μ_j‖²,

    with L = [√(2n) U; n mᵀ] costing n·C·S. H_centred is computed from the centred activations scaled to at
    most 1 in magnitude (so that fourth powers neither overflow nor underflow) and cast to ``dtype``
    (float32: the activations' own precision, relative error about 1e-6; float64 to check the algebra), in
    whichever space needs fewer multiplications:

    - feature space, n·(CS)²/2: H[i, j] = ‖(A_cᵀ A_c)[block i, block j]‖²_F from the (CS)² Gram;
    - sample space, C·n²·S + C²·n²/4: H = V Vᵀ with V[j] = the upper triangle of K_j = A_c,j A_c,jᵀ,
      off-diagonal entries weighted √2 so that V[i]·V[j] = ⟨K_i, K_j⟩_F.

    A neuron whose value at every position is the same for all samples is centred to exactly zero:
    subtracting a floating-point mean would leave rounding noise where the kernel is zero.
    """
    a = np.asarray(acts)
    n, c, s = a.shape
    mean = a.mean(axis=0, dtype=np.float64)
    feature_space = n * (c * s) ** 2 / 2 <= c * n * n * s + (c * n) ** 2 / 4
    # x (n, C, S) is a view of the layout its route multiplies in, and no other array of its size is made on the way
    # (no transposed copy, no |x|, no per-element comparison): a tenth less time over resnet18's layers
    x = np.empty((n, c, s), dtype) if feature_space else np.empty((c, n, s), dtype).transpose(1, 0, 2)
    np.subtract(a, mean, out=x, casting="same_kind")  # in float64, rounded once to dtype
    x[:, (a.max(axis=0) == a.min(axis=0)).all(axis=1)] = 0.0
    scale = max(float(x.max()), -float(x.min())) or 1.0
    x *= dtype(1.0 / scale)
    mean = (mean / scale).astype(dtype)
    if feature_space:
        h = _feature_space(x.reshape(n, c * s), c, s)
    else:
        stacked = x.transpose(1, 0, 2)  # (C, n, S), contiguous
        kernels = np.matmul(stacked, stacked.transpose(0, 2, 1)).reshape(c, n * n)
        rows, cols = np.triu_indices(n)
        v = np.take(kernels, rows * n + cols, axis=1)
        del kernels
        v *= np.where(rows == cols, 1.0, np.sqrt(2.0)).astype(dtype)
        h = v @ v.T
    u = np.einsum("ncs,cs->nc", x, mean)
    correction = np.vstack([np.sqrt(2.0 * n, dtype=dtype) * u, n * np.einsum("cs,cs->c", mean, mean)])
    return SimilarityStatistics(h, correction, scale**4)


def _feature_space(flat: np.ndarray, c: int, s: int) -> np.ndarray:
    """H from the (C·S) × (C·S) Gram G = flatᵀ flat of activations (n, C·S).

    numpy computes ``flat.T @ flat`` as one triangle (BLAS's symmetric rank-k update) and copies it to the
    other. With several positions, one triangle is enough: the block sums B of its squares hold each
    off-diagonal pair once and each diagonal block's strict triangle once, so H = B + Bᵀ - diag(Σ_positions
    diag(G)²), and the copy is made on the C × C sums instead of the (C·S)² Gram.
    """
    if s == 1:
        return np.square(flat.T @ flat)
    triangle = get_blas_funcs("syrk", (flat,))(1.0, flat.T).T  # C-ordered, zero above the diagonal
    blocks = _block_sums(np.square(triangle), c, s)
    return blocks + blocks.T - np.diag(np.square(np.diagonal(triangle)).reshape(c, s).sum(axis=1))


def _block_sums(matrix: np.ndarray, c: int, s: int) -> np.ndarray:
    """(C, C) sums of the S × S blocks of a (C·S) × (C·S) matrix, as two products with ones."""
    ones = np.ones(s, matrix.dtype)
    return (ones @ matrix.reshape(c, s, c * s)).reshape(c, c, s) @ ones


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


def linear_cka(x: np.ndarray, y: np.ndarray, centered: bool = True) -> float:
    """Linear CKA of two representations of the same n samples (n × anything each), straight from the paper's
    definition: the embedding landscapes are the n × n Gram matrices K = X Xᵀ and L = Y Yᵀ of the flattened
    representations (the paper's Eq. 1); CKA = ⟨K, L⟩_F / (‖K‖_F ‖L‖_F) (its Eq. 2). Centred (Kornblith et al.
    2019) double-centres K and L (H K H with H = I - 1/n), here by centring each feature over the samples first.
    0 when either Gram matrix is zero."""
    def gram(a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(a), -1).astype(np.float64)
        if centered:
            a = a - a.mean(axis=0)
        return a @ a.T

    k, m = gram(x), gram(y)
    denominator = np.linalg.norm(k) * np.linalg.norm(m)
    return float(np.sum(k * m) / denominator) if denominator > 0 else 0.0


def cka_from_scratch(acts: np.ndarray, subset: np.ndarray, centered: bool = True) -> float:
    """Reference CKA of a neuron subset with the whole layer (:func:`linear_cka` of the subset's activations and
    the layer's), independent of the H-matrix route; 0 for the empty subset."""
    a = np.asarray(acts)
    subset = np.asarray(subset, dtype=np.int64)
    if len(subset) == 0:
        return 0.0
    return linear_cka(a[:, subset], a, centered)


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
