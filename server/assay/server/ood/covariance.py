"""Ledoit-Wolf shrinkage covariance and a stable precision matrix, in numpy.

Ledoit & Wolf, 2004, "A well-conditioned estimator for large-dimensional
covariance matrices", Journal of Multivariate Analysis 88(2), Sec. 2-3. With n
samples ``x_k ∈ R^p`` (centred on their mean, or on 0 when ``assume_centered``),
the normalised Frobenius inner product ``<A, B> = tr(A Bᵀ) / p`` and
``S = (1/n) Σ_k x_k x_kᵀ``:

* ``m = <S, I> = tr(S) / p``
* ``d² = ‖S - m I‖² = (‖S‖_F² - 2 m tr(S) + p m²) / p``
* ``b̄² = (1/n²) Σ_k ‖x_k x_kᵀ - S‖² = (Σ_k ‖x_k‖⁴ / n - ‖S‖_F²) / (n p)``
  (using ``Σ_k x_kᵀ S x_k = n ‖S‖_F²``)
* ``b² = min(b̄², d²)``, shrinkage ``δ = b² / d²`` (0 when ``b² = 0``)
* ``Σ* = (1 - δ) S + δ m I``.

This is the same estimator as ``sklearn.covariance.ledoit_wolf`` (checked in the
unit tests); scikit-learn is only a development dependency of assay.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import FloatArray, as_matrix

__all__ = ["EIGENVALUE_RCOND", "ledoit_wolf", "precision_from_covariance"]

EIGENVALUE_RCOND: Final = 1e-10
"""Eigenvalues below this fraction of the largest are raised to it when inverting."""


def ledoit_wolf(
    features: npt.ArrayLike, *, assume_centered: bool = False
) -> tuple[FloatArray, float]:
    """Ledoit-Wolf shrunk covariance of n x p data.

    Args:
        features: n x p samples (n ≥ 2), finite.
        assume_centered: Treat the data as already centred (do not subtract the mean).

    Returns:
        ``(covariance, shrinkage)``: the p x p estimate ``Σ*`` and ``δ ∈ [0, 1]``.

    Raises:
        ValueError: On fewer than 2 samples or non-finite values.
    """
    x = as_matrix(features, "features", min_rows=2)
    if not assume_centered:
        x = x - x.mean(axis=0)
    n, p = x.shape
    emp = (x.T @ x) / n
    trace = float(np.trace(emp))
    mu = trace / p
    frob2 = float(np.sum(emp * emp))
    d2 = (frob2 - 2.0 * mu * trace + p * mu * mu) / p
    row_norms2 = np.einsum("ij,ij->i", x, x)
    b_bar2 = (float(np.sum(row_norms2 * row_norms2)) / n - frob2) / (n * p)
    b2 = min(max(b_bar2, 0.0), d2)
    shrinkage = 0.0 if b2 <= 0.0 else b2 / d2
    covariance: FloatArray = (1.0 - shrinkage) * emp
    covariance.flat[:: p + 1] += shrinkage * mu
    return covariance, shrinkage


def precision_from_covariance(covariance: FloatArray) -> FloatArray:
    """Inverse of a symmetric positive (semi-)definite matrix via ``eigh``.

    ``Σ = V diag(λ) Vᵀ`` gives ``Σ⁻¹ = V diag(1/λ) Vᵀ``; eigenvalues below
    ``EIGENVALUE_RCOND · max λ`` are raised to that floor, so a nearly singular
    estimate still yields a finite, symmetric positive-definite precision.

    Args:
        covariance: p x p symmetric matrix.

    Returns:
        The p x p precision matrix (exactly symmetric).

    Raises:
        ValueError: If the matrix is not square or all its eigenvalues are ≤ 0
            (e.g. every reference feature is identical).
    """
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(f"covariance must be square, got shape {covariance.shape}")
    eigenvalues, eigenvectors = np.linalg.eigh((covariance + covariance.T) / 2.0)
    top = float(eigenvalues[-1])
    if not top > 0.0:
        raise ValueError(
            "covariance is degenerate (no positive eigenvalue): the reference features do not vary"
        )
    floored = np.maximum(eigenvalues, EIGENVALUE_RCOND * top)
    precision: FloatArray = (eigenvectors / floored) @ eigenvectors.T
    return (precision + precision.T) / 2.0
