"""Native-resolution crops for AI-generated image detectors.

Detectors such as CNNDetection (Wang et al., "CNN-generated images are
surprisingly easy to spot... for now", CVPR 2020) and NPR (Tan et al.,
"Rethinking the Up-Sampling Operations in CNN-based Generative Network for
Generalizable Deepfake Detection", CVPR 2024) look at pixel-level up-sampling
traces. Resizing the input to the network resolution interpolates those traces
away, which is why SIDBench (Schinas & Papadopoulos, 2024) evaluates on crops.
This module therefore **never resamples**: every crop pixel is a source pixel,
and an image smaller than the crop is padded by reflection instead of being
up-scaled.

Padding policy:
    When the image is smaller than the crop along an axis, it is padded at the
    *bottom* and/or *right* only, with ``numpy.pad(mode="reflect")`` (mirror
    without repeating the border pixel; repeated as often as needed for very
    small images, edge replication for a single-pixel axis). The original
    pixels therefore keep their coordinates, boxes are expressed in source
    coordinates, and the amount of padding is recorded in
    :attr:`CropSet.padding`. Rows ``>= CropSet.source_shape[0]`` and columns
    ``>= CropSet.source_shape[1]`` of the padded canvas are synthetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Aggregation = Literal["top_k_mean", "max"]


@dataclass(frozen=True)
class CropSet:
    """Crops taken at native resolution.

    Attributes:
        crops: ``N x h x w x C`` uint8 array; ``crops[i]`` is the padded canvas
            ``[top:top + h, left:left + w]`` for ``boxes[i] == (top, left)``.
        boxes: ``(top, left)`` of each crop, in source-pixel coordinates.
        crop_size: ``(h, w)`` of every crop.
        source_shape: ``(H, W)`` of the image before padding.
        padding: ``(bottom, right)`` reflection padding added to the image
            (``(0, 0)`` when the image is at least as large as the crop).
        grid_shape: ``(rows, cols)`` of the full regular grid before the
            ``max_crops`` cap.
    """

    crops: NDArray[np.uint8]
    boxes: list[tuple[int, int]]
    crop_size: tuple[int, int]
    source_shape: tuple[int, int]
    padding: tuple[int, int]
    grid_shape: tuple[int, int]

    @property
    def padded(self) -> bool:
        """Whether any reflection padding was added."""
        return self.padding != (0, 0)


def _grid_positions(length: int, size: int, stride: int) -> list[int]:
    """Start offsets ``0, stride, 2*stride, ...`` plus one aligned to the far border.

    Args:
        length: Length of the (padded) axis; ``length >= size``.
        size: Crop length along the axis.
        stride: Step between consecutive crops.

    Returns:
        Sorted, distinct offsets whose windows cover ``[0, length)``.
    """
    positions = list(range(0, length - size + 1, stride))
    if positions[-1] != length - size:
        positions.append(length - size)
    return positions


def _evenly_spaced(n: int, m: int) -> list[int]:
    """``m`` distinct indices from ``range(n)``, evenly spaced, both ends included."""
    if m >= n:
        return list(range(n))
    if m == 1:
        return [(n - 1) // 2]
    return [math.floor(i * (n - 1) / (m - 1) + 0.5) for i in range(m)]


def _subgrid_shape(rows: int, cols: int, max_crops: int) -> tuple[int, int]:
    """The largest ``r x c <= max_crops`` sub-grid, shaped like the full grid.

    Ties on ``r * c`` are broken by the aspect ratio closest to ``rows / cols``,
    then by fewer rows, so the choice is deterministic.
    """
    target = math.log(rows / cols)
    best: tuple[int, float, int] | None = None
    best_shape = (1, 1)
    for r in range(1, min(rows, max_crops) + 1):
        c = min(cols, max_crops // r)
        key = (-(r * c), abs(math.log(r / c) - target), r)
        if best is None or key < best:
            best, best_shape = key, (r, c)
    return best_shape


def _parse_stride(stride: tuple[int, int] | int | None, h: int, w: int) -> tuple[int, int]:
    """Resolve ``stride`` to ``(sy, sx)`` and check ``1 <= s <= crop size``."""
    if stride is None:
        sy, sx = h, w
    elif isinstance(stride, int):
        sy = sx = stride
    else:
        sy, sx = (int(v) for v in stride)
    if not (1 <= sy <= h and 1 <= sx <= w):
        raise ValueError(f"stride must be in [1, crop size], got {(sy, sx)} for {(h, w)}")
    return sy, sx


def crops(
    image: NDArray[np.uint8],
    size: tuple[int, int],
    max_crops: int,
    stride: tuple[int, int] | int | None = None,
) -> CropSet:
    """Tile ``image`` into native-resolution crops.

    The grid is regular: along each axis crops start at ``0, s, 2s, ...`` and,
    when that leaves a strip uncovered, one more crop is aligned to the far
    border, so the union of the crops covers every pixel. The default stride is
    the crop size (non-overlapping except for the border-aligned crop).

    When the grid holds more than ``max_crops`` crops, an evenly spaced
    sub-grid is kept: the largest ``r x c <= max_crops`` whose aspect ratio is
    closest to the full grid's, with ``r`` rows chosen at evenly spaced indices
    of the full grid's rows (first and last included; the middle one when
    ``r == 1``), likewise for columns. Boxes are returned in row-major order.
    The selection is a pure function of the image shape and the arguments.
    Coverage of every pixel is only guaranteed when no cap applies.

    Args:
        image: ``H x W x C`` uint8 image (``H x W`` is treated as ``C == 1``).
        size: Crop ``(h, w)`` in pixels.
        max_crops: Maximum number of crops to return (``>= 1``).
        stride: Step ``(sy, sx)`` or a single int for both axes; defaults to
            ``size``. Must not exceed the crop size, or pixels would be skipped.

    Returns:
        The crops, their boxes and the padding applied (see the module
        docstring for the padding policy).

    Raises:
        ValueError: On a non-uint8 or empty image, or invalid size/stride/cap.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"image must be a non-empty H x W x C array, got {image.shape}")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    if max_crops < 1:
        raise ValueError(f"max_crops must be >= 1, got {max_crops}")
    sy, sx = _parse_stride(stride, h, w)

    height, width = int(image.shape[0]), int(image.shape[1])
    pad_bottom, pad_right = max(0, h - height), max(0, w - width)
    canvas = image
    if pad_bottom or pad_right:
        canvas = np.pad(image, ((0, pad_bottom), (0, pad_right), (0, 0)), mode="reflect")

    row_pos = _grid_positions(canvas.shape[0], h, sy)
    col_pos = _grid_positions(canvas.shape[1], w, sx)
    rows, cols = len(row_pos), len(col_pos)
    if rows * cols > max_crops:
        r, c = _subgrid_shape(rows, cols, max_crops)
        row_pos = [row_pos[i] for i in _evenly_spaced(rows, r)]
        col_pos = [col_pos[i] for i in _evenly_spaced(cols, c)]

    boxes = [(top, left) for top in row_pos for left in col_pos]
    stack = np.stack([canvas[t : t + h, le : le + w] for t, le in boxes]).astype(np.uint8)
    return CropSet(
        crops=stack,
        boxes=boxes,
        crop_size=(h, w),
        source_shape=(height, width),
        padding=(pad_bottom, pad_right),
        grid_shape=(rows, cols),
    )


def aggregate(scores: NDArray[np.floating], how: Aggregation = "top_k_mean", k: int = 3) -> float:
    """Pool per-crop scores into one image score.

    A generated image may show artifacts in only a few crops (flat sky, text),
    so pooling favours the most confident crops rather than averaging all.

    Args:
        scores: 1-D per-crop scores (probabilities or logits).
        how: ``"top_k_mean"`` (mean of the ``min(k, N)`` largest) or ``"max"``.
        k: Number of top scores averaged by ``"top_k_mean"``.

    Returns:
        The pooled score.

    Raises:
        ValueError: On empty or non-finite scores, ``k < 1`` or an unknown ``how``.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("scores must be non-empty")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    if how == "max":
        return float(values.max())
    if how == "top_k_mean":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        top = np.sort(values)[::-1][: min(k, values.size)]
        return float(top.mean())
    raise ValueError(f"unknown aggregation {how!r}; expected 'top_k_mean' or 'max'")
