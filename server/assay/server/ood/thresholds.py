"""Decision thresholds and tail probabilities for OOD scores (higher = more anomalous).

* `fit_threshold`: the smallest holdout score ``t`` such that at least a fraction
  ``target_tpr`` of the in-distribution holdout scores satisfy ``s ≤ t``; a new sample
  is flagged ``is_ood = score > t``. With the n holdout scores sorted, ``s_(1) ≤ … ≤
  s_(n)``, this is ``t = s_(m)`` with ``m = ⌈target_tpr · n⌉``, the exact empirical
  quantile ``F_n⁻¹(target_tpr)`` (numpy's ``inverted_cdf`` method). ``m`` is the
  smallest integer whose float64 ratio ``m / n`` is ``≥ target_tpr``
  (`smallest_count_at_least`), so the check ``kept_fraction(holdout, t) >=
  target_tpr`` holds exactly, with no rounding slip either way (``0.9 · 100`` needs
  90, not 91); ties only raise the kept fraction. This is the usual "threshold at 95 %
  TPR" of the OOD literature (e.g. FPR@95TPR, Liang et al., 2018). (numpy's ``higher``
  interpolation satisfies the guarantee too but can sit one order statistic higher
  than needed, e.g. 96 of 100 kept at 95 %.)
* `tail_fraction`: ``p(s) = #{i : h_i ≥ s} / n`` over the holdout scores ``h``,
  the empirical upper-tail probability of a score under the in-distribution
  holdout (a p-value for "is in-distribution"; 1 for scores at or below the
  holdout minimum, 0 above its maximum). The conformal variant
  ``(1 + #{h_i ≥ s}) / (n + 1)`` is ``(n · p + 1) / (n + 1)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from assay.server.ood._common import FloatArray, as_vector
from assay.server.stats.order_statistics import smallest_count_at_least

__all__ = ["fit_threshold", "kept_fraction", "tail_fraction"]


def _holdout(scores: npt.ArrayLike, name: str) -> FloatArray:
    """A non-empty finite 1-D float64 array."""
    array = as_vector(scores, name)
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return array


def fit_threshold(in_dist_scores: npt.ArrayLike, target_tpr: float = 0.95) -> float:
    """Smallest threshold keeping at least ``target_tpr`` of the holdout as in-distribution.

    Args:
        in_dist_scores: n ≥ 1 in-distribution holdout scores (higher = more anomalous).
        target_tpr: Fraction in (0, 1] of holdout samples that must satisfy ``s ≤ t``.

    Returns:
        ``t = s_(m)``, ``m`` the smallest rank with ``m / n >= target_tpr``; one of
        the holdout scores.

    Raises:
        ValueError: On an empty or non-finite holdout, or target_tpr outside (0, 1].
    """
    tpr = float(target_tpr)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"target_tpr must be in (0, 1], got {target_tpr!r}")
    scores = np.sort(_holdout(in_dist_scores, "in_dist_scores"))
    return float(scores[smallest_count_at_least(tpr, scores.shape[0]) - 1])


def kept_fraction(in_dist_scores: npt.ArrayLike, threshold: float) -> float:
    """Fraction of holdout scores ``≤ threshold`` (the achieved TPR).

    Raises:
        ValueError: On an empty or non-finite holdout.
    """
    scores = _holdout(in_dist_scores, "in_dist_scores")
    return float(np.count_nonzero(scores <= threshold)) / scores.shape[0]


def tail_fraction(holdout_scores: npt.ArrayLike, scores: npt.ArrayLike) -> FloatArray:
    """Fraction of the holdout scoring at least each score, ``#{h_i ≥ s} / n``.

    Args:
        holdout_scores: n ≥ 1 in-distribution holdout scores.
        scores: Scores to evaluate, any shape.

    Returns:
        float64 array shaped like ``scores``, values in [0, 1].

    Raises:
        ValueError: On an empty or non-finite holdout, or NaN in ``scores``
            (±inf scores are allowed: +inf → 0, -inf → 1).
    """
    holdout = np.sort(_holdout(holdout_scores, "holdout_scores"))
    try:
        query = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scores must be a numeric array: {exc}") from None
    if np.isnan(query).any():
        raise ValueError("scores contain NaN")
    below = np.searchsorted(holdout, query, side="left")
    result: FloatArray = (holdout.shape[0] - below) / holdout.shape[0]
    return result
