"""Evaluation of OOD / anomaly detectors, anomaly localisation and OOD-set hygiene.

(Over 500 lines: detector, localisation and hygiene metrics share the score
convention and validation below; splitting localisation out is the next step.)

Convention: a higher score means more OOD / anomalous, and OOD / anomalous is the
positive class. With n_in in-distribution scores ``a_i`` and n_out OOD scores
``b_j``; "accepted" means judged in-distribution, i.e. ``s <= t``:

* AUROC = ``(1/(n_in·n_out)) Σ_ij (1[b_j > a_i] + ½·1[b_j = a_i])`` (Mann-Whitney U;
  equals `sklearn.metrics.roc_auc_score` with OOD labelled 1).
* AUPR-Out / AUPR-In: average precision ``AP = Σ_k (R_k - R_{k-1})·P_k`` over the
  distinct score thresholds k (tied scores share one), with OOD positive on the
  scores, resp. in-distribution positive on the negated scores (Hendrycks &
  Gimpel, 2017, "A Baseline for Detecting Misclassified and Out-of-Distribution
  Examples", ICLR); equals `sklearn.metrics.average_precision_score`.
* FPR@TPR (FPR at 95% TPR in Liang et al. 2018, below; OpenOOD, Yang et al.,
  2022, "OpenOOD: Benchmarking Generalized Out-of-Distribution Detection",
  NeurIPS Datasets and Benchmarks): the fraction of
  OOD samples accepted by the lowest threshold that accepts at least ``tpr`` of
  the in-distribution samples: with k the smallest count with ``k / n_in >= tpr``
  in float64 (``ceil(tpr·n_in)`` up to rounding) and ``t = a_(k)`` (k-th
  smallest), ``FPR = #{j: b_j <= t} / n_out``. OOD scores tied with t count as
  accepted (no threshold can split a tie). This is the FPR of the first point of
  ``roc_curve(in_labels, -scores, drop_intermediate=False)`` with TPR >= tpr
  (sklearn's default ``drop_intermediate=True`` can skip that point).
* Detection accuracy (Liang et al., 2018, "Enhancing the Reliability of
  Out-of-Distribution Image Detection in Neural Networks" (ODIN), ICLR, with equal
  priors): ``max_t ½·(#{i: a_i <= t}/n_in + #{j: b_j > t}/n_out)`` over t in
  {-inf} and every observed score (the value is piecewise constant between them).

AUROC, AP and FPR@TPR are the shared :mod:`~assay.server.stats.ranking` metrics.
Every detector metric gets a percentile-bootstrap interval (`bootstrap_estimate`), with
in-distribution and OOD scores resampled separately (stratified), so each
resample keeps n_in and n_out and every metric stays defined.

Anomaly localisation: `pixel_auroc`, `aupro`, `aupimo`. OOD-set hygiene:
`contamination_warning`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from assay.server.ood._common import FloatArray, as_vector
from assay.server.stats.arrays import BoolArray
from assay.server.stats.bootstrap import bootstrap_estimate
from assay.server.stats.estimate import DEFAULT_CONFIDENCE, Estimate
from assay.server.stats.ranking import (
    auroc_rows,
    average_precision_rows,
    fpr_at_tpr_rows,
    tie_group_ends,
    tpr_rank,
)

__all__ = [
    "ContaminationWarning",
    "DetectorMetrics",
    "Offender",
    "PimoScores",
    "RankedDetector",
    "aupimo",
    "aupr_in",
    "aupr_out",
    "aupro",
    "auroc",
    "contamination_warning",
    "detection_accuracy",
    "evaluate_detector",
    "fpr_at_tpr",
    "pixel_auroc",
    "rank_detectors",
    "recommended_detector",
]

Rows = Callable[[FloatArray, FloatArray], FloatArray]
"""A metric on B x n_in in-distribution and B x n_out OOD scores: B values."""
DEFAULT_TPR: Final = 0.95


def _pair(in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Both score sets as finite, non-empty 1-D float64 arrays, else ValueError."""
    inside, outside = as_vector(in_scores, "in_scores"), as_vector(out_scores, "out_scores")
    if inside.size == 0 or outside.size == 0:
        raise ValueError(f"need scores on both sets, got {inside.size} in and {outside.size} out")
    return inside, outside


def _aupr_out_rows(inside: FloatArray, outside: FloatArray) -> FloatArray:
    scores = np.concatenate([inside, outside], axis=-1)
    positive = np.arange(scores.shape[-1]) >= inside.shape[-1]
    return average_precision_rows(scores, np.broadcast_to(positive, scores.shape))


def _aupr_in_rows(inside: FloatArray, outside: FloatArray) -> FloatArray:
    return _aupr_out_rows(-outside, -inside)


def _accuracy_rows(inside: FloatArray, outside: FloatArray) -> FloatArray:
    n_in, n_out = inside.shape[-1], outside.shape[-1]
    scores = np.concatenate([inside, outside], axis=-1)
    order = np.argsort(scores, axis=-1, kind="stable")
    is_in = order < n_in  # order holds column numbers; in-distribution come first
    accepted_in = np.cumsum(is_in, axis=-1)
    accepted_out = np.arange(1, scores.shape[-1] + 1) - accepted_in
    accuracy = 0.5 * (accepted_in / n_in + (n_out - accepted_out) / n_out)
    ends = tie_group_ends(np.take_along_axis(scores, order, axis=-1))
    result: FloatArray = np.maximum(np.where(ends, accuracy, 0.5).max(axis=-1), 0.5)
    return result


def _point(rows: Rows, in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> float:
    inside, outside = _pair(in_scores, out_scores)
    return float(rows(inside[None], outside[None])[0])


def auroc(in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, OOD positive (0.5 = chance, 1 = perfect)."""
    return _point(auroc_rows, in_scores, out_scores)


def aupr_out(in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> float:
    """Average precision with OOD as the positive class."""
    return _point(_aupr_out_rows, in_scores, out_scores)


def aupr_in(in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> float:
    """Average precision with in-distribution positive on the negated scores."""
    return _point(_aupr_in_rows, in_scores, out_scores)


def fpr_at_tpr(
    in_scores: npt.ArrayLike, out_scores: npt.ArrayLike, tpr: float = DEFAULT_TPR
) -> float:
    """Fraction of OOD samples accepted when ≥ `tpr` of in-distribution ones are."""
    return _point(lambda a, b: fpr_at_tpr_rows(a, b, tpr), in_scores, out_scores)


def detection_accuracy(in_scores: npt.ArrayLike, out_scores: npt.ArrayLike) -> float:
    """Best balanced accuracy ½·(TPR_in + TNR_out) over thresholds (ODIN), ≥ 0.5."""
    return _point(_accuracy_rows, in_scores, out_scores)


@dataclass(frozen=True)
class DetectorMetrics:
    """One detector on one (in-distribution, OOD) pair, each metric with its interval."""

    auroc: Estimate
    aupr_in: Estimate
    aupr_out: Estimate
    fpr_at_tpr: Estimate
    detection_accuracy: Estimate
    tpr: float
    n_in: int
    n_out: int


def evaluate_detector(
    in_scores: npt.ArrayLike,
    out_scores: npt.ArrayLike,
    *,
    tpr: float = DEFAULT_TPR,
    n_resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> DetectorMetrics:
    """All detector metrics with stratified percentile-bootstrap intervals.

    Args:
        in_scores: Scores of in-distribution samples.
        out_scores: Scores of OOD samples.
        tpr: In-distribution acceptance rate of the FPR metric.
        n_resamples: Bootstrap resamples (the same resamples for every metric).
        confidence: Coverage of the intervals.
        seed: Seed of the resampling generator.

    Returns:
        The metrics as `Estimate`s.

    Raises:
        ValueError: On empty or non-finite scores or bad settings.
    """
    inside, outside = _pair(in_scores, out_scores)
    tpr_rank(tpr, inside.size)
    scores = np.concatenate([inside, outside])
    strata = np.arange(scores.size) >= inside.size
    n_in = inside.size

    def estimate(rows: Rows) -> Estimate:
        def statistic(resampled: FloatArray) -> FloatArray:
            # Stratified resamples keep in-distribution rows in the first n_in columns.
            return rows(resampled[..., :n_in], resampled[..., n_in:])

        return bootstrap_estimate(
            statistic,
            scores,
            n_resamples=n_resamples,
            confidence=confidence,
            seed=seed,
            vectorized=True,
            strata=strata,
        )

    return DetectorMetrics(
        auroc=estimate(auroc_rows),
        aupr_in=estimate(_aupr_in_rows),
        aupr_out=estimate(_aupr_out_rows),
        fpr_at_tpr=estimate(lambda a, b: fpr_at_tpr_rows(a, b, tpr)),
        detection_accuracy=estimate(_accuracy_rows),
        tpr=tpr,
        n_in=inside.size,
        n_out=outside.size,
    )


class RankedDetector(NamedTuple):
    """A scorer's mean metrics over the OOD sets it was evaluated on."""

    scorer: str
    mean_auroc: float
    mean_fpr_at_tpr: float


def rank_detectors(results: Mapping[str, Mapping[str, DetectorMetrics]]) -> list[RankedDetector]:
    """Scorers ranked best first: highest mean AUROC, ties by lowest mean FPR, then name.

    Args:
        results: ``results[scorer][ood_set]``; every scorer must cover the same sets
            (otherwise the means would not be comparable).

    Returns:
        One entry per scorer; the first is the recommended default.

    Raises:
        ValueError: On no scorers, a scorer without sets, or differing sets.
    """
    if not results:
        raise ValueError("no detector results to rank")
    reference = set(next(iter(results.values())))
    ranked = []
    for scorer, per_set in results.items():
        if not per_set:
            raise ValueError(f"scorer {scorer!r} has no OOD-set results")
        if set(per_set) != reference:
            raise ValueError(
                f"scorer {scorer!r} covers OOD sets {sorted(per_set)}, expected {sorted(reference)}"
            )
        mean_auroc = math.fsum(s.auroc.value for s in per_set.values()) / len(per_set)
        mean_fpr = math.fsum(s.fpr_at_tpr.value for s in per_set.values()) / len(per_set)
        ranked.append(RankedDetector(scorer, mean_auroc, mean_fpr))
    return sorted(ranked, key=lambda r: (-r.mean_auroc, r.mean_fpr_at_tpr, r.scorer))


def recommended_detector(results: Mapping[str, Mapping[str, DetectorMetrics]]) -> str:
    """The recommended default scorer: the first of `rank_detectors`."""
    return rank_detectors(results)[0].scorer


# ---------------------------------------------------------------- localisation


def _maps_and_masks(maps: npt.ArrayLike, masks: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    """N x H x W finite float64 maps and boolean masks of the same shape, else ValueError."""
    try:
        scores, truth = np.asarray(maps, dtype=np.float64), np.asarray(masks)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"maps and masks must be numeric arrays: {exc}") from None
    if scores.ndim != 3 or 0 in scores.shape:
        raise ValueError(f"maps must be a non-empty N x H x W array, got shape {scores.shape}")
    if truth.shape != scores.shape:
        raise ValueError(f"masks have shape {truth.shape}, maps have {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("maps contain NaN or infinite values")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("masks must be binary (0/1 or bool)")
    return scores, truth.astype(np.bool_)


def pixel_auroc(maps: npt.ArrayLike, masks: npt.ArrayLike) -> float:
    """AUROC over all pixels pooled, anomalous (mask 1) pixels positive.

    Args:
        maps: N x H x W anomaly maps (higher = more anomalous).
        masks: N x H x W binary ground truth.

    Returns:
        The pixel-level AUROC.

    Raises:
        ValueError: On bad shapes or values, or masks without both pixel classes.
    """
    scores, truth = _maps_and_masks(maps, masks)
    if truth.all() or not truth.any():
        raise ValueError("pixel AUROC needs both normal and anomalous pixels")
    return float(auroc_rows(scores[~truth][None], scores[truth][None])[0])


def _partial_area(x: FloatArray, y: FloatArray, limit: float) -> float:
    """Trapezoidal area under (x, y) for x in [0, limit], x non-decreasing from 0.

    y at ``limit`` is linearly interpolated between the points around it.
    """
    inside = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:inside], y[:inside]
    if xs[-1] < limit and inside < x.size:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def _region_weights(truth: BoolArray) -> FloatArray:
    """Per pixel 1/(|region|·R): R ground-truth regions (8-connected, all images pooled)."""
    weights = np.zeros(truth.shape, dtype=np.float64)
    regions = 0
    for image, mask in enumerate(truth):
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if count > 1:
            inverse_size = 1.0 / np.bincount(labels.ravel(), minlength=count)
            inverse_size[0] = 0.0
            weights[image] = inverse_size[labels]
            regions += count - 1
    return weights / max(regions, 1)


def aupro(maps: npt.ArrayLike, masks: npt.ArrayLike, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit`.

    Bergmann et al., 2021, "The MVTec Anomaly Detection Dataset: A Comprehensive
    Real-World Dataset for Unsupervised Anomaly Detection", IJCV. For a threshold
    t (anomalous iff score ≥ t), ``PRO(t)`` is the mean over all ground-truth
    regions (8-connected components of every mask, from `cv2.connectedComponents`)
    of the fraction of the region's pixels flagged, and ``FPR(t)`` the fraction of
    all normal pixels flagged. The curve has one point per distinct score (plus
    (0, 0)), joined linearly; its trapezoidal area over FPR in [0, fpr_limit] (PRO
    interpolated at the limit) is divided by fpr_limit,
    so a perfect map scores 1.

    Args:
        maps: N x H x W anomaly maps (higher = more anomalous).
        masks: N x H x W binary ground truth.
        fpr_limit: Upper end of the FPR integration range, in (0, 1].

    Returns:
        The normalised AUPRO in [0, 1].

    Raises:
        ValueError: On bad inputs, no anomalous or no normal pixel, or a bad limit.
    """
    scores, truth = _maps_and_masks(maps, masks)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
    if truth.all() or not truth.any():
        raise ValueError("AUPRO needs both normal and anomalous pixels")
    order = np.argsort(-scores.ravel(), kind="stable")
    ranked = scores.ravel()[order]
    ends = tie_group_ends(-ranked)
    pro = np.cumsum(_region_weights(truth).ravel()[order])[ends]
    fpr = np.cumsum(~truth.ravel()[order])[ends] / np.count_nonzero(~truth)
    curve_x = np.concatenate([[0.0], fpr])
    curve_y = np.concatenate([[0.0], np.minimum(pro, 1.0)])
    return _partial_area(curve_x, curve_y, fpr_limit) / fpr_limit


class PimoScores(NamedTuple):
    """AUPIMO of each anomalous image (images whose mask has any pixel set)."""

    image_indices: npt.NDArray[np.intp]
    scores: FloatArray


def aupimo(
    maps: npt.ArrayLike,
    masks: npt.ArrayLike,
    *,
    fpr_bounds: tuple[float, float] = (1e-5, 1e-4),
    n_points: int = 101,
) -> PimoScores:
    """Per-image AUPIMO: area under the per-image-overlap curve on a log FPR axis.

    Bertoldo et al., 2024, "AUPIMO: Redefining Visual Anomaly Detection Benchmarks
    with High Speed and Low Tolerance". x: the FPR on the pixels of the normal
    images (empty masks), pooled (the mean of per-image FPRs for equal-size
    images); y: one anomalous image's TPR (fraction of its mask pixels flagged).

    Discretisation: ``n_points`` levels ``f_j`` log-spaced over `fpr_bounds`. At
    level j, ``m_j = floor(f_j·n)`` of the n normal pixels may be flagged, so a
    pixel is flagged iff its score is > the (m_j + 1)-th largest normal score
    (FPR ≤ f_j; exactly m_j/n without ties; everything flagged if m_j = n). Then
    ``AUPIMO_i = trapezoid(TPR_i(f_j), log10 f_j) / log10(f_hi / f_lo)`` in [0, 1].
    With fewer than 1/f_lo normal pixels the lowest levels allow no false positive.

    Args:
        maps: N x H x W anomaly maps (higher = more anomalous).
        masks: N x H x W binary ground truth.
        fpr_bounds: Integration range (f_lo, f_hi) of the FPR.
        n_points: Number of log-spaced FPR levels (≥ 2).

    Returns:
        Indices of the anomalous images (ascending) and their AUPIMO.

    Raises:
        ValueError: On bad inputs, no normal or no anomalous image, or bad bounds.
    """
    scores, truth = _maps_and_masks(maps, masks)
    low, high = fpr_bounds
    if not (0.0 < low < high <= 1.0) or n_points < 2:
        raise ValueError(
            f"need 0 < low < high <= 1 and n_points >= 2, got {fpr_bounds}, {n_points}"
        )
    anomalous = truth.any(axis=(1, 2))
    if anomalous.all() or not anomalous.any():
        raise ValueError("AUPIMO needs at least one normal and one anomalous image")
    normal = np.sort(scores[~anomalous].ravel())[::-1]
    log_fpr = np.linspace(math.log10(low), math.log10(high), n_points)
    allowed = np.floor(np.round(10.0**log_fpr * normal.size, 9)).astype(np.intp)
    cut = np.where(allowed < normal.size, normal[np.minimum(allowed, normal.size - 1)], -np.inf)
    indices = np.flatnonzero(anomalous)
    results = np.empty(indices.size, dtype=np.float64)
    for slot, image in enumerate(indices):
        defect = np.sort(scores[image][truth[image]])
        tpr = 1.0 - np.searchsorted(defect, cut, side="right") / defect.size
        area = np.sum(np.diff(log_fpr) * (tpr[1:] + tpr[:-1]) / 2.0)
        results[slot] = area / (log_fpr[-1] - log_fpr[0])
    return PimoScores(indices, results)


# ---------------------------------------------------------------- contamination


@dataclass(frozen=True)
class Offender:
    """An OOD sample confidently classified as an in-distribution class."""

    index: int
    class_name: str
    confidence: float


@dataclass(frozen=True)
class ContaminationWarning:
    """Too many samples of an OOD set look like in-distribution classes."""

    count: int
    total: int
    threshold: float
    offenders: tuple[Offender, ...]

    @property
    def fraction(self) -> float:
        """Count / total."""
        return self.count / self.total

    @property
    def message(self) -> str:
        """A one-line human-readable summary."""
        worst = ", ".join(f"#{o.index} {o.class_name} ({o.confidence:.3f})" for o in self.offenders)
        return (
            f"{self.count} of {self.total} OOD samples ({self.fraction:.1%}) are classified as "
            f"an in-distribution class with confidence >= {self.threshold:g}; the OOD set may "
            f"contain in-distribution objects. Worst: {worst}"
        )


def contamination_warning(
    ood_probs: npt.ArrayLike,
    in_labels_names: Sequence[str],
    threshold: float = 0.9,
    max_fraction: float = 0.05,
    *,
    max_offenders: int = 10,
) -> ContaminationWarning | None:
    """Screen an OOD set for in-distribution objects.

    Bitterwolf et al., 2023, "In or Out? Fixing ImageNet Out-of-Distribution
    Detection Evaluation" (ICML; the NINCO data set) found widely used OOD test
    sets substantially contaminated with in-distribution objects, which distorts
    every OOD metric. This check
    is a cheap screen motivated by that finding (not their manual procedure):
    samples whose top softmax probability is ≥ `threshold` are suspect, and a
    warning is returned when they exceed `max_fraction` of the set.

    Args:
        ood_probs: N x K softmax outputs of the classifier on the OOD set.
        in_labels_names: The K in-distribution class names.
        threshold: Confidence at which a sample counts as suspect, in (0, 1].
        max_fraction: Tolerated fraction of suspect samples, in [0, 1).
        max_offenders: How many of the most confident suspects to list.

    Returns:
        A warning with the count and the worst offenders, or None.

    Raises:
        ValueError: On a non-probability matrix, a name-count mismatch or bad settings.
    """
    probs = np.asarray(ood_probs, dtype=np.float64)
    if probs.ndim != 2 or 0 in probs.shape or probs.shape[1] != len(in_labels_names):
        raise ValueError(
            f"ood_probs must be N x {len(in_labels_names)} (one column per class name), "
            f"got shape {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError("ood_probs must hold finite probabilities in [0, 1]")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("ood_probs rows must sum to 1 (softmax outputs, not logits)")
    if not (0.0 < threshold <= 1.0 and 0.0 <= max_fraction < 1.0 and max_offenders >= 0):
        raise ValueError(f"bad settings: {threshold=}, {max_fraction=}, {max_offenders=}")
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    suspect = np.flatnonzero(confidence >= threshold)
    if suspect.size / len(probs) <= max_fraction:
        return None
    worst = suspect[np.argsort(-confidence[suspect], kind="stable")][:max_offenders]
    offenders = tuple(
        Offender(int(i), in_labels_names[int(predicted[i])], float(confidence[i])) for i in worst
    )
    return ContaminationWarning(int(suspect.size), len(probs), threshold, offenders)
