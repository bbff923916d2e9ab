"""Domain tests for AI-generated image detection: tiling, stability, calibration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.server.aigen.calibration import calibrated_log_odds, ensemble, fit_detector_threshold
from assay.server.aigen.stability import stable_verdict, variants
from assay.server.aigen.tiling import aggregate, crops
from assay.server.stats.ranking import auroc, average_precision


def _image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


# --- tiling -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "stride"), [((300, 500), (128, 96), None), ((257, 129), (64, 64), 48)]
)
def test_crops_equal_source_pixels_and_cover_image(shape, size, stride):
    img = _image(*shape)
    cs = crops(img, size, max_crops=10_000, stride=stride)
    h, w = size
    assert cs.crops.shape == (len(cs.boxes), h, w, 3)
    assert cs.crops.dtype == np.uint8
    assert cs.padding == (0, 0)
    covered = np.zeros(shape, dtype=bool)
    for crop, (top, left) in zip(cs.crops, cs.boxes, strict=True):
        np.testing.assert_array_equal(crop, img[top : top + h, left : left + w])
        covered[top : top + h, left : left + w] = True
    assert covered.all()
    # Last row/column of the grid is aligned to the border.
    assert max(t for t, _ in cs.boxes) == shape[0] - h
    assert max(le for _, le in cs.boxes) == shape[1] - w


def test_small_image_is_reflection_padded_not_resampled():
    img = _image(40, 70, seed=1)
    cs = crops(img, (64, 64), max_crops=8)
    assert cs.padded and cs.padding == (24, 0)
    assert cs.source_shape == (40, 70)
    assert cs.boxes == [(0, 0), (0, 6)]
    for crop, (top, left) in zip(cs.crops, cs.boxes, strict=True):
        assert crop.shape == (64, 64, 3)
        # The original pixels appear unchanged at their own coordinates.
        np.testing.assert_array_equal(crop[:40], img[top:40, left : left + 64])
        # Padding is a mirror (without repeating the border row).
        np.testing.assert_array_equal(crop[40:64], img[38:14:-1, left : left + 64])


def test_tiny_image_and_grayscale():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    cs = crops(img, (5, 5), max_crops=4)
    assert cs.crops.shape == (1, 5, 5, 1)
    assert cs.padding == (3, 2)
    np.testing.assert_array_equal(cs.crops[0, :2, :3, 0], img)


def test_crop_cap_on_large_image_is_deterministic_and_spread():
    img = np.zeros((3000, 4000, 3), dtype=np.uint8)
    cs = crops(img, (224, 224), max_crops=16)
    assert cs.grid_shape == (14, 18)
    assert len(cs.boxes) <= 16
    assert len(cs.boxes) == 16  # a 4 x 4 sub-grid fits exactly
    assert len(set(cs.boxes)) == len(cs.boxes)
    tops = sorted({t for t, _ in cs.boxes})
    lefts = sorted({le for _, le in cs.boxes})
    assert tops[0] == 0 and tops[-1] == 3000 - 224
    assert lefts[0] == 0 and lefts[-1] == 4000 - 224
    again = crops(img, (224, 224), max_crops=16)
    assert again.boxes == cs.boxes
    assert len(crops(img, (224, 224), max_crops=1).boxes) == 1


def test_crop_argument_validation():
    img = _image(32, 32)
    with pytest.raises(ValueError):
        crops(img.astype(np.float32), (8, 8), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        crops(img, (8, 8), 0)
    with pytest.raises(ValueError):
        crops(img, (8, 8), 4, stride=9)


def test_aggregate():
    s = np.array([0.1, 0.9, 0.4, 0.8, 0.2])
    assert aggregate(s, "max") == pytest.approx(0.9)
    assert aggregate(s, "top_k_mean", k=3) == pytest.approx((0.9 + 0.8 + 0.4) / 3)
    assert aggregate(s, "top_k_mean", k=10) == pytest.approx(s.mean())
    with pytest.raises(ValueError):
        aggregate(np.array([]))
    with pytest.raises(ValueError):
        aggregate(s, "median")  # type: ignore[arg-type]


# --- stability --------------------------------------------------------------


def test_variants_sizes_and_jpeg_matches_independent_roundtrip():
    img = _image(101, 150, seed=2)
    v = variants(img)
    assert list(v) == [
        "jpeg_q95",
        "jpeg_q85",
        "jpeg_q75",
        "downscale_0.75",
        "downscale_0.5",
        "gaussian_blur_s1.0",
    ]
    for q in (95, 85, 75):
        assert v[f"jpeg_q{q}"].shape == img.shape
    assert v["downscale_0.75"].shape == (76, 113, 3)  # floor(101*.75+.5), floor(150*.75+.5)
    assert v["downscale_0.5"].shape == (51, 75, 3)
    assert v["gaussian_blur_s1.0"].shape == img.shape
    assert all(x.dtype == np.uint8 for x in v.values())

    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    expected = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(v["jpeg_q85"], expected)
    assert not np.array_equal(v["jpeg_q85"], img)


def test_variants_keep_grayscale_layout():
    img = _image(40, 30, c=1)
    for name, out in variants(img).items():
        assert out.ndim == 3 and out.shape[2] == 1, name


def test_jpeg_flip_yields_unsure_and_consistent_variants_are_stable():
    names = list(variants(_image(16, 16)))
    threshold = 0.5
    consistent_gen = dict.fromkeys(names, 0.8)
    res = stable_verdict(0.9, consistent_gen, threshold)
    assert res.verdict == "GENERATED" and res.flip_fraction == 0.0
    assert not any(res.flips.values())

    consistent_real = dict.fromkeys(names, 0.2)
    assert stable_verdict(0.1, consistent_real, threshold).verdict == "REAL"

    # Base just above the threshold; the JPEG q75 re-save drops below it.
    flipped = dict.fromkeys(names, 0.52)
    flipped["jpeg_q75"] = 0.47
    res = stable_verdict(0.51, flipped, threshold)
    assert res.verdict == "UNSURE"
    assert res.flips == {n: n == "jpeg_q75" for n in names}
    assert res.flip_fraction == pytest.approx(1 / len(names))
    assert res.variant_probabilities["jpeg_q75"] == pytest.approx(0.47)
    # A tolerance of one flip in six restores the base verdict.
    assert stable_verdict(0.51, flipped, threshold, max_flip_fraction=0.2).verdict == "GENERATED"
    # p == threshold counts as generated: no flip.
    assert stable_verdict(0.5, {"jpeg_q95": 0.5}, threshold).verdict == "GENERATED"
    with pytest.raises(ValueError):
        stable_verdict(0.5, {}, threshold)


# --- calibration ------------------------------------------------------------


def test_threshold_meets_target_fpr_with_ties():
    real = np.array([0.1, 0.2, 0.3, 0.7, 0.7, 0.7, 0.4, 0.5, 0.6, 0.2] * 2)  # n = 20
    gen = np.array([0.9, 0.8, 0.7, 0.65, 0.3, 0.95])
    for target in (0.0, 0.05, 0.1, 0.15, 0.3, 0.31, 0.5):
        cal = fit_detector_threshold(real, gen, target_fpr=target)
        fpr = np.mean(real >= cal.threshold)
        assert fpr == cal.achieved_fpr
        assert fpr <= target
        # Smallest such threshold: one float lower would violate the target.
        assert np.mean(real >= np.nextafter(cal.threshold, -np.inf)) > target
        assert cal.tpr == np.mean(gen >= cal.threshold)
    # Six tied 0.7s: a 5-30% target cannot admit any of them.
    cal = fit_detector_threshold(real, gen, target_fpr=0.1)
    assert cal.achieved_fpr == 0.0 and 0.7 < cal.threshold < 0.7000001
    assert fit_detector_threshold(real, gen, target_fpr=0.3).achieved_fpr == pytest.approx(0.3)
    everything = fit_detector_threshold(real, gen, target_fpr=1.0)
    assert everything.achieved_fpr == 1.0 and everything.tpr == 1.0


def test_ap_and_auroc_match_sklearn():
    rng = np.random.default_rng(3)
    real = np.round(rng.normal(0.0, 1.0, 200), 1)  # rounding creates ties
    gen = np.round(rng.normal(1.0, 1.0, 150), 1)
    y = np.r_[np.zeros(real.size), np.ones(gen.size)]
    s = np.r_[real, gen]
    cal = fit_detector_threshold(real, gen)
    assert cal.ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert cal.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    y2 = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    s2 = np.array([0.3, 0.3, 0.9, 0.1, 0.5, 0.5, 0.2, 0.3])
    assert average_precision(y2, s2) == pytest.approx(average_precision_score(y2, s2), abs=1e-12)
    assert auroc(y2, s2) == pytest.approx(roc_auc_score(y2, s2), abs=1e-12)


def test_calibrated_log_odds_and_ensemble():
    p = np.array([[0.7, 0.2], [0.7, 0.9]])
    t = np.array([0.7, 0.5])
    z = calibrated_log_odds(p, t)
    np.testing.assert_allclose(z[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, 1], np.log(p[:, 1] / (1 - p[:, 1])), atol=1e-9)
    e = ensemble(z)
    assert e.shape == (2,)
    np.testing.assert_allclose(e, z.mean(axis=1))
    assert e[0] < 0 < e[1]
    with pytest.raises(ValueError):
        ensemble(np.zeros((0, 2)))
