"""Ranking metrics of two score samples: AUROC, average precision, FPR@TPR.

Convention: a higher score means "more positive" (OOD, anomalous, generated).
The ``in`` sample is the class to keep (in-distribution, real), the ``out``
sample the class to catch. With n_in scores ``a_i`` and n_out scores ``b_j``:

* AUROC = ``(1/(n_in·n_out)) Σ_ij (1[b_j > a_i] + ½·1[b_j = a_i])``, via the
  Mann-Whitney U statistic on average ranks; equals
  `sklearn.metrics.roc_auc_score` with the out sample labelled 1.
* Average precision ``AP = Σ_k (R_k - R_{k-1})·P_k`` over the distinct score
  thresholds k (tied scores share one operating point); equals
  `sklearn.metrics.average_precision_score`.
* FPR@TPR (FPR at 95 % TPR in Liang et al., 2018, ODIN; OpenOOD, Yang et al.,
  2022): the fraction of the out sample accepted (``s <= t``) by the lowest
  threshold that accepts at least ``tpr`` of the in sample: with m the smallest
  count with ``m / n_in >= tpr`` (`smallest_count_at_least`) and ``t = a_(m)``
  (m-th smallest), ``FPR = #{j: b_j <= t} / n_out``. Out scores tied with t
  count as accepted (no threshold can split a tie).

The ``*_rows`` forms take B x n arrays (one bootstrap resample per row) and
return B values, so an interval over 1000 resamples is a few array operations.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from assay.server.stats.arrays import BoolArray, FloatArray
from assay.server.stats.order_statistics import smallest_count_at_least

__all__ = [
    "auroc",
    "auroc_rows",
    "average_precision",
    "average_precision_rows",
    "fpr_at_tpr_rows",
    "tie_group_ends",
    "tpr_rank",
]


def tie_group_ends(sorted_scores: FloatArray) -> BoolArray:
    """True at the last position of each run of equal values along the last axis."""
    ends = np.ones(sorted_scores.shape, dtype=np.bool_)
    ends[..., :-1] = sorted_scores[..., 1:] != sorted_scores[..., :-1]
    return ends


def auroc_rows(in_scores: FloatArray, out_scores: FloatArray) -> FloatArray:
    """AUROC of each row (B x n_in against B x n_out), out sample positive."""
    n_in, n_out = in_scores.shape[-1], out_scores.shape[-1]
    ranks = rankdata(np.concatenate([in_scores, out_scores], axis=-1), axis=-1)
    u_statistic = ranks[..., n_in:].sum(axis=-1) - n_out * (n_out + 1) / 2.0
    result: FloatArray = u_statistic / (n_in * n_out)
    return result


def average_precision_rows(scores: FloatArray, positive: BoolArray) -> FloatArray:
    """Average precision of each row of B x n scores, tied scores forming one threshold.

    ``Σ_k ΔR_k·P_k = (1/#pos) Σ_{i positive} P_{k(i)}``: every positive adds the
    precision at the end of its tie group in the descending order.

    Args:
        scores: B x n scores (higher = more positive).
        positive: B x n labels (True = positive); every row needs a positive.

    Returns:
        B average precisions.
    """
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=-1)
    hits = np.take_along_axis(positive, order, axis=-1).astype(np.float64)
    position = np.arange(ranked.shape[-1])
    precision = np.cumsum(hits, axis=-1) / (position + 1)
    last = np.where(tie_group_ends(-ranked), position, ranked.shape[-1])
    group_end = np.minimum.accumulate(last[..., ::-1], axis=-1)[..., ::-1]
    at_end = np.take_along_axis(precision, group_end, axis=-1)
    result: FloatArray = (hits * at_end).sum(axis=-1) / hits.sum(axis=-1)
    return result


def tpr_rank(tpr: float, n_in: int) -> int:
    """The rank m of the FPR@TPR threshold: the smallest m with ``m / n_in >= tpr``.

    Raises:
        ValueError: On tpr outside (0, 1] or n_in < 1.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    return smallest_count_at_least(tpr, n_in)


def fpr_at_tpr_rows(in_scores: FloatArray, out_scores: FloatArray, tpr: float) -> FloatArray:
    """FPR@TPR of each row: the share of out scores ``<=`` the m-th smallest in score."""
    k = tpr_rank(tpr, in_scores.shape[-1]) - 1  # 0-based position of the m-th smallest
    threshold = np.partition(in_scores, k, axis=-1)[..., k]
    result: FloatArray = (out_scores <= threshold[..., None]).mean(axis=-1)
    return result


def _labelled(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[BoolArray, FloatArray]:
    """Boolean labels and finite 1-D float64 scores of one shape, else ValueError."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in shape: {y.shape} vs {s.shape}")
    return y, s


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision over distinct score thresholds (sklearn's definition).

    Args:
        labels: 1-D binary labels (1 = positive).
        scores: 1-D finite scores, higher = more positive.

    Returns:
        AP, identical to ``sklearn.metrics.average_precision_score``.

    Raises:
        ValueError: On bad scores, mismatched shapes or no positive label.
    """
    y, s = _labelled(labels, scores)
    if not y.any():
        raise ValueError("average precision needs at least one positive")
    return float(average_precision_rows(s[None], y[None])[0])


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, ties counting 1/2 (Mann-Whitney U with mid-ranks).

    Args:
        labels: 1-D binary labels (1 = positive).
        scores: 1-D finite scores, higher = more positive.

    Returns:
        AUROC, identical to ``sklearn.metrics.roc_auc_score``.

    Raises:
        ValueError: On bad scores, mismatched shapes or a single class.
    """
    y, s = _labelled(labels, scores)
    if y.all() or not y.any():
        raise ValueError("AUROC needs both classes")
    return float(auroc_rows(s[~y][None], s[y][None])[0])
