"""Per-detector calibration at a target false-positive rate, and ensembling.

Raw scores of CNNDetection (Wang et al., CVPR 2020), NPR (Tan et al., CVPR
2024) and UnivFD (Ojha et al., CVPR 2023) are not comparable: SIDBench
(Schinas & Papadopoulos, 2024) shows that the default 0.5 threshold gives very
different false-positive rates across detectors and datasets. assay therefore
fits each detector's threshold on held-out *real* images at a target FPR, and
ensembles detectors in log-odds relative to their own thresholds.

Decision rule (everywhere in this package): an image is "generated" iff
``score >= threshold``. Average precision and AUROC treat generated images as
the positive class (the shared :mod:`~assay.server.stats.ranking` metrics,
matching scikit-learn's ``average_precision_score`` and ``roc_auc_score``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assay.server.stats.order_statistics import largest_count_at_most
from assay.server.stats.ranking import auroc, average_precision

_LOGIT_EPS = 1e-6


@dataclass(frozen=True)
class DetectorCalibration:
    """A detector's threshold at a target FPR, with its ranking quality.

    Attributes:
        threshold: Decision threshold; "generated" iff ``score >= threshold``.
        target_fpr: Requested maximum FPR on real images.
        achieved_fpr: ``#{real >= threshold} / n_real``; always ``<= target_fpr``.
        tpr: ``#{generated >= threshold} / n_generated``.
        ap: Average precision, generated = positive.
        auroc: Area under the ROC curve, generated = positive.
        n_real: Number of real scores used.
        n_generated: Number of generated scores used.
    """

    threshold: float
    target_fpr: float
    achieved_fpr: float
    tpr: float
    ap: float
    auroc: float
    n_real: int
    n_generated: int


def _scores(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def fit_detector_threshold(
    real_scores: ArrayLike, generated_scores: ArrayLike, target_fpr: float = 0.05
) -> DetectorCalibration:
    """Smallest threshold whose FPR on ``real_scores`` is at most ``target_fpr``.

    With "generated" iff ``score >= t``, ``FPR(t) = #{real >= t} / n_real`` is
    non-increasing in ``t``. Let ``c`` be the largest count with ``c / n_real <=
    target_fpr`` in float64 (`largest_count_at_most`) and ``v`` the ``(c + 1)``-th
    largest real score. Every ``t <= v`` flags at least ``c + 1`` real images, and every
    ``t > v`` flags at most ``c`` (all real scores tied with ``v`` fall below ``t``
    together), so the infimum is ``v`` and the threshold returned is the next float64
    above it, ``numpy.nextafter(v, inf)``: the smallest representable threshold meeting
    the target. Because ties are excluded as a block, ``achieved_fpr`` may be strictly
    below ``target_fpr``. If ``c == n_real`` (e.g. ``target_fpr == 1``) every threshold
    qualifies and the smallest score overall is returned, flagging everything.

    Args:
        real_scores: 1-D detector scores of real images (higher = more generated).
        generated_scores: 1-D detector scores of generated images.
        target_fpr: Maximum false-positive rate on the real images, in ``[0, 1]``.

    Returns:
        The threshold, its achieved FPR and TPR, and AP/AUROC of the scores.

    Raises:
        ValueError: On empty or non-finite scores or ``target_fpr`` out of range.
    """
    real = _scores("real_scores", real_scores)
    gen = _scores("generated_scores", generated_scores)
    if not (math.isfinite(target_fpr) and 0.0 <= target_fpr <= 1.0):
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    c = largest_count_at_most(target_fpr, real.size)
    if c >= real.size:
        threshold = float(min(real.min(), gen.min()))
    else:
        v = float(np.sort(real)[::-1][c])
        threshold = float(np.nextafter(v, np.inf))
    labels = np.r_[np.zeros(real.size, dtype=bool), np.ones(gen.size, dtype=bool)]
    scores = np.r_[real, gen]
    return DetectorCalibration(
        threshold=threshold,
        target_fpr=float(target_fpr),
        achieved_fpr=float(np.count_nonzero(real >= threshold) / real.size),
        tpr=float(np.count_nonzero(gen >= threshold) / gen.size),
        ap=average_precision(labels, scores),
        auroc=auroc(labels, scores),
        n_real=int(real.size),
        n_generated=int(gen.size),
    )


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def calibrated_log_odds(probabilities: ArrayLike, thresholds: ArrayLike) -> NDArray[np.float64]:
    """Per-detector log-odds relative to each detector's own threshold.

    ``logit(p) - logit(threshold)``, with both clipped to ``[1e-6, 1 - 1e-6]``.
    A value of 0 is exactly at the detector's calibrated threshold; positive
    means "generated" for that detector, so detectors with different operating
    points become comparable.

    Args:
        probabilities: ``N x D`` probabilities (N images, D detectors).
        thresholds: ``D`` probability thresholds, e.g. from
            :func:`fit_detector_threshold`.

    Returns:
        ``N x D`` calibrated log-odds.

    Raises:
        ValueError: On shape mismatch or values outside ``[0, 1]``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if p.ndim != 2 or p.shape[1] != t.size:
        raise ValueError(f"probabilities must be N x {t.size}, got shape {p.shape}")
    if not (np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))):
        raise ValueError("probabilities must be in [0, 1]")
    if not np.all(np.isfinite(t)):
        raise ValueError("thresholds must be finite")
    return _logit(p) - _logit(t)[None, :]  # _logit clips thresholds too


def ensemble(log_odds: ArrayLike) -> NDArray[np.float64]:
    """Mean of calibrated log-odds across detectors.

    Each column must already be a detector's calibrated log-odds,
    ``logit(p) - logit(threshold)`` (see :func:`calibrated_log_odds`), so the
    ensemble decides "generated" iff the result is ``>= 0``.

    Args:
        log_odds: ``N x D`` calibrated log-odds (N images, D detectors).

    Returns:
        ``N`` ensemble log-odds.

    Raises:
        ValueError: On a non-2-D, empty or non-finite input.
    """
    z = np.asarray(log_odds, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"log_odds must be a non-empty N x D array, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("log_odds must be finite")
    return np.asarray(z.mean(axis=1), dtype=np.float64)
