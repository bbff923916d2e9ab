"""Noise corruptions: gaussian, shot and impulse noise, plus the extra speckle noise.

Formulas and per-severity constants follow ImageNet-C (Hendrycks & Dietterich,
2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations"). All four act per pixel and channel on intensities scaled to
[0, 1], so their parameters need no adjustment for image size. Arithmetic is
float32 on the 0..255 scale; randomness comes only from the `rng` argument.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from assay.server.robustness.corruptions.base import clip_uint8, register

GAUSSIAN_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
"""Standard deviation of the additive noise, in units of full scale."""
SHOT_NOISE_PHOTONS = (60, 25, 12, 5, 3)
"""Photon count of a full-scale pixel; fewer photons mean more noise."""
IMPULSE_NOISE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
"""Fraction of channel values replaced by salt (255) or pepper (0)."""
SPECKLE_NOISE_SIGMA = (0.15, 0.2, 0.35, 0.45, 0.6)
"""Standard deviation of the multiplicative noise."""

_GUIDE_BINS = 1024
"""Quantile-guide resolution of the shot-noise sampler (speed only; sampling is exact)."""


@functools.lru_cache(maxsize=len(SHOT_NOISE_PHOTONS))
def _poisson_tables(photons: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Inverse-CDF tables for Poisson(level * photons / 255), one row per uint8 level.

    Args:
        photons: expected count of a full-scale (255) pixel.

    Returns:
        (flattened CDF rows, each ``counts`` long; flattened guide rows holding
        the smallest count whose CDF reaches ``j / _GUIDE_BINS``; ``counts``).
    """
    rates = np.arange(256) * (photons / 255.0)
    counts = int(photons + 12 * math.sqrt(photons) + 24)  # the tail beyond is < 1e-20
    pmf = np.empty((256, counts))
    pmf[:, 0] = np.exp(-rates)
    for k in range(1, counts):
        pmf[:, k] = pmf[:, k - 1] * rates / k
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = 1.0
    quantiles = np.arange(_GUIDE_BINS) / _GUIDE_BINS
    guide = np.stack([np.searchsorted(row, quantiles) for row in cdf]).astype(np.int32)
    return cdf.ravel(), guide.ravel(), counts


@register("gaussian_noise", "noise")
def gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive gaussian noise (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = clip(x + n)`` with ``n ~ N(0, sigma^2)`` drawn independently per
    pixel and channel, ``x`` in [0, 1] and ``sigma = GAUSSIAN_NOISE_SIGMA[severity - 1]``.
    """
    sigma = GAUSSIAN_NOISE_SIGMA[severity - 1] * 255.0
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(sigma)
    noise += image
    return clip_uint8(noise)


@register("shot_noise", "noise")
def shot_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson (photon-counting) noise (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = clip(Poisson(x * c) / c)`` per pixel and channel, with ``x`` in
    [0, 1] and ``c = SHOT_NOISE_PHOTONS[severity - 1]`` photons at full scale.
    Counts are drawn exactly by inverting each uint8 level's Poisson CDF with
    one uniform per value (tables cached per severity), about twice as fast as
    ``Generator.poisson`` on per-pixel rates.
    """
    photons = SHOT_NOISE_PHOTONS[severity - 1]
    cdf, guide, counts = _poisson_tables(photons)
    # Inversion: the count is the smallest k with CDF(k) >= u. The guide gives a
    # lower bound from u's bin; the rare draws past it step up one count at a time.
    levels = image.reshape(-1).astype(np.int32)
    uniform = rng.random(levels.size)
    bins = (uniform * _GUIDE_BINS).astype(np.int32)
    position = guide[levels * _GUIDE_BINS + bins] + levels * counts
    short = np.flatnonzero(cdf[position] < uniform)
    while short.size:
        position[short] += 1
        short = short[cdf[position[short]] < uniform[short]]
    photon_counts = (position - levels * counts).astype(np.float32).reshape(image.shape)
    return clip_uint8(photon_counts * np.float32(255.0 / photons))


@register("impulse_noise", "noise")
def impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise (ImageNet-C, Hendrycks & Dietterich 2019).

    Each channel value independently becomes 255 (salt) with probability
    ``a / 2``, 0 (pepper) with probability ``a / 2`` and is kept otherwise,
    with ``a = IMPULSE_NOISE_AMOUNT[severity - 1]``.
    """
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    draw = rng.random(image.shape, dtype=np.float32)
    out = image.copy()
    out[draw < amount] = 0
    out[draw < amount / 2] = 255
    return out


@register("speckle_noise", "noise", extra=True)
def speckle_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative gaussian (speckle) noise (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = clip(x + x * n)`` with ``n ~ N(0, sigma^2)`` drawn independently per
    pixel and channel and ``sigma = SPECKLE_NOISE_SIGMA[severity - 1]``.
    """
    sigma = SPECKLE_NOISE_SIGMA[severity - 1]
    factor = rng.standard_normal(image.shape, dtype=np.float32)
    factor *= np.float32(sigma)
    factor += np.float32(1.0)
    factor *= image
    return clip_uint8(factor)
