"""Procedural layers shared by the weather corruptions.

ImageNet-C (Hendrycks & Dietterich, 2019) draws its weather layers at 224 x 224.
Here each layer is rendered on the *reference grid* of the image (the image's
shape rescaled so its shorter side is 224) with the paper's parameters
unchanged, then resampled to the image. That is exactly "spatial parameters
scale with `size_scale`", keeps the layer's statistics (flake density, blob
coverage) independent of the image size, and bounds the cost on huge images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from assay.server.robustness.corruptions.base import REFERENCE_SIZE

MAX_GRID_SIDE = 4 * REFERENCE_SIZE
"""Longest side of a reference grid; extreme aspect ratios get a stretched layer."""
_RUN = 11
"""Taps per `filter2D` call in `motion_blur` (an 11 x 11 box stays under OpenCV's DFT cutoff)."""
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

# Frost texture look. Chosen by eye, then HAZE_OFFSET tuned so that frost's
# mean |out - clean| on natural 224 x 224 photos is within a few percent of
# ImageNet-C's photographed frost at every severity.
HAZE_GAIN, HAZE_OFFSET = 2.0, -0.3
"""Contrast stretch of the haze octaves: haze = clip(gain * noise + offset, 0, 1)."""
SEED_DENSITY = 0.04
"""Needle seeds per pixel where the haze is 1 (density grows with haze squared)."""
NEEDLE_GAIN = 6.0
"""Brightness of a smeared needle before clipping to 1."""
HAZE_WEIGHT, NEEDLE_WEIGHT, GRAIN = 0.62, 0.55, 0.12
"""Mix of haze, needles and uniform grain in the texture."""


def reference_grid(height: int, width: int) -> tuple[int, int]:
    """The (height, width) of `height` x `width` rescaled to a shorter side of 224.

    Args:
        height: Image height in pixels (>= 1).
        width: Image width in pixels (>= 1).

    Returns:
        The grid shape, each side at least 1 and at most `MAX_GRID_SIDE`.
    """
    factor = REFERENCE_SIZE / min(height, width)
    return (
        min(max(round(height * factor), 1), MAX_GRID_SIDE),
        min(max(round(width * factor), 1), MAX_GRID_SIDE),
    )


def resample(layer: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float32 layer to `height` x `width` (area when shrinking, else bilinear).

    Args:
        layer: H x W or H x W x C float32 array.
        height: Target height.
        width: Target width.

    Returns:
        The layer at the target size (the input itself when it already fits).
    """
    if layer.shape[:2] == (height, width):
        return layer
    layer = np.ascontiguousarray(layer)
    shrink = height <= layer.shape[0] and width <= layer.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(layer, (width, height), interpolation=interpolation)
    return out.reshape((height, width, *layer.shape[2:]))


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= `n` (>= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def _jitter(rng: np.random.Generator, cells: int, spread: float) -> np.ndarray:
    """`cells` x `cells` float32 noise, uniform on [-spread, spread)."""
    noise = rng.random((cells, cells), np.float32) * np.float32(2) - np.float32(1)
    return noise * np.float32(spread)


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma fractal on a periodic `size` x `size` grid, scaled to [0, 1].

    Each pass halves the step: square centres get the mean of their four
    corners, then edge midpoints the mean of their four diamond neighbours,
    each plus uniform noise of amplitude `a**2`, where `a` starts at 100 and is
    divided by `decay` per pass (ImageNet-C's "wibble"). Every pass is a handful
    of whole-array slice operations.

    Args:
        size: Side, a power of two.
        decay: Amplitude divisor per pass; larger gives a smoother field.
        rng: Source of the noise.

    Returns:
        float32 `size` x `size` array with minimum 0 and maximum 1 (all 0 if flat).
    """
    if size & (size - 1):
        raise ValueError(f"plasma size must be a power of two, got {size}")
    grid = np.zeros((size, size), np.float32)
    step, amplitude = size, 100.0
    while step >= 2:
        half, cells = step // 2, size // step
        spread = amplitude * amplitude
        corner = grid[0::step, 0::step]
        east = np.roll(corner, -1, axis=1)
        south = np.roll(corner, -1, axis=0)
        grid[half::step, half::step] = (corner + east + south + np.roll(east, -1, axis=0)) / 4
        grid[half::step, half::step] += _jitter(rng, cells, spread)
        centre = grid[half::step, half::step]
        north = np.roll(centre, 1, axis=0)  # the centre above each top-edge midpoint
        west = np.roll(centre, 1, axis=1)  # the centre left of each left-edge midpoint
        grid[0::step, half::step] = (corner + east + centre + north) / 4
        grid[0::step, half::step] += _jitter(rng, cells, spread)
        grid[half::step, 0::step] = (corner + south + centre + west) / 4
        grid[half::step, 0::step] += _jitter(rng, cells, spread)
        step, amplitude = half, amplitude / decay
    grid -= grid.min()
    peak = grid.max()
    return grid / peak if peak > 0 else grid


def _line_taps(
    length: int, sigma: float, angle: float, symmetric: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dy, weight) of the motion-blur taps, weights summing to 1."""
    steps = np.arange(max(length, 1), dtype=np.float64)
    weights = np.exp(-(steps**2) / (2.0 * sigma * sigma))
    theta = math.radians(angle)
    dx = np.rint(steps * math.cos(theta)).astype(np.intp)
    dy = np.rint(steps * math.sin(theta)).astype(np.intp)
    if symmetric:
        dx, dy = np.concatenate([-dx[:0:-1], dx]), np.concatenate([-dy[:0:-1], dy])
        weights = np.concatenate([weights[:0:-1], weights])
    return dx, dy, weights / weights.sum()


def motion_blur(
    layer: np.ndarray, length: int, sigma: float, angle: float, *, symmetric: bool = False
) -> np.ndarray:
    """Average a float32 layer along a ray (both rays when `symmetric`), replicating borders.

    out(y, x) = sum_i w_i layer(y + dy_i, x + dx_i), tap i (0 <= i < length,
    or -length < i < length when symmetric) at (dx_i, dy_i) = round(i (cos, sin)(angle))
    with w_i proportional to exp(-i**2 / (2 sigma**2)): the ImageMagick
    `-motion-blur` kernel ImageNet-C uses for snow. The line is cut into runs
    of at most 11 taps so that each `cv2.filter2D` kernel stays in OpenCV's
    direct (non-DFT) path; each run filters the border-padded layer and is
    read back at its offset.

    Args:
        layer: H x W float32 array.
        length: Taps per ray (>= 1).
        sigma: Gaussian fall-off along the ray, in pixels (> 0).
        angle: Ray direction in degrees (0 = +x, 90 = +y, rows run down).
        symmetric: Also add the opposite ray.

    Returns:
        H x W float32 array.
    """
    dx, dy, weights = _line_taps(length, sigma, angle, symmetric)
    reach = int(max(np.abs(dx).max(), np.abs(dy).max()))
    height, width = layer.shape
    padded = cv2.copyMakeBorder(layer, reach, reach, reach, reach, cv2.BORDER_REPLICATE)
    out: np.ndarray = np.zeros((height, width), np.float32)
    for first in range(0, len(weights), _RUN):
        run_x, run_y = dx[first : first + _RUN], dy[first : first + _RUN]
        left, top = int(run_x.min()), int(run_y.min())
        kernel = np.zeros((run_y.max() - top + 1, run_x.max() - left + 1), np.float32)
        np.add.at(kernel, (run_y - top, run_x - left), weights[first : first + _RUN])
        filtered = cv2.filter2D(padded, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        out += filtered[reach + top : reach + top + height, reach + left : reach + left + width]
    return out


def value_noise(height: int, width: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise: a uniform random lattice of about `cells` per shorter side, bicubic-upsampled.

    Args:
        height: Output height.
        width: Output width.
        cells: Lattice cells along the shorter side.
        rng: Source of the lattice values.

    Returns:
        float32 `height` x `width` array, roughly in [0, 1].
    """
    unit = min(height, width) / cells
    lattice = rng.random(
        (max(round(height / unit), 1) + 1, max(round(width / unit), 1) + 1), np.float32
    )
    return cv2.resize(lattice, (width, height), interpolation=cv2.INTER_CUBIC)


def frost_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An ice-crystal layer in [0, 1], rendered procedurally from `rng`.

    Three ingredients, all whole-array operations: a cloudy haze (three octaves
    of value noise, contrast-stretched), crystal needles (sparse seeds, denser
    where the haze is thick, split into three orientation families 60 degrees
    apart, each smeared by a symmetric motion-blur line, then dilated with a
    cross so needles get a bright core), and a fine grain. Meant for the
    reference grid (about 224 pixels a side).

    Args:
        height: Layer height.
        width: Layer width.
        rng: Source of all randomness.

    Returns:
        float32 `height` x `width` array in [0, 1].
    """
    haze = value_noise(height, width, 3, rng) * np.float32(0.5)
    haze += value_noise(height, width, 8, rng) * np.float32(0.3)
    haze += value_noise(height, width, 20, rng) * np.float32(0.2)
    haze = np.clip(haze * np.float32(HAZE_GAIN) + np.float32(HAZE_OFFSET), 0, 1)

    draw = rng.random((height, width), np.float32)
    density = haze * haze * np.float32(SEED_DENSITY)
    seeds = np.where(draw < density, np.float32(1), np.float32(0))
    family = (draw * np.float32(3 / SEED_DENSITY)).astype(np.uint8)
    needles: np.ndarray = np.zeros((height, width), np.float32)
    for index, angle in enumerate(rng.uniform(0, 60) + np.array((0.0, 60.0, 120.0))):
        length = int(rng.integers(8, 15))
        group = np.where(family == index, seeds, np.float32(0))
        smeared = motion_blur(group, length, length / 2, float(angle), symmetric=True)
        np.maximum(needles, smeared, out=needles)
    needles = cv2.dilate(needles * np.float32(NEEDLE_GAIN), _CROSS)
    needles = np.minimum(cv2.GaussianBlur(needles, (3, 3), 0.7), 1)

    grain = rng.random((height, width), np.float32) * np.float32(GRAIN)
    return np.clip(
        haze * np.float32(HAZE_WEIGHT) + needles * np.float32(NEEDLE_WEIGHT) + grain, 0, 1
    )
