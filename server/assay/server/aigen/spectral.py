"""Training-free spectral evidence for AI-generated images (supporting evidence only).

Generators up-sample feature maps (transposed convolutions, interpolation), which leaves
periodic peaks and an altered high-frequency decay in the Fourier spectrum of an image's
*noise residual* -- Corvi et al., "Intriguing properties of synthetic images" (2023);
Dzanic et al., "Fourier spectrum discrepancies in deep network generated images" (2020);
Chandrasegaran et al., "A Closer Look at Fourier Spectrum Discrepancies for CNN-generated
Images Detection" (2021). This module turns that into a score calibrated on the user's own
real photos. It must never be the sole verdict: JPEG re-compression, resizing and sharpening
move the same statistics.

Pipeline: ``r = g - median3x3(g)`` on the greyscale ``g``; up to 4 x 4 centred ``N x N`` tiles
of ``r``; per tile subtract the mean, apply a 2-D Hann window ``w`` and take
``P = mean_tiles |FFT2(w * t)|^2 / sum(w^2)``; ``L = log10(P + 1e-12)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

KIND = "spectral"
VERSION = 1
_MAX_TILES_PER_AXIS = 4
_EPS_POWER = 1e-12
_EPS_STD = 1e-6
_NEIGHBOUR_RADIUS = 4
_PERIODS = (2, 4, 8)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_image(image: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image must be HxW or HxWxC with C in (1, 3, 4), got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image is empty: shape {arr.shape}")
    return arr


def _check_crop(crop: int) -> None:
    if crop < 16 or crop % 8:
        raise ValueError(f"crop must be a multiple of 8 and >= 16, got {crop}")


def residual(image: npt.ArrayLike) -> np.ndarray:
    """High-pass noise residual ``r = g - median3x3(g)`` (float32, HxW).

    ``g`` is the image itself for one channel, else Rec.601 luma ``0.299R + 0.587G + 0.114B``
    (alpha ignored). Subtracting the 3x3 median (edge-preserving denoiser, replicated border)
    removes scene content and low frequencies, keeping the high-frequency residual in which
    up-sampling traces live (Corvi et al., 2023).

    Raises:
        ValueError: if the image is not a non-empty uint8 HxW / HxWxC array.
    """
    arr = _check_image(image)
    grey = arr.astype(np.float32) if arr.ndim == 2 else arr[..., :3].astype(np.float32)
    if grey.ndim == 3:
        grey = grey[..., 0] if arr.shape[2] == 1 else grey @ _LUMA
    grey = np.ascontiguousarray(grey, dtype=np.float32)
    return (grey - cv2.medianBlur(grey, 3)).astype(np.float32)


def _log_power(res: npt.ArrayLike, crop: int) -> np.ndarray:
    """Tile-averaged, Hann-windowed log10 power spectrum ``L`` (crop x crop, DC at [0, 0]).

    Images smaller than ``crop`` are mirror-padded (``numpy.pad`` mode ``"symmetric"``) up to
    ``crop``; larger ones contribute a centred grid of at most 4 x 4 non-overlapping tiles.
    """
    _check_crop(crop)
    r = np.asarray(res, dtype=np.float64)
    if r.ndim != 2 or r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError(f"residual must be a non-empty finite 2-D array, got shape {r.shape}")
    pad = [(0, max(0, crop - n)) for n in r.shape]
    r = np.pad(r, pad, mode="symmetric")
    ny, nx = (min(n // crop, _MAX_TILES_PER_AXIS) for n in r.shape)
    y0, x0 = (r.shape[0] - ny * crop) // 2, (r.shape[1] - nx * crop) // 2
    block = r[y0 : y0 + ny * crop, x0 : x0 + nx * crop]
    tiles = block.reshape(ny, crop, nx, crop).swapaxes(1, 2).reshape(-1, crop, crop)
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(crop), np.hanning(crop))
    power = np.abs(np.fft.fft2(tiles * window)) ** 2
    return np.log10(power.mean(axis=0) / np.sum(window**2) + _EPS_POWER)


def _azimuthal(log_power: np.ndarray, n_bins: int) -> np.ndarray:
    crop = log_power.shape[0]
    if not 1 <= n_bins <= crop // 2:
        raise ValueError(f"n_bins must be in [1, crop // 2 = {crop // 2}], got {n_bins}")
    f = np.fft.fftfreq(crop)
    radius = np.hypot(f[:, None], f[None, :])
    inside = radius <= 0.5
    idx = np.minimum((radius[inside] / 0.5 * n_bins).astype(np.int64), n_bins - 1)
    sums = np.bincount(idx, weights=log_power[inside], minlength=n_bins)
    return sums / np.bincount(idx, minlength=n_bins)


def _peak(log_power: np.ndarray) -> float:
    crop, k = log_power.shape[0], _NEIGHBOUR_RADIUS
    offsets = np.arange(-k, k + 1)
    ring = np.ones((2 * k + 1, 2 * k + 1), dtype=bool)
    ring[k - 1 : k + 2, k - 1 : k + 2] = False  # Hann leakage spreads a line over +-1 bin
    best = -np.inf
    for period in _PERIODS:
        q = crop // period
        for a, b in {(q, 0), (0, q), (q, q), (q, (crop - q) % crop)}:
            hood = log_power[np.ix_((a + offsets) % crop, (b + offsets) % crop)]
            best = max(best, float(log_power[a, b] - np.median(hood[ring])))
    return best


def azimuthal_spectrum(res: npt.ArrayLike, crop: int = 256, n_bins: int = 64) -> np.ndarray:
    """Azimuthally averaged log10 power spectrum of a residual (length ``n_bins``).

    ``S_b = mean{ L(u, v) : b <= n_bins * rho(u, v) / 0.5 < b + 1 }`` with radial frequency
    ``rho = sqrt(u^2 + v^2)`` in cycles/pixel from 0 to Nyquist (0.5; corners beyond are
    dropped). See the module docstring for ``L``, tiling and padding.

    Raises:
        ValueError: bad residual, ``crop`` not a multiple of 8 >= 16, or ``n_bins`` outside
            ``[1, crop // 2]``.
    """
    return _azimuthal(_log_power(res, crop), n_bins)


def periodic_peak_score(res: npt.ArrayLike, crop: int = 256) -> float:
    """Up-sampling-grid statistic, in decades of power (log10).

    For each period ``p`` in (2, 4, 8) with ``q = crop / p`` and each grid frequency
    ``(u, v)`` in ``{(q, 0), (0, q), (q, q), (q, -q)}`` (mod ``crop``) the score is
    ``L(u, v) - median(L over the 9 x 9 window around (u, v) minus its central 3 x 3)``;
    the result is the maximum over all positions. Additive periodic patterns (e.g. the
    checkerboard of transposed convolutions) give lines there. Nearest-neighbour up-sampling
    does not: its 2x2 box kernel has a null at Nyquist. JPEG's 8x8 grid lifts the period-8
    terms of real photos too, which is why the profile standardises this score.
    """
    return _peak(_log_power(res, crop))


@dataclass(frozen=True)
class SpectralEvidence:
    """Spectral deviation of one image from a real-photo profile (evidence, not a verdict)."""

    score: float
    threshold: float
    deviates: bool
    spectrum: list[float]
    peak_score: float


@dataclass(frozen=True)
class SpectralProfile:
    """Real-photo statistics: per-bin mean/std of ``S`` and mean/std of the peak score.

    Deviation score ``D = mean_b ((S_b - mu_b) / sigma_b)^2 + (peak - mu_p) / sigma_p``
    (stds floored at 1e-6); ``D > threshold`` marks a deviation.
    """

    mean: np.ndarray
    std: np.ndarray
    peak_mean: float
    peak_std: float
    threshold: float
    crop: int
    target_fpr: float

    def score(self, spectrum: np.ndarray, peak: float) -> float:
        """Deviation score ``D`` of one spectrum and peak score."""
        z = (spectrum - self.mean) / self.std
        return float(np.mean(z**2) + (peak - self.peak_mean) / self.peak_std)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store (float64 ``mean`` and ``std``)."""
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    def meta(self) -> dict[str, Any]:
        """JSON-able, versioned scalars."""
        return {
            "kind": KIND,
            "version": VERSION,
            "n_bins": int(self.mean.size),
            "crop": self.crop,
            "peak_mean": self.peak_mean,
            "peak_std": self.peak_std,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> SpectralProfile:
        """Rebuild (bit-exact) from :meth:`to_arrays` / :meth:`meta`; ValueError if invalid."""
        if meta.get("kind") != KIND or meta.get("version") != VERSION:
            raise ValueError(f"expected {KIND} profile v{VERSION}, got {dict(meta)!r}")
        try:
            mean = np.asarray(arrays["mean"], dtype=np.float64)
            std = np.asarray(arrays["std"], dtype=np.float64)
            n_bins, crop = int(meta["n_bins"]), int(meta["crop"])
            peak_mean, peak_std = float(meta["peak_mean"]), float(meta["peak_std"])
            threshold, target_fpr = float(meta["threshold"]), float(meta["target_fpr"])
        except KeyError as exc:
            raise ValueError(f"spectral profile is missing {exc}") from None
        if mean.shape != (n_bins,) or std.shape != (n_bins,) or np.any(std <= 0):
            raise ValueError(f"spectral arrays {mean.shape}/{std.shape} disagree with n_bins")
        _check_crop(crop)
        return cls(mean, std, peak_mean, peak_std, threshold, crop, target_fpr)


def _features(image: npt.ArrayLike, crop: int, n_bins: int) -> tuple[np.ndarray, float]:
    log_power = _log_power(residual(image), crop)
    return _azimuthal(log_power, n_bins), _peak(log_power)


def fit_real_profile(
    real_images: Sequence[npt.ArrayLike],
    target_fpr: float = 0.05,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    *,
    crop: int = 256,
    n_bins: int = 64,
) -> SpectralProfile:
    """Fit a :class:`SpectralProfile` on real photos, thresholded on a real holdout.

    A seeded shuffle splits off ``max(1, round(n * holdout_fraction))`` images (at least 2
    remain for the statistics); the threshold is the ``1 - target_fpr`` quantile (numpy
    ``method="higher"``) of ``D`` on the holdout, so at most ``target_fpr`` of it exceeds it.

    Raises:
        ValueError: fewer than 3 images, bad fractions or bad images.
    """
    if len(real_images) < 3:
        raise ValueError(f"need at least 3 real images to fit, got {len(real_images)}")
    if not 0.0 < target_fpr < 1.0 or not 0.0 < holdout_fraction < 1.0:
        raise ValueError(
            f"target_fpr and holdout_fraction must be in (0, 1), got "
            f"{target_fpr}, {holdout_fraction}"
        )
    n = len(real_images)
    n_hold = min(max(1, round(n * holdout_fraction)), n - 2)
    order = np.random.default_rng(seed).permutation(n)
    feats = [_features(real_images[i], crop, n_bins) for i in order]
    spectra = np.stack([s for s, _ in feats[n_hold:]])
    peaks = np.array([p for _, p in feats[n_hold:]])
    draft = SpectralProfile(
        mean=spectra.mean(axis=0),
        std=np.maximum(spectra.std(axis=0, ddof=1), _EPS_STD),
        peak_mean=float(peaks.mean()),
        peak_std=float(max(peaks.std(ddof=1), _EPS_STD)),
        threshold=0.0,
        crop=crop,
        target_fpr=float(target_fpr),
    )
    held = [draft.score(s, p) for s, p in feats[:n_hold]]
    threshold = float(np.quantile(held, 1.0 - target_fpr, method="higher"))
    return dataclasses.replace(draft, threshold=threshold)


def spectral_evidence(profile: SpectralProfile, image: npt.ArrayLike) -> SpectralEvidence:
    """Score one image against ``profile``; ``deviates`` iff ``D > threshold``."""
    spectrum, peak = _features(image, profile.crop, int(profile.mean.size))
    score = profile.score(spectrum, peak)
    return SpectralEvidence(
        score=score,
        threshold=profile.threshold,
        deviates=score > profile.threshold,
        spectrum=[float(v) for v in spectrum],
        peak_score=peak,
    )
