"""Per-row bincount: counts of B resamples at once (no Python loop over resamples).

Bootstrap statistics over groups or bins (worst-group accuracy, ECE) need one
histogram per resample; offsetting each row's codes by ``row * n_codes`` turns
that into a single `numpy.bincount`.
"""

from __future__ import annotations

import numpy as np

from assay.server.stats.arrays import FloatArray, IntArray

__all__ = ["batched_bincount"]


def batched_bincount(
    codes: IntArray, n_codes: int, weights: FloatArray | None = None
) -> FloatArray:
    """Per-row bincount of a B x n code array.

    Args:
        codes: B x n integer codes in [0, n_codes).
        n_codes: Number of distinct codes (columns of the result).
        weights: Optional B x n weights (counts are then weighted sums).

    Returns:
        B x n_codes float64 (weighted) counts.
    """
    rows = codes.shape[0]
    flat = (codes + n_codes * np.arange(rows, dtype=np.intp)[:, None]).ravel()
    flat_weights = None if weights is None else weights.ravel()
    counts = np.bincount(flat, weights=flat_weights, minlength=rows * n_codes)
    return counts.reshape(rows, n_codes).astype(np.float64)
