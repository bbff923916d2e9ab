"""Detector evaluation metrics: AP/AUROC/accuracy with bootstrap intervals, curves, spectra.

Generated images are the positive class. Intervals are percentile bootstraps
over images, stratified by class so every resample keeps both classes
(:func:`~assay.server.stats.bootstrap.bootstrap_estimate`); AP and AUROC are
the shared :mod:`~assay.server.stats.ranking` metrics. Accuracies are
reported at the calibrated threshold and at 0.5, and separately on real and
on generated images, because a detector can look accurate overall while it
flags most real photos (or misses most fakes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from assay.server.aigen.spectral import azimuthal_spectrum, residual
from assay.server.stats.arrays import FloatArray
from assay.server.stats.bootstrap import bootstrap_estimate, mean_estimate
from assay.server.stats.estimate import DEFAULT_CONFIDENCE, Estimate, EstimateJson
from assay.server.stats.ranking import auroc, average_precision

CONFIDENCE = DEFAULT_CONFIDENCE
CURVE_POINTS = 200
HISTOGRAM_BINS = 20


def ranked(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    resamples: int,
    seed: int,
) -> EstimateJson:
    """A two-class statistic (AP, AUROC) with a class-stratified bootstrap interval."""
    if labels.min() == labels.max():
        return Estimate.undefined(CONFIDENCE).to_json()
    return bootstrap_estimate(
        statistic,
        labels,
        probs,
        n_resamples=resamples,
        confidence=CONFIDENCE,
        seed=seed,
        strata=labels,
    ).to_json()


def proportion(hits: np.ndarray, *, resamples: int, seed: int) -> EstimateJson:
    """A share of booleans with a bootstrap interval (null when there are none)."""
    if hits.size == 0:
        return Estimate.undefined(CONFIDENCE).to_json()
    return mean_estimate(hits, n_resamples=resamples, confidence=CONFIDENCE, seed=seed).to_json()


def _mean_rows(values: FloatArray) -> FloatArray:
    means: FloatArray = values.mean(axis=-1)
    return means


def accuracy(
    labels: np.ndarray, probs: np.ndarray, threshold: float, *, resamples: int, seed: int
) -> EstimateJson:
    """Accuracy at ``threshold`` over all images, stratified by class."""
    correct = ((probs >= threshold) == (labels == 1)).astype(np.float64)
    return bootstrap_estimate(
        _mean_rows,
        correct,
        n_resamples=resamples,
        confidence=CONFIDENCE,
        seed=seed,
        vectorized=True,
        strata=labels,
    ).to_json()


def binary_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float, *, resamples: int, seed: int
) -> dict[str, Any]:
    """AP, AUROC and accuracies (calibrated and at 0.5, overall and per class)."""
    real, generated = probs[labels == 0], probs[labels == 1]
    kw = {"resamples": resamples, "seed": seed}
    return {
        "ap": ranked(average_precision, labels, probs, **kw),
        "auroc": ranked(auroc, labels, probs, **kw),
        "accuracy_calibrated": accuracy(labels, probs, threshold, **kw),
        "accuracy_at_0_5": accuracy(labels, probs, 0.5, **kw),
        "real_accuracy_calibrated": proportion(real < threshold, **kw),
        "generated_accuracy_calibrated": proportion(generated >= threshold, **kw),
        "real_accuracy_at_0_5": proportion(real < 0.5, **kw),
        "generated_accuracy_at_0_5": proportion(generated >= 0.5, **kw),
    }


def _operating_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at every distinct score threshold, highest first."""
    order = np.argsort(-probs, kind="mergesort")
    p, y = probs[order], labels[order]
    ends = np.r_[np.flatnonzero(np.diff(p)), p.size - 1]
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    return tps, fps


def _thin(*columns: np.ndarray, points: int) -> list[list[float]]:
    keep = np.unique(np.linspace(0, len(columns[0]) - 1, min(points, len(columns[0]))).round())
    return [[float(v) for v in c[keep.astype(np.int64)]] for c in columns]


def curves(labels: np.ndarray, probs: np.ndarray, points: int = CURVE_POINTS) -> dict[str, Any]:
    """ROC (from (0, 0)) and precision-recall points for plots, thinned to ``points``."""
    if labels.min() == labels.max():
        return {}
    tps, fps = _operating_points(labels, probs)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    roc = _thin(fpr, tpr, points=points)
    pr = _thin(recall, precision, points=points)
    return {
        "roc": {"fpr": roc[0], "tpr": roc[1]},
        "pr": {"recall": pr[0], "precision": pr[1]},
    }


def histogram(probs: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """Counts of probabilities in 20 equal bins on [0, 1]: real, and per generator."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    names = np.asarray(groups)
    generated = {
        g: np.histogram(probs[names == g], edges)[0].tolist()
        for g in sorted(set(groups) - {"real"})
    }
    return {
        "edges": edges.tolist(),
        "real": np.histogram(probs[names == "real"], edges)[0].tolist(),
        "generated": generated,
    }


def mean_spectra(images: Sequence[np.ndarray], groups: Sequence[str], crop: int) -> dict[str, Any]:
    """Mean azimuthal log power spectrum of the noise residual, per group."""
    n_bins = min(32, crop // 2)
    spectra = np.stack([azimuthal_spectrum(residual(image), crop, n_bins) for image in images])
    names = np.asarray(groups)
    return {
        "n_bins": n_bins,
        "crop": crop,
        "frequency": [float((b + 0.5) * 0.5 / n_bins) for b in range(n_bins)],
        "by_group": {
            g: [float(v) for v in spectra[names == g].mean(axis=0)] for g in sorted(set(groups))
        },
    }


def confident_mistakes(
    paths: Sequence[str],
    groups: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The wrongly decided images farthest from the threshold."""
    wrong = np.flatnonzero((probs >= threshold) != (labels == 1))
    worst = wrong[np.argsort(-np.abs(probs[wrong] - threshold), kind="stable")][:limit]
    return [
        {
            "path": paths[i],
            "group": groups[i],
            "label": "generated" if labels[i] else "real",
            "probability": float(probs[i]),
            "correct": False,
        }
        for i in worst
    ]
