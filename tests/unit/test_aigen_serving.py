"""Serving-side AI-generated detection pieces: decoding, score reading, profiles, fits, metrics."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from assay.server.aigen.evaluation import binary_metrics, confident_mistakes, curves, histogram
from assay.server.aigen.fit_job import fit_profile, fit_spectrum, spectral_crop, split
from assay.server.aigen.images import decode_rgb
from assay.server.aigen.profiles import DETECTOR_PROFILES, DetectorProfile
from assay.server.aigen.scoring import generated_probability
from assay.server.aigen.verdicts import decide
from assay.server.errors import ImageTooLargeError, InvalidArgumentError, InvalidImageError
from assay.server.models.config import ModelConfig
from assay.server.models.preprocess import EncodedImage, InputTensor, PixelImage
from assay.server.profiles import ProfileStore
from assay.server.store import open_store


def _encode(image: Image.Image, fmt: str, **kw: object) -> EncodedImage:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return EncodedImage(buffer.getvalue())


def _photo(h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- decoding ---------------------------------------------------------------


def test_decode_keeps_resolution_and_pixels_of_png_and_raw() -> None:
    photo = _photo()
    decoded = decode_rgb(_encode(Image.fromarray(photo), "PNG"), 10_000)
    np.testing.assert_array_equal(decoded, photo)
    np.testing.assert_array_equal(decode_rgb(PixelImage(photo), 10_000), photo)
    grey = decode_rgb(PixelImage(photo[:, :, :1]), 10_000)
    assert grey.shape == (40, 60, 3) and np.all(grey[:, :, 2] == photo[:, :, 0])


def test_sixteen_bit_png_keeps_its_top_eight_bits() -> None:
    wide = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 31).astype(np.uint16)
    decoded = decode_rgb(_encode(Image.fromarray(wide), "PNG"), 10_000)
    assert decoded.shape == (32, 64, 3)
    np.testing.assert_array_equal(decoded[:, :, 0], (wide >> 8).astype(np.uint8))
    assert decoded.max() > 200  # not clipped to white nor crushed to black


def test_cmyk_jpeg_and_palette_gif_decode_to_rgb() -> None:
    cmyk = Image.fromarray(_photo()).convert("CMYK")
    decoded = decode_rgb(_encode(cmyk, "JPEG", quality=95), 10_000)
    assert decoded.shape == (40, 60, 3) and decoded.dtype == np.uint8
    reference = np.asarray(cmyk.convert("RGB"), dtype=np.float64)
    assert np.abs(decoded.astype(np.float64) - reference).mean() < 12  # JPEG loss only
    still = decode_rgb(_encode(Image.fromarray(_photo()).convert("P"), "GIF"), 10_000)
    assert still.shape == (40, 60, 3)


def test_bad_inputs_are_refused_with_what_to_fix() -> None:
    frames = [Image.fromarray(_photo(seed=s)).convert("P") for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="animated GIF with 3 frames"):
        decode_rgb(EncodedImage(buffer.getvalue()), 10_000)
    with pytest.raises(InvalidImageError, match="not a supported image format"):
        decode_rgb(EncodedImage(b"%PDF-1.4 not an image"), 10_000)
    with pytest.raises(InvalidImageError, match="empty"):
        decode_rgb(EncodedImage(b""), 10_000)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        decode_rgb(_encode(Image.fromarray(_photo()), "PNG"), 1000)
    with pytest.raises(InvalidArgumentError, match="not preprocessed tensors"):
        decode_rgb(InputTensor(np.zeros((3, 8, 8), np.float32)), 10_000)
    one = decode_rgb(_encode(Image.fromarray(_photo(1, 1)), "PNG"), 10_000)
    assert one.shape == (1, 1, 3)


# --- reading detector outputs ------------------------------------------------


def _config(**fields: object) -> ModelConfig:
    base: dict[str, object] = {
        "name": "det",
        "task": "aigen_detector",
        "path": "x.onnx",
        "input": {"height": 8, "width": 8},
        "outputs": {"logits": "logit"},
    }
    return ModelConfig.model_validate({**base, **fields})


def test_generated_probability_for_logit_probability_and_two_class_outputs() -> None:
    logits = np.array([[-2.0], [0.0], [3.0], [-800.0]])
    probs = generated_probability(_config(), {"logit": logits})
    from scipy.special import expit

    np.testing.assert_allclose(probs, expit(logits[:, 0]), rtol=1e-12)
    two = np.array([[1.0, 3.0], [2.0, -1.0]])
    config = _config(aigen={"generated_index": 1})
    softmax = np.exp(two) / np.exp(two).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(generated_probability(config, {"logit": two}), softmax[:, 1])
    p = np.array([[0.2], [0.9]])
    given = _config(outputs={"probabilities": "p"})
    np.testing.assert_array_equal(generated_probability(given, {"p": p}), p[:, 0])
    with pytest.raises(ValueError, match=r"aigen_detector needs outputs\.logits"):
        _config(outputs={"features": "f"})


def test_decide_one_detector_exact_and_ensemble_by_mean_log_odds() -> None:
    probs = np.array([[0.70], [0.69999]])
    z, generated = decide(probs, [0.7])
    assert generated.tolist() == [True, False] and z[0] == pytest.approx(0.0, abs=1e-12)
    both = np.array([[0.9, 0.2], [0.6, 0.55]])
    z, generated = decide(both, [0.5, 0.5])
    logit = np.log(both / (1 - both))
    np.testing.assert_allclose(z, logit.mean(axis=1))
    assert generated.tolist() == [True, True]
    z, generated = decide(both, [0.5, 0.9])  # detector 2's strict threshold outvotes
    assert generated.tolist() == [False, False]
    np.testing.assert_allclose(z, (logit - np.log([1.0, 9.0])).mean(axis=1))


# --- fitting and profiles ----------------------------------------------------


def test_split_is_stratified_seeded_and_keeps_both_classes_on_both_sides() -> None:
    labels = np.r_[np.zeros(40, np.int64), np.ones(20, np.int64)]
    held = split(labels, 0.3, seed=3)
    assert held[labels == 0].sum() == 12 and held[labels == 1].sum() == 6
    np.testing.assert_array_equal(held, split(labels, 0.3, seed=3))
    assert not np.array_equal(held, split(labels, 0.3, seed=4))
    tiny = split(np.array([0, 0, 1, 1]), 0.5, seed=0)
    assert tiny.sum() == 2 and (~tiny).sum() == 2


def test_fit_profile_meets_target_fpr_and_reports_holdout_metrics_like_sklearn() -> None:
    rng = np.random.default_rng(7)
    labels = np.r_[np.zeros(200, np.int64), np.ones(150, np.int64)]
    probs = np.clip(np.r_[rng.beta(2, 5, 200), rng.beta(5, 2, 150)], 0, 1)
    profile = fit_profile(
        probs, labels, detector=("d", "1", "sha256:x"), target_fpr=0.05,
        holdout_fraction=0.3, seed=1, spectral=None,
    )  # fmt: skip
    held = split(labels, 0.3, seed=1)
    fit_real = probs[~held & (labels == 0)]
    assert np.mean(fit_real >= profile.threshold) <= 0.05 == profile.target_fpr
    assert profile.calibration_fpr == np.mean(fit_real >= profile.threshold)
    # the smallest threshold meeting the target: one float lower breaks it
    below = np.nextafter(profile.threshold, -np.inf)
    assert np.mean(fit_real >= below) > 0.05
    y, p = labels[held], probs[held]
    assert profile.holdout_ap == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert profile.holdout_auroc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert profile.holdout_fpr == np.mean(p[y == 0] >= profile.threshold)
    assert profile.holdout_tpr == np.mean(p[y == 1] >= profile.threshold)


def test_profile_store_round_trip_is_exact_with_spectrum(tmp_path: Path) -> None:
    real = [_photo(96, 96, seed=s) for s in range(6)]
    assert spectral_crop(real) == 64 and spectral_crop([_photo(20, 300)]) == 32
    spectrum = fit_spectrum(real, 0.1, seed=0)
    profile = DetectorProfile(
        "det", "2", "sha256:ab", 0.731, 0.05, 0.04, 0.06, 0.9, 0.95, 0.97, 60, 60, 1.5, spectrum
    )
    database = open_store(f"sqlite:///{tmp_path / 'assay.sqlite3'}")
    store = ProfileStore(database, DETECTOR_PROFILES)
    store.save(profile)
    loaded = ProfileStore(database, DETECTOR_PROFILES).load("det", "2")
    assert loaded is not None and loaded.spectral is not None
    assert loaded.threshold == profile.threshold and loaded.holdout_ap == 0.95
    np.testing.assert_array_equal(loaded.spectral.mean, spectrum.mean)
    assert loaded.spectral.threshold == spectrum.threshold
    assert store.versions("det") == ["2"] and [p.version for p in store.all()] == ["2"]
    deleted = store.delete("det", "2").profile
    assert deleted is not None and deleted.version == "2" and store.load("det", "2") is None
    database.close()


# --- evaluation ---------------------------------------------------------------


def test_binary_metrics_and_curves_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(80, np.int64), np.ones(70, np.int64)]
    probs = np.round(np.r_[rng.uniform(0, 0.7, 80), rng.uniform(0.3, 1, 70)], 2)  # ties
    metrics = binary_metrics(labels, probs, 0.6, resamples=200, seed=0)
    assert metrics["ap"]["value"] == pytest.approx(average_precision_score(labels, probs))
    assert metrics["auroc"]["value"] == pytest.approx(roc_auc_score(labels, probs))
    assert metrics["accuracy_calibrated"]["value"] == pytest.approx(
        np.mean((probs >= 0.6) == (labels == 1))
    )
    assert metrics["real_accuracy_at_0_5"]["value"] == pytest.approx(np.mean(probs[:80] < 0.5))
    for e in metrics.values():
        assert e["low"] <= e["value"] <= e["high"]
    roc = curves(labels, probs, points=10_000)["roc"]
    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    counts = histogram(probs, ["real"] * 80 + ["gen_a"] * 70)
    assert sum(counts["real"]) == 80 and sum(counts["generated"]["gen_a"]) == 70
    mistakes = confident_mistakes([f"{i}.png" for i in range(150)], ["g"] * 150, labels, probs, 0.6)
    assert mistakes and all(
        (m["probability"] >= 0.6) != (m["label"] == "generated") for m in mistakes
    )
    gaps = [abs(m["probability"] - 0.6) for m in mistakes]
    assert gaps == sorted(gaps, reverse=True)
