"""OOD detector and anomaly-localisation metrics against sklearn and hand-derived values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from assay.server.ood.evaluation import (
    ContaminationWarning,
    DetectorMetrics,
    aupimo,
    aupr_in,
    aupr_out,
    aupro,
    auroc,
    contamination_warning,
    detection_accuracy,
    evaluate_detector,
    fpr_at_tpr,
    pixel_auroc,
    rank_detectors,
    recommended_detector,
)
from assay.server.stats.estimate import Estimate

IN_TIED = np.array([0.1, 0.2, 0.2, 0.4, 0.5, 0.5, 0.7])
OUT_TIED = np.array([0.2, 0.5, 0.5, 0.6, 0.9, 0.3])


def labelled(inside: np.ndarray, outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[np.zeros(inside.size), np.ones(outside.size)], np.r_[inside, outside]


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_auroc_and_aupr_match_sklearn_with_ties(seed: int | None) -> None:
    if seed is None:
        inside, outside = IN_TIED, OUT_TIED
    else:
        rng = np.random.default_rng(seed)
        inside = rng.integers(0, 5, 40).astype(float)  # heavy ties
        outside = rng.integers(1, 7, 25).astype(float)
    y, s = labelled(inside, outside)
    assert auroc(inside, outside) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert aupr_out(inside, outside) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert aupr_in(inside, outside) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


def test_fpr_at_95_tpr_hand_case_with_ties() -> None:
    # 20 in-distribution scores 1..18, 19, 19. k = ceil(0.95·20) = 19, so the
    # threshold is the 19th smallest in-score t = 19 (accepting all 20: the tie
    # cannot be split). OOD accepted (score <= 19): 5, 10, 19, 19 -> 4 of 8 = 0.5;
    # the two OOD 19s tie with t and count as accepted.
    inside = np.r_[np.arange(1, 19), 19, 19].astype(float)
    outside = np.array([19, 19, 20, 25, 30, 5, 10, 40], dtype=float)
    assert fpr_at_tpr(inside, outside) == 0.5
    y, s = labelled(inside, outside)
    fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    assert fpr[np.argmax(tpr >= 0.95)] == 0.5
    # At TPR 0.5: k = 10, t = 10; accepted OOD 5, 10 -> 2/8.
    assert fpr_at_tpr(inside, outside, tpr=0.5) == 0.25


def test_detection_accuracy_hand_case() -> None:
    # in = 0,1,2,3; out = 2,4,5,6. Accept iff s <= t:
    #   t = 3: in 4/4 accepted, out rejected 3/4 (2 is accepted) -> ½(1 + 0.75) = 0.875
    #   t = 2: ½(3/4 + 3/4) = 0.75;  t = 1: ½(2/4 + 1) = 0.75;  t = 4: ½(1 + 2/4) = 0.75
    assert detection_accuracy([0, 1, 2, 3], [2, 4, 5, 6]) == 0.875
    assert detection_accuracy([0, 1], [0, 1]) == 0.5  # indistinguishable: chance
    assert detection_accuracy([5, 6], [0, 1]) == 0.5  # inverted scores: never below 0.5


def test_bootstrap_intervals_contain_estimate_and_are_reproducible() -> None:
    rng = np.random.default_rng(3)
    inside, outside = rng.normal(0, 1, 80), rng.normal(1.2, 1, 60)
    first = evaluate_detector(inside, outside, n_resamples=300, seed=5)
    again = evaluate_detector(inside, outside, n_resamples=300, seed=5)
    other = evaluate_detector(inside, outside, n_resamples=300, seed=6)
    assert first == again
    assert first != other
    assert first.auroc.value == auroc(inside, outside)
    assert first.fpr_at_tpr.value == fpr_at_tpr(inside, outside)
    for name in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "detection_accuracy"):
        estimate = getattr(first, name)
        assert estimate.low <= estimate.value <= estimate.high, name
        assert estimate.low < estimate.high, name
        assert estimate.confidence == 0.95
    assert (first.n_in, first.n_out, first.tpr) == (80, 60, 0.95)


def test_stratified_bootstrap_keeps_both_sets_even_when_tiny() -> None:
    scores = evaluate_detector([0.1, 0.2, 0.3], [0.9], n_resamples=200)
    assert scores.auroc.value == 1.0 and scores.auroc.low == 1.0


def test_bad_detector_inputs_raise() -> None:
    with pytest.raises(ValueError, match="both sets"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        aupr_in([np.nan], [1.0])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [2.0], tpr=0.0)


def scores_with(auroc_value: float, fpr_value: float) -> DetectorMetrics:
    def e(value: float) -> Estimate:
        return Estimate(value, value, value, 0.95)

    return DetectorMetrics(e(auroc_value), e(0.5), e(0.5), e(fpr_value), e(0.5), 0.95, 10, 10)


def test_rank_detectors_orders_by_auroc_then_fpr() -> None:
    # Binary fractions, so the means are exact: msp 0.8125 / 0.4375,
    # energy 0.8125 / 0.3125 (same AUROC, lower FPR), knn 0.90625 / 0.1875.
    results = {
        "msp": {"a": scores_with(0.75, 0.5), "b": scores_with(0.875, 0.375)},
        "energy": {"a": scores_with(0.8125, 0.25), "b": scores_with(0.8125, 0.375)},
        "knn": {"a": scores_with(0.875, 0.25), "b": scores_with(0.9375, 0.125)},
    }
    ranking = rank_detectors(results)
    assert [r.scorer for r in ranking] == ["knn", "energy", "msp"]
    assert tuple(ranking[1]) == ("energy", 0.8125, 0.3125)
    assert recommended_detector(results) == "knn"
    with pytest.raises(ValueError, match="covers OOD sets"):
        rank_detectors({"msp": results["msp"], "knn": {"a": results["knn"]["a"]}})
    with pytest.raises(ValueError, match="no detector"):
        rank_detectors({})


def test_pixel_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 6, (3, 9, 7)).astype(float)  # ties
    masks = rng.random((3, 9, 7)) < 0.3
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        pixel_auroc(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="binary"):
        pixel_auroc(maps, masks * 2)


# Two images of 1 x 7 pixels. Image 0: region A = pixel 0 (size 1). Image 1:
# region B = pixels 4..6 (size 3). 10 normal pixels in all.
AUPRO_MAPS = np.array(
    [[[0.9, 0.85, 0.1, 0.1, 0.1, 0.1, 0.1]], [[0.5, 0.1, 0.1, 0.1, 0.8, 0.6, 0.3]]]
)
AUPRO_MASKS = np.array([[[1, 0, 0, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1, 1]]])


def test_aupro_two_region_hand_case() -> None:
    # Thresholds (descending), PRO = mean over regions of the overlap, FPR over 10:
    #   0.9  A        PRO (1 + 0)/2   = 1/2   FPR 0
    #   0.85 normal   PRO 1/2                 FPR 0.1
    #   0.8  B 1/3    PRO (1 + 1/3)/2 = 2/3   FPR 0.1
    #   0.6  B 2/3    PRO (1 + 2/3)/2 = 5/6   FPR 0.1
    #   0.5  normal   PRO 5/6                 FPR 0.2
    #   0.3  B 3/3    PRO 1                   FPR 0.2
    #   0.1  8 normal PRO 1                   FPR 1
    # Curve (0,0),(0,1/2),(0.1,1/2),(0.1,2/3),(0.1,5/6),(0.2,5/6),(0.2,1),(1,1).
    # Area to 0.3: 0.1·1/2 + 0.1·5/6 + 0.1·1 = 7/30 -> /0.3 = 7/9.
    # Area to 0.15: 0.1·1/2 + 0.05·5/6 = 11/120 -> /0.15 = 11/18.
    # (Pooling pixels instead of regions would give 2/3 at 0.3.)
    assert aupro(AUPRO_MAPS, AUPRO_MASKS) == pytest.approx(7 / 9, abs=1e-12)
    assert aupro(AUPRO_MAPS, AUPRO_MASKS, fpr_limit=0.15) == pytest.approx(11 / 18, abs=1e-12)


def test_aupro_perfect_map_and_regions() -> None:
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 2:5, 2:5] = masks[0, 10:14, 9:15] = masks[1, 6:8, 1:3] = True
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)
    assert aupro(-masks.astype(float), masks) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks.astype(float), masks, fpr_limit=0.0)


def test_aupimo_perfect_random_and_half() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), dtype=bool)
    masks[3:, 8:20, 8:20] = True
    noise = rng.random(masks.shape)
    perfect = aupimo(np.where(masks, 2.0, noise), masks)
    assert perfect.image_indices.tolist() == [3, 4, 5]
    np.testing.assert_allclose(perfect.scores, 1.0)
    assert np.all(aupimo(noise, masks).scores < 0.05)
    # 3·1024 normal pixels < 1e4, so every FPR level allows no false positive:
    # flagged iff above the top normal score; half of each defect is -> 0.5.
    half = np.where(masks, noise + np.where(np.arange(32) % 2 == 0, 1.0, -1.0), noise)
    np.testing.assert_allclose(aupimo(half, masks).scores, 0.5)


def test_aupimo_log_discretisation() -> None:
    # 1e5 normal pixels with scores 1..1e5; at FPR level f, m = floor(1e5·f) in
    # 1..10 may be flagged: flagged iff score > 1e5 - m. The 10 defect pixels
    # score 1e5 - 0.5, ..., 1e5 - 9.5, so TPR(f) = m/10 and with u = log10 f
    # AUPIMO = ∫_{-5}^{-4} floor(10^(u+5))/10 du = Σ_{m=1}^{9} (m/10)·log10((m+1)/m)
    #        = (9 - log10(9!))/10 (telescoping); the fine grid matches it to 1e-3.
    n = 100_000
    maps = np.zeros((2, 100, 1000))
    maps[0].flat = np.random.default_rng(1).permutation(np.arange(1, n + 1))
    masks = np.zeros(maps.shape, dtype=bool)
    masks[1, 0, :10] = True
    maps[1, 0, :10] = n - 0.5 - np.arange(10)
    result = aupimo(maps, masks, n_points=10_001)
    expected = (9 - math.log10(math.factorial(9))) / 10
    assert result.scores[0] == pytest.approx(expected, abs=1e-3)


def test_contamination_warning_triggers_and_stays_quiet() -> None:
    names = ["cat", "dog", "fox"]
    probs = np.full((100, 3), 1 / 3)
    probs[[7, 31, 50, 51, 52]] = [0.02, 0.96, 0.02]
    assert contamination_warning(probs, names) is None  # 5 of 100: not more than 5%
    probs[30] = [0.98, 0.01, 0.01]
    warning = contamination_warning(probs, names)  # 6 of 100 > 5%
    assert isinstance(warning, ContaminationWarning)
    assert (warning.count, warning.total, warning.fraction) == (6, 100, 0.06)
    assert [(o.index, o.class_name) for o in warning.offenders] == [
        (30, "cat"), (7, "dog"), (31, "dog"), (50, "dog"), (51, "dog"), (52, "dog")
    ]  # fmt: skip
    assert warning.offenders[0].confidence == 0.98
    assert "6 of 100" in warning.message and "#30 cat (0.980)" in warning.message
    assert contamination_warning(probs, names, threshold=0.99) is None
    short = contamination_warning(probs, names, max_offenders=2)
    assert short is not None and len(short.offenders) == 2


def test_contamination_warning_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one column per class"):
        contamination_warning(np.full((4, 2), 0.5), ["a", "b", "c"])
    with pytest.raises(ValueError, match="sum to 1"):
        contamination_warning(np.full((4, 2), 0.9), ["a", "b"])
