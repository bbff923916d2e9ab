"""Digital corruptions: brightness, contrast, elastic, pixelate, JPEG and the extra saturate.

Formulas and severity constants follow ImageNet-C (Hendrycks & Dietterich,
2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations"), whose parameters are for 224 x 224 images; the spatial ones
scale with `size_scale(image)`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from assay.server.robustness.corruptions import textures
from assay.server.robustness.corruptions.base import (
    clip_uint8,
    register,
    size_scale,
    to_unit_float,
)

BRIGHTNESS_DELTA = (0.1, 0.2, 0.3, 0.4, 0.5)
"""Added to HSV value (in [0, 1]) per severity."""
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
"""Deviation-from-the-mean multiplier per severity."""
ELASTIC_PARAMS = (
    (244 * 2, 244 * 0.7, 244 * 0.1),
    (244 * 2, 244 * 0.08, 244 * 0.2),
    (244 * 0.05, 244 * 0.01, 244 * 0.02),
    (244 * 0.07, 244 * 0.01, 244 * 0.02),
    (244 * 0.12, 244 * 0.01, 244 * 0.02),
)
"""(alpha, sigma, affine jitter) in 224-grid pixels per severity; ImageNet-C writes 244 for 224."""
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
"""Downscale factor per severity (blocks of 1 / factor pixels at 224)."""
JPEG_QUALITY = (25, 18, 15, 10, 7)
"""libjpeg quality per severity."""
SATURATE_PARAMS = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))
"""(multiplier, offset) for HSV saturation per severity; 1-2 desaturate, 3-5 oversaturate."""


def _hsv_adjust(image: np.ndarray, channel: int, scale: float, offset: float) -> np.ndarray:
    """Set HSV channel `channel` (1 = S, 2 = V; in [0, 1]) to clip(scale v + offset, 0, 1)."""
    hsv = cv2.cvtColor(to_unit_float(image), cv2.COLOR_RGB2HSV)
    plane = hsv[:, :, channel]
    np.clip(plane * np.float32(scale) + np.float32(offset), 0, 1, out=plane)
    return clip_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255)


@register("brightness", "digital")
def brightness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Brighter: V' = clip(V + c, 0, 1) in HSV, c = BRIGHTNESS_DELTA[severity - 1].

    (Hendrycks & Dietterich, 2019, ImageNet-C.)

    Deterministic: `rng` is not used.
    """
    return _hsv_adjust(image, 2, 1.0, BRIGHTNESS_DELTA[severity - 1])


@register("saturate", "digital", extra=True)
def saturate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Saturation change: S' = clip(a S + b, 0, 1) in HSV, (a, b) = SATURATE_PARAMS[severity - 1].

    (Hendrycks & Dietterich, 2019, ImageNet-C.)

    Deterministic: `rng` is not used.
    """
    scale, offset = SATURATE_PARAMS[severity - 1]
    return _hsv_adjust(image, 1, scale, offset)


@register("contrast", "digital")
def contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Lower contrast: out = (x - mean) c + mean per channel, c = CONTRAST_FACTOR[severity - 1].

    The mean is each channel's over the whole image. (Hendrycks & Dietterich,
    2019, ImageNet-C.)

    Deterministic: `rng` is not used.
    """
    factor = CONTRAST_FACTOR[severity - 1]
    means = np.asarray(cv2.mean(image)[:3], np.float32)
    return clip_uint8(
        image.astype(np.float32) * np.float32(factor) + means * np.float32(1 - factor)
    )


@register("pixelate", "digital")
def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pixelation: box-downscale by f = PIXELATE_FACTOR[severity - 1], nearest-upscale back.

    Blocks are 1 / f pixels at 224 and grow with `size_scale` on larger
    images; smaller images keep the published fraction f of their size
    (blocks cannot shrink below 1 / f pixels without vanishing).
    (Hendrycks & Dietterich, 2019, ImageNet-C.)

    Deterministic: `rng` is not used.
    """
    factor = PIXELATE_FACTOR[severity - 1] / max(size_scale(image), 1.0)
    height, width = image.shape[:2]
    small = (max(int(width * factor), 1), max(int(height * factor), 1))
    reduced = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(reduced, (width, height), interpolation=cv2.INTER_NEAREST_EXACT).reshape(
        image.shape
    )


@register("jpeg_compression", "digital")
def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at quality JPEG_QUALITY[severity - 1] (libjpeg via OpenCV, 4:2:0).

    (Hendrycks & Dietterich, 2019, ImageNet-C.)

    Deterministic: `rng` is not used.
    """
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY[severity - 1]])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """U(-1, 1) white noise on `shape`, Gaussian-smoothed (sigma, truncated at 3 sigma, reflected).

    For large sigma the noise is drawn on a lattice k = sigma // 3 times
    coarser, with the variance of a k x k block mean, smoothed there with
    sigma / k and upsampled: the same random field, at a fraction of the cost.
    """
    coarse = max(int(sigma // 3), 1)
    if coarse == 1:
        noise = rng.uniform(-1, 1, shape).astype(np.float32)
    else:
        lattice = (max(math.ceil(shape[0] / coarse), 1), max(math.ceil(shape[1] / coarse), 1))
        noise = rng.normal(0, 1 / (math.sqrt(3) * coarse), lattice).astype(np.float32)
    sigma_here = sigma / coarse
    radius = math.ceil(3 * sigma_here)
    smooth = cv2.GaussianBlur(
        noise, (2 * radius + 1, 2 * radius + 1), sigma_here, borderType=cv2.BORDER_REFLECT
    )
    if coarse > 1:
        smooth = cv2.resize(smooth, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return smooth.reshape(shape)


@register("elastic_transform", "digital")
def elastic_transform(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Elastic warp: a random affine jitter composed with a smooth displacement field.

    With (alpha, sigma, j) = ELASTIC_PARAMS[severity - 1] (224-grid pixels):
    the affine A maps three points a third of the shorter side from the centre
    to themselves plus U(-j, j) offsets; the displacement d = alpha G_sigma(U(-1, 1))
    per axis. out(p) = x(A^-1 (p + d(p))), sampled bilinearly with reflected
    borders, in one `cv2.remap` (ImageNet-C resamples twice). The field is drawn
    on the reference grid and scaled to the image, as is j.
    (Hendrycks & Dietterich, 2019, ImageNet-C.)
    """
    alpha, sigma, jitter = ELASTIC_PARAMS[severity - 1]
    height, width = image.shape[:2]
    scale = size_scale(image)
    centre = np.array((width // 2, height // 2), np.float32)
    side = max(min(height, width) // 3, 1)
    source = (centre + np.array(((side, side), (side, -side), (-side, -side)))).astype(np.float32)
    target = source + rng.uniform(-jitter * scale, jitter * scale, (3, 2)).astype(np.float32)
    inverse = cv2.invertAffineTransform(cv2.getAffineTransform(source, target))

    grid = textures.reference_grid(height, width)
    dx = textures.resample(_smooth_noise(grid, sigma, rng), height, width)
    dy = textures.resample(_smooth_noise(grid, sigma, rng), height, width)
    dx *= np.float32(alpha * width / grid[1])
    dy *= np.float32(alpha * height / grid[0])
    dx += np.arange(width, dtype=np.float32)
    dy += np.arange(height, dtype=np.float32)[:, None]
    (a, b, c), (d, e, f) = inverse.astype(np.float32)
    map_x = dx * a + dy * b + c
    map_y = dx * d + dy * e + f
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return warped.reshape(image.shape)
