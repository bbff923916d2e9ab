"""Blur corruptions: defocus, glass, motion and zoom blur, plus the extra gaussian blur.

Formulas and per-severity constants follow ImageNet-C (Hendrycks & Dietterich,
2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations"), whose constants are in pixels of a 224 x 224 image. Every
length (radius, sigma, displacement) is multiplied by `size_scale(image)`, so
the blur covers the same fraction of any image; zoom factors are scale-free.
Filtering runs in float32 through OpenCV; randomness comes only from `rng`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from assay.server.robustness.corruptions.base import clip_uint8, register, size_scale

DEFOCUS_BLUR_RADIUS_ALIAS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
"""(disk radius, anti-aliasing gaussian sigma), pixels at 224 x 224."""
GLASS_BLUR_SIGMA_DELTA_ITERATIONS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
"""(gaussian sigma, maximum pixel displacement, shuffle iterations), pixels at 224 x 224."""
MOTION_BLUR_RADIUS_SIGMA = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
"""(kernel radius, gaussian sigma along the streak), pixels at 224 x 224."""
ZOOM_BLUR_FACTOR_RANGES = (
    (1.0, 1.11, 0.01),
    (1.0, 1.16, 0.01),
    (1.0, 1.21, 0.02),
    (1.0, 1.26, 0.02),
    (1.0, 1.31, 0.03),
)
"""Zoom factors as numpy.arange(start, stop, step); scale-free."""
GAUSSIAN_BLUR_SIGMA = (1, 2, 3, 4, 6)
"""Gaussian sigma, pixels at 224 x 224."""


_DIRECT_GAUSSIAN_MAX = 129
"""Widest kernel for cv2.GaussianBlur; wider ones (big images) are faster as DFT filter2D."""


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Float32 gaussian blur, kernel truncated at 4 sigma, edge pixels replicated."""
    src = image if image.dtype == np.float32 else image.astype(np.float32)
    size = 2 * int(4 * sigma + 0.5) + 1
    if size <= _DIRECT_GAUSSIAN_MAX:
        return cv2.GaussianBlur(src, (size, size), sigma, borderType=cv2.BORDER_REPLICATE)
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_32F)
    rows = cv2.filter2D(src, -1, kernel.T, borderType=cv2.BORDER_REPLICATE)
    return cv2.filter2D(rows, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """Normalised float32 disk: each pixel's coverage by the circle, then a slight gaussian."""
    half = math.ceil(radius + 0.5 + 3 * alias_sigma)
    axis = np.arange(-half, half + 1, dtype=np.float32)
    distance = np.hypot(axis[:, None], axis[None, :])
    coverage = np.clip(np.float32(radius + 0.5) - distance, 0, 1)
    kernel = np.asarray(
        cv2.GaussianBlur(coverage, (0, 0), sigmaX=alias_sigma) if alias_sigma > 0.05 else coverage,
        dtype=np.float32,
    )
    return kernel / kernel.sum()


def _motion_kernel(
    radius: float, sigma: float, angle: float, scale: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """ImageNet-C's one-sided streak as a cv2.filter2D (kernel, anchor (x, y)) pair.

    Taps at distances ``t = 0 .. 2 * radius`` along ``angle`` (degrees), weights
    ``exp(-t^2 / (2 sigma^2))``, are placed at ``t * scale``, each split into
    ``ceil(scale)`` sub-taps so a stretched streak has no gaps, and splatted
    bilinearly onto the pixel grid; the kernel sums to 1.
    """
    taps = np.arange(2 * int(radius) + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    sub = max(1, math.ceil(scale))
    offsets = (np.arange(sub) + 0.5) / sub - 0.5 if sub > 1 else np.zeros(1)
    along = ((taps[:, None] + offsets[None, :]) * scale).ravel()
    weights = np.repeat(weights / sub, sub)
    px = along * math.cos(math.radians(angle))
    py = along * math.sin(math.radians(angle))
    x0, y0 = math.floor(px.min()), math.floor(py.min())
    width, height = math.floor(px.max()) - x0 + 2, math.floor(py.max()) - y0 + 2
    fx, fy = px - x0, py - y0
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    wx, wy = fx - ix, fy - iy
    kernel = np.zeros(height * width)
    for dy, share_y in ((0, 1 - wy), (1, wy)):
        for dx, share_x in ((0, 1 - wx), (1, wx)):
            flat = (iy + dy) * width + ix + dx
            kernel += np.bincount(flat, weights * share_y * share_x, minlength=height * width)
    kernel2d = (kernel / kernel.sum()).astype(np.float32).reshape(height, width)
    return kernel2d, (-x0, -y0)


@register("defocus_blur", "blur")
def defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = x * D`` (2-D convolution), ``D`` a normalised disk of radius
    ``r * s`` anti-aliased by a gaussian of sigma ``a * s``, with
    ``(r, a) = DEFOCUS_BLUR_RADIUS_ALIAS[severity - 1]`` and ``s = size_scale(image)``.

    Deterministic: `rng` is not used.
    """
    radius, alias = DEFOCUS_BLUR_RADIUS_ALIAS[severity - 1]
    scale = size_scale(image)
    kernel = _disk_kernel(radius * scale, alias * scale)
    return clip_uint8(cv2.filter2D(image.astype(np.float32), -1, kernel))


def glass_sources(height: int, width: int, reach: float, rng: np.random.Generator) -> np.ndarray:
    """Where each pixel takes its value from after one round of glass-blur shuffling.

    ImageNet-C scans ``d < h, w <= size - d`` from the bottom-right corner and
    sets ``x[h, w] = x[h + dy, w + dx]`` (its "swap" of array views is in effect
    this copy), ``dx, dy`` uniform integers in ``[-d, d)``; a pixel whose source
    was visited earlier inherits that source's source. This reproduces the scan
    exactly, vectorised: all offsets drawn at once, the inheritance chains
    resolved by pointer jumping. Below ``d = 1`` (small images) a pixel moves
    only with probability ``d``, by ``d = 1`` offsets.

    Args:
        height: image height.
        width: image width.
        reach: the maximum displacement ``d`` in pixels (any positive value).
        rng: source of the offsets.

    Returns:
        int array of ``height * width`` flat (row-major) source indices.
    """
    sources = np.arange(height * width, dtype=np.int32)
    step = max(reach, 1.0)
    margin = math.ceil(step)
    top, bottom, left, right = margin + 1, height - margin, margin + 1, width - margin
    if bottom < top or right < left:
        return sources
    rows = np.arange(top, bottom + 1, dtype=np.int32)[:, None]
    cols = np.arange(left, right + 1, dtype=np.int32)[None, :]
    draw = rng.random((2, bottom - top + 1, right - left + 1), dtype=np.float32)
    dy, dx = np.floor(draw * np.float32(2 * step) - np.float32(step)).astype(np.int32)
    if reach < 1.0:
        still = rng.random(dy.shape, dtype=np.float32) >= reach
        dy[still] = 0
        dx[still] = 0
    src_rows, src_cols = rows + dy, cols + dx
    visited_before = ((dy > 0) | ((dy == 0) & (dx > 0))) & (
        (src_rows <= bottom) & (src_cols >= left) & (src_cols <= right)
    )
    region = (slice(top, bottom + 1), slice(left, right + 1))
    sources.reshape(height, width)[region] = src_rows * width + src_cols
    chained = np.zeros(height * width, dtype=bool)
    chained.reshape(height, width)[region] = visited_before
    pending = np.flatnonzero(chained)
    while pending.size:
        hop = sources[pending]
        sources[pending] = sources[hop]
        chained[pending] = chained[hop]
        pending = pending[chained[pending]]
    return sources


@register("glass_blur", "blur")
def glass_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Frosted-glass blur (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = G(shuffle^n(G(x)))``: gaussian blur ``G`` of sigma ``g * s``, ``n``
    rounds of ImageNet-C's local pixel shuffling with maximum displacement
    ``d * s`` (see `glass_sources`), and ``G`` again, with
    ``(g, d, n) = GLASS_BLUR_SIGMA_DELTA_ITERATIONS[severity - 1]`` and
    ``s = size_scale(image)``.
    """
    sigma, delta, iterations = GLASS_BLUR_SIGMA_DELTA_ITERATIONS[severity - 1]
    scale = size_scale(image)
    height, width, channels = image.shape
    pixels = _gaussian(image, sigma * scale).reshape(height * width, channels)
    for _ in range(iterations):
        pixels = pixels[glass_sources(height, width, delta * scale, rng)]
    return clip_uint8(_gaussian(pixels.reshape(height, width, channels), sigma * scale))


@register("motion_blur", "blur")
def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-shake streak blur (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out(p) = sum_t w(t) x(p + t * s * u)`` over ``t = 0 .. 2r`` with
    ``w(t) ~ exp(-t^2 / (2 sigma^2))`` normalised, ``u`` a unit vector at an
    angle drawn uniformly from [-45, 45) degrees, edges replicated,
    ``(r, sigma) = MOTION_BLUR_RADIUS_SIGMA[severity - 1]`` and ``s = size_scale(image)``.
    """
    radius, sigma = MOTION_BLUR_RADIUS_SIGMA[severity - 1]
    angle = float(rng.uniform(-45.0, 45.0))
    kernel, anchor = _motion_kernel(radius, sigma, angle, size_scale(image))
    blurred = cv2.filter2D(
        image.astype(np.float32), -1, kernel, anchor=anchor, borderType=cv2.BORDER_REPLICATE
    )
    return clip_uint8(blurred)


@register("zoom_blur", "blur")
def zoom_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Radial zoom blur (ImageNet-C, Hendrycks & Dietterich 2019).

    ``out = (x + sum_z Z_z(x)) / (n + 1)``, ``Z_z`` magnifying ``x`` by ``z``
    about its centre (bilinear, edges replicated) for the ``n`` factors
    ``z = numpy.arange(*ZOOM_BLUR_FACTOR_RANGES[severity - 1])``.

    Deterministic: `rng` is not used.
    """
    factors = np.arange(*ZOOM_BLUR_FACTOR_RANGES[severity - 1])
    height, width = image.shape[:2]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    flags, border = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, cv2.BORDER_REPLICATE
    total = image.astype(np.float32)
    for zoom in factors:
        inv = 1.0 / zoom
        matrix = np.array([[inv, 0.0, cx * (1 - inv)], [0.0, inv, cy * (1 - inv)]])
        total += cv2.warpAffine(image, matrix, (width, height), flags=flags, borderMode=border)
    total *= np.float32(1.0 / (len(factors) + 1))
    return clip_uint8(total)


@register("gaussian_blur", "blur", extra=True)
def gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (ImageNet-C's held-out extra, Hendrycks & Dietterich 2019).

    ``out = x * G_sigma`` with ``sigma = GAUSSIAN_BLUR_SIGMA[severity - 1] * s``,
    ``s = size_scale(image)``, kernel truncated at 4 sigma, edges replicated.

    Deterministic: `rng` is not used.
    """
    return clip_uint8(_gaussian(image, GAUSSIAN_BLUR_SIGMA[severity - 1] * size_scale(image)))
