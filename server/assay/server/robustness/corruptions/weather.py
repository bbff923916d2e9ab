"""Weather corruptions: snow, frost, fog and the held-out extra spatter.

Formulas and severity constants follow ImageNet-C (Hendrycks & Dietterich,
2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations"). Every weather layer is rendered on the image's reference grid
(shorter side 224, see `textures.reference_grid`) with the published 224-pixel
parameters and resampled to the image, so spatial parameters scale with
`size_scale(image)`. Frost textures are generated procedurally (ImageNet-C
crops photographs of frost), so frost looks different from the paper's while
keeping its blend weights and a similar strength.
"""

from __future__ import annotations

import cv2
import numpy as np

from assay.server.robustness.corruptions import textures
from assay.server.robustness.corruptions.base import clip_uint8, register, to_unit_float

SNOW_PARAMS = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
"""(flake mean, flake std, zoom, threshold, blur radius, blur sigma, image weight) per severity."""
FROST_PARAMS = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
"""(image weight, frost weight) per severity."""
FOG_PARAMS = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
"""(fog strength, plasma amplitude decay) per severity."""
SPATTER_PARAMS = (
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)
"""(liquid mean, liquid std, blur sigma, threshold, strength or mud sigma, 0 water / 1 mud)."""

WATER_RGB = np.array((175, 238, 238), np.float32) / 255
"""Pale turquoise."""
MUD_RGB = np.array((63, 42, 20), np.float32) / 255
"""Mud brown."""
_EMBOSS = np.array(((-2, -1, 0), (-1, 1, 1), (0, 1, 2)), np.float32)


@register("snow", "weather")
def snow(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Falling snow over a brightened, washed-out scene.

    With (mu, s, z, t, r, sigma, w) = SNOW_PARAMS[severity - 1] and x in [0, 1]:
    flakes f ~ N(mu, s) on a lattice z times coarser than the reference grid,
    bilinearly zoomed up, zeroed below t, clipped to [0, 1] and motion-blurred
    along a line of 2r + 1 taps (Gaussian fall-off sigma) at an angle drawn
    from U(-135, -45) degrees; then
    out = clip(w x + (1 - w) max(x, 1.5 gray(x) + 0.5) + f + rot180(f), 0, 1).
    (Hendrycks & Dietterich, 2019, ImageNet-C.)
    """
    mean, std, zoom, threshold, radius, sigma, weight = SNOW_PARAMS[severity - 1]
    height, width = image.shape[:2]
    grid_h, grid_w = textures.reference_grid(height, width)
    lattice_shape = (max(round(grid_h / zoom), 1), max(round(grid_w / zoom), 1))
    lattice = rng.normal(mean, std, lattice_shape).astype(np.float32)
    flakes = cv2.resize(lattice, (grid_w, grid_h), interpolation=cv2.INTER_LINEAR)
    flakes = np.minimum(np.where(flakes < threshold, np.float32(0), flakes), 1)
    flakes = textures.motion_blur(flakes, 2 * radius + 1, sigma, float(rng.uniform(-135, -45)))
    flakes = np.rint(flakes * 255) * np.float32(1 / 255)
    flakes = textures.resample(flakes + flakes[::-1, ::-1], height, width)

    x = to_unit_float(image)
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[:, :, None]
    washed = np.maximum(x, gray * np.float32(1.5) + np.float32(0.5))
    out = x * np.float32(weight) + washed * np.float32(1 - weight) + flakes[:, :, None]
    return clip_uint8(np.minimum(out, 1) * 255)


@register("frost", "weather")
def frost(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Ice crystals on the lens.

    With (a, b) = FROST_PARAMS[severity - 1]: out = clip(a x + b F, 0, 255),
    F a greyish-white (slightly blue) frost texture in [0, 255]. ImageNet-C
    crops F from six frost photographs; here F is `textures.frost_texture`,
    drawn from `rng`. (Hendrycks & Dietterich, 2019, ImageNet-C.)
    """
    image_weight, frost_weight = FROST_PARAMS[severity - 1]
    height, width = image.shape[:2]
    grid_h, grid_w = textures.reference_grid(height, width)
    layer = textures.frost_texture(grid_h, grid_w, rng)
    layer = textures.resample(layer, height, width)[:, :, None]
    tint = np.array((0.9, 0.95, 1.0), np.float32) * np.float32(255 * frost_weight)
    out = image.astype(np.float32) * np.float32(image_weight) + layer * tint
    return clip_uint8(out)


@register("fog", "weather")
def fog(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Fog: a plasma fractal haze with the image's dynamic range compressed.

    With (c, d) = FOG_PARAMS[severity - 1], x in [0, 1] and m = max(x):
    out = clip((x + c P) m / (m + c), 0, 1), P the diamond-square plasma
    fractal (amplitude decay d) generated at the power of two covering the
    reference grid and cropped to it. (Hendrycks & Dietterich, 2019, ImageNet-C.)
    """
    strength, decay = FOG_PARAMS[severity - 1]
    height, width = image.shape[:2]
    grid_h, grid_w = textures.reference_grid(height, width)
    size = textures.next_power_of_two(max(grid_h, grid_w))
    plasma = textures.plasma_fractal(size, decay, rng)[:grid_h, :grid_w]
    plasma = textures.resample(plasma, height, width)
    peak = float(image.max()) / 255
    scale = np.float32(255 * peak / (peak + strength))
    out = image.astype(np.float32) * (scale / 255) + plasma[:, :, None] * (scale * strength)
    return clip_uint8(out)


@register("spatter", "weather", extra=True)
def spatter(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Water droplets (severities 1-3) or mud splashes (4-5) on the lens.

    With (mu, s, sigma, t, k, mud) = SPATTER_PARAMS[severity - 1]: a liquid
    field L ~ N(mu, s), Gaussian-blurred (sigma) and zeroed below t.
    Water: the distance to the Canny edges of L (capped at 20, blurred,
    histogram-equalised, embossed, blurred) times L, scaled to peak k, is the
    alpha m of pale turquoise: out = clip(x + m rgb(175, 238, 238), 0, 1).
    Mud: m = Gaussian(sigma=k) of [L > t], zeroed below 0.8:
    out = clip(x (1 - m) + m rgb(63, 42, 20), 0, 1).
    (Hendrycks & Dietterich, 2019, ImageNet-C.)
    """
    mean, std, sigma, threshold, strength, mud = SPATTER_PARAMS[severity - 1]
    height, width = image.shape[:2]
    grid_h, grid_w = textures.reference_grid(height, width)
    liquid: np.ndarray = rng.standard_normal((grid_h, grid_w), np.float32)
    liquid = cv2.GaussianBlur(
        liquid * np.float32(std) + np.float32(mean), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE
    )
    liquid[liquid < threshold] = 0
    x = to_unit_float(image)
    if mud:
        mask = cv2.GaussianBlur(
            (liquid > threshold).astype(np.float32),
            (0, 0),
            strength,
            borderType=cv2.BORDER_REPLICATE,
        )
        mask[mask < 0.8] = 0
        mask = textures.resample(mask, height, width)[:, :, None]
        return clip_uint8((x * (1 - mask) + mask * MUD_RGB) * 255)
    alpha = _water_alpha(liquid) * np.float32(strength)
    alpha = textures.resample(alpha, height, width)[:, :, None]
    return clip_uint8(np.minimum(x + alpha * WATER_RGB, 1) * 255)


def _water_alpha(liquid: np.ndarray) -> np.ndarray:
    """Droplet shading for a thresholded liquid field: rims bright, flat interiors dim, peak 1."""
    level = np.minimum(liquid * 255, 255).astype(np.uint8)
    distance = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
    distance = cv2.blur(np.minimum(distance, 20), (3, 3)).astype(np.uint8)
    shading = cv2.filter2D(cv2.equalizeHist(distance), cv2.CV_8U, _EMBOSS)
    alpha = liquid * cv2.blur(shading, (3, 3)).astype(np.float32)
    peak = float(alpha.max())
    return alpha / np.float32(peak) if peak > 0 else alpha
