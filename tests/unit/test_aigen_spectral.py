"""Unit tests for the spectral AI-generated-image evidence."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from assay.server.aigen.spectral import (
    SpectralProfile,
    azimuthal_spectrum,
    fit_real_profile,
    periodic_peak_score,
    residual,
    spectral_evidence,
)

CROP = 128


def _photos() -> list[np.ndarray]:
    try:
        from skimage import data

        return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    except ImportError:  # pragma: no cover - fallback: natural 1/f random fields
        rng = np.random.default_rng(0)
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))
        out = []
        for _ in range(4):
            field = np.fft.ifft2(
                np.fft.fft2(rng.normal(size=(512, 512))) / np.maximum(f, 1e-3)
            ).real
            field = (field - field.min()) / np.ptp(field) * 255
            out.append(np.repeat(field[..., None], 3, axis=2).astype(np.uint8))
        return out


def _real_crops(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    photos = _photos()
    crops = []
    for i in range(n):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - CROP), rng.integers(0, p.shape[1] - CROP)
        crops.append(np.ascontiguousarray(p[y : y + CROP, x : x + CROP]))
    return crops


def _zero_insert_up(img: np.ndarray) -> np.ndarray:
    """Transposed-conv-like 2x up-sampling: zero insertion, then a blur kernel without a Nyquist null."""
    small = cv2.resize(img, (CROP // 2, CROP // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    up = np.zeros((CROP, CROP, 3), np.float32)
    up[::2, ::2] = small
    k = np.array([0.25, 1.0, 0.25], np.float32)
    return np.clip(cv2.sepFilter2D(up, -1, k, k), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def profile() -> SpectralProfile:
    return fit_real_profile(_real_crops(60, seed=1), target_fpr=0.05, crop=CROP, n_bins=32)


def test_residual_removes_low_frequencies() -> None:
    img = _photos()[0]
    r = residual(img)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    assert r.dtype == np.float32 and r.shape == img.shape[:2]
    assert abs(float(r.mean())) < 1.0

    def low_power(x: np.ndarray) -> float:
        f = np.abs(np.fft.fft2(x - x.mean())) ** 2
        return float(f[1:9, 1:9].sum())

    assert low_power(r.astype(np.float64)) < 1e-3 * low_power(grey)


def test_white_noise_spectrum_is_flat() -> None:
    noise = np.random.default_rng(0).normal(size=(512, 512))
    s = azimuthal_spectrum(noise, crop=256, n_bins=64)
    assert s.shape == (64,)
    assert np.ptp(s[4:]) < 0.3 and np.std(s[4:]) < 0.05


def test_peak_score_detects_upsampling_grid() -> None:
    reals = _real_crops(12, seed=2)
    real_scores = [periodic_peak_score(residual(im), crop=CROP) for im in reals]
    fake_scores = [periodic_peak_score(residual(_zero_insert_up(im)), crop=CROP) for im in reals]
    assert min(fake_scores) > max(real_scores) + 0.5
    assert np.median(fake_scores) > np.median(real_scores) + 1.5


def test_threshold_keeps_real_holdout(profile: SpectralProfile) -> None:
    fresh = _real_crops(40, seed=3)
    kept = np.mean([not spectral_evidence(profile, im).deviates for im in fresh])
    assert kept >= 0.8  # unseen crops; the fitted holdout itself keeps >= 1 - target_fpr
    holdout = _real_crops(60, seed=1)
    refit = fit_real_profile(holdout, target_fpr=0.05, crop=CROP, n_bins=32)
    order = np.random.default_rng(0).permutation(60)[:12]
    held = [spectral_evidence(refit, holdout[i]).score <= refit.threshold for i in order]
    assert np.mean(held) >= 0.95


def test_upsampled_images_deviate(profile: SpectralProfile) -> None:
    # Zero-insertion (transposed-conv-like) only: nearest-neighbour's 2x2 box kernel has a
    # Nyquist null, so it leaves no peak and is not separable here (AUROC ~0.57 measured).
    reals = _real_crops(30, seed=4)
    up = _zero_insert_up
    real = [spectral_evidence(profile, im).score for im in reals]
    fake = [spectral_evidence(profile, up(im)).score for im in reals]
    auroc = roc_auc_score([0] * len(real) + [1] * len(fake), real + fake)
    assert auroc > 0.9
    ev = spectral_evidence(profile, up(reals[0]))
    assert len(ev.spectrum) == 32 and ev.threshold == profile.threshold


def test_round_trip_is_exact(profile: SpectralProfile) -> None:
    meta = json.loads(json.dumps(profile.meta()))
    assert meta["kind"] == "spectral" and meta["version"] == 1
    back = SpectralProfile.from_arrays(profile.to_arrays(), meta)
    assert np.array_equal(back.mean, profile.mean) and np.array_equal(back.std, profile.std)
    assert back.meta() == profile.meta()
    img = _real_crops(1, seed=5)[0]
    assert spectral_evidence(back, img) == spectral_evidence(profile, img)


def test_bad_inputs_raise(profile: SpectralProfile) -> None:
    good = _real_crops(3, seed=6)
    with pytest.raises(ValueError, match="uint8"):
        residual(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="HxW"):
        residual(np.zeros((8,), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        residual(np.zeros((0, 8), np.uint8))
    with pytest.raises(ValueError, match="at least 3"):
        fit_real_profile(good[:2], crop=CROP)
    with pytest.raises(ValueError, match="target_fpr"):
        fit_real_profile(good, target_fpr=1.5, crop=CROP)
    with pytest.raises(ValueError, match="n_bins"):
        azimuthal_spectrum(np.zeros((64, 64)), crop=64, n_bins=64)
    with pytest.raises(ValueError, match="crop"):
        periodic_peak_score(np.zeros((64, 64)), crop=30)
    with pytest.raises(ValueError, match="kind"):
        SpectralProfile.from_arrays(profile.to_arrays(), {**profile.meta(), "kind": "x"})
    with pytest.raises(ValueError, match="missing"):
        SpectralProfile.from_arrays({}, profile.meta())


def test_small_images_are_padded() -> None:
    tiny = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert azimuthal_spectrum(residual(tiny), crop=CROP, n_bins=16).shape == (16,)
