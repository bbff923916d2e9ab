"""PatchCore anomaly detection over spatial feature maps (N x C x H x W).

Roth et al., 2022, "Towards Total Recall in Industrial Anomaly Detection", CVPR:

* Locally aware patch features (Sec. 3.1): every feature vector φ(h, w) is
  replaced by the mean over its p x p neighbourhood (stride 1, same size out).
  Here positions outside the map are left out of the mean (not zero-padded), so
  border features are not shrunk towards zero.
* Memory bank (Sec. 3.1): all N·H·W aggregated vectors of the nominal maps.
* Greedy coreset (Sec. 3.2, Algorithm 1): iterative farthest-point selection
  ``m_i = argmax_{m ∈ M - M_C} min_{n ∈ M_C} ||ψ(m) - ψ(n)||₂`` with ψ a random
  linear projection to d* = 128 dimensions (Johnson-Lindenstrauss), here a seeded
  Gaussian matrix with N(0, 1/d*) entries; the first point is drawn by the seed.
  Kept size ``ceil(fraction·N·H·W)`` (at least 1).
* Scoring (Sec. 3.3): a test patch scores ``min_{m ∈ M_C} ||m_test - m||₂``
  (exact nearest neighbour); the image score is the maximum patch score s*. The
  paper's optional reweighting of s* by the neighbourhood density of its nearest
  memory vector is **not implemented**: the image score is s* itself.
* Anomaly map (Sec. 3.3): the H x W patch scores are upsampled bilinearly to the
  image size and smoothed with a Gaussian of sigma = 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

import cv2
import numpy as np
import numpy.typing as npt

from assay.server.ood._common import (
    Float32Array,
    FloatArray,
    JsonDict,
    all_finite,
    positive_int,
)
from assay.server.ood._stored import ArrayLayout, StoredArrays, profile_meta

__all__ = ["PatchMemory", "anomaly_map", "fit_patch_memory", "score_patches"]

DEFAULT_PROJECTION_DIM: Final = 128
"""d* of the coreset's random projection (the paper's default)."""
DEFAULT_CHUNK: Final = 2048
"""Test patches (and memory vectors) per distance block: ≤ 2048² float32 values at once."""


def _feature_maps(feature_maps: npt.ArrayLike, name: str = "feature_maps") -> Float32Array:
    """A finite, non-empty N x C x H x W float32 array, else ValueError."""
    try:
        maps = np.asarray(feature_maps)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if maps.dtype == np.bool_ or not np.issubdtype(maps.dtype, np.number):
        raise ValueError(f"{name} must hold real numbers, got dtype {maps.dtype}")
    if np.iscomplexobj(maps):
        raise ValueError(f"{name} must hold real numbers, got dtype {maps.dtype}")
    if maps.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N x C x H x W), got shape {maps.shape}")
    if 0 in maps.shape:
        raise ValueError(f"{name} must be non-empty, got shape {maps.shape}")
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    if not all_finite(maps):
        raise ValueError(
            f"{name} contains NaN or infinite values (or values too large for float32)"
        )
    return maps


def _check_settings(
    coreset_fraction: float, neighbourhood: int, seed: int, projection_dim: int
) -> None:
    """Raise ValueError on a setting `fit_patch_memory` / `PatchMemory` cannot use."""
    if isinstance(coreset_fraction, bool) or not isinstance(coreset_fraction, int | float):
        raise ValueError(f"coreset_fraction must be a number, got {coreset_fraction!r}")
    if not 0.0 < coreset_fraction <= 1.0:
        raise ValueError(f"coreset_fraction must lie in (0, 1], got {coreset_fraction}")
    if positive_int(neighbourhood, "neighbourhood") % 2 == 0:
        raise ValueError(f"neighbourhood must be odd (a centred p x p window), got {neighbourhood}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    positive_int(projection_dim, "projection_dim")


def _aggregate(maps: Float32Array, neighbourhood: int) -> Float32Array:
    """Mean of each vector's p x p neighbourhood, over positions inside the map."""
    if neighbourhood == 1:
        return maps
    radius = neighbourhood // 2
    height, width = maps.shape[2:]

    def box_sum(values: Float32Array) -> Float32Array:
        """Separable p x p window sums of an array padded by `radius` on its last two axes."""
        rows = values[..., 0:height, :].copy()
        for i in range(1, neighbourhood):
            rows += values[..., i : i + height, :]
        total = rows[..., 0:width].copy()
        for j in range(1, neighbourhood):
            total += rows[..., j : j + width]
        return total

    pad = ((0, 0), (0, 0), (radius, radius), (radius, radius))
    sums = box_sum(np.pad(maps, pad))
    counts = box_sum(np.pad(np.ones((height, width), dtype=np.float32), radius))
    aggregated: Float32Array = sums / counts
    return aggregated


def _patches(maps: Float32Array) -> Float32Array:
    """N x C x H x W -> (N·H·W) x C, rows ordered by (image, row, column)."""
    return np.ascontiguousarray(maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1]))


def _greedy_coreset(
    patches: Float32Array, size: int, seed: int, projection_dim: int
) -> npt.NDArray[np.intp]:
    """Indices of the greedy (farthest-point) coreset, in selection order.

    One pass per selected point: the distances of all points to the newest
    selection update a running min-distance vector, whose argmax is selected next.
    """
    count, channels = patches.shape
    if size >= count:
        return np.arange(count, dtype=np.intp)
    rng = np.random.default_rng(seed)
    points = patches
    if channels > projection_dim:
        projection = rng.standard_normal((channels, projection_dim)) / math.sqrt(projection_dim)
        points = patches @ projection.astype(np.float32)
    points = points - points.mean(axis=0)  # centred: smaller norms, less cancellation
    norms = np.einsum("ij,ij->i", points, points)
    nearest = np.full(count, np.inf, dtype=np.float32)
    selected = np.empty(size, dtype=np.intp)
    current = int(rng.integers(count))
    for step in range(size):
        selected[step] = current
        distances = norms - 2.0 * (points @ points[current]) + norms[current]
        np.minimum(nearest, distances, out=nearest)
        nearest[current] = -np.inf  # stays below every distance: never reselected
        current = int(np.argmax(nearest))
    return selected


def _coreset_size(fraction: float, count: int) -> int:
    """ceil(fraction·count), the product rounded to 9 decimals first (0.07·100 -> 7)."""
    return max(1, min(count, math.ceil(round(fraction * count, 9))))


@dataclass(frozen=True, eq=False)
class PatchMemory(StoredArrays):
    """A fitted PatchCore memory bank (the coreset's aggregated patch features).

    Attributes:
        bank: K x C float32 coreset vectors, in greedy selection order (read-only).
        patches: Number of nominal patches the coreset was chosen from (N·H·W).
        coreset_fraction: Requested fraction of patches kept.
        neighbourhood: Side p of the aggregation window.
        seed: Seed of the projection and the first coreset point.
        projection_dim: d* of the random projection used for coreset selection.
    """

    KIND: ClassVar[str] = "patchcore"
    LAYOUT: ClassVar[ArrayLayout] = {"bank": (2, np.float32)}

    bank: Float32Array
    patches: int
    coreset_fraction: float
    neighbourhood: int
    seed: int
    projection_dim: int = DEFAULT_PROJECTION_DIM

    def __post_init__(self) -> None:
        bank = np.array(self.bank, dtype=np.float32, copy=True)
        if bank.ndim != 2 or 0 in bank.shape:
            raise ValueError(f"bank must be a non-empty K x C array, got shape {bank.shape}")
        if not all_finite(bank):
            raise ValueError("bank contains NaN or infinite values")
        bank.setflags(write=False)
        object.__setattr__(self, "bank", bank)
        if positive_int(self.patches, "patches") < bank.shape[0]:
            raise ValueError(f"bank has {bank.shape[0]} vectors but patches is {self.patches}")
        _check_settings(self.coreset_fraction, self.neighbourhood, self.seed, self.projection_dim)

    @property
    def channels(self) -> int:
        """Feature channels C."""
        return int(self.bank.shape[1])

    @property
    def size(self) -> int:
        """Coreset size K."""
        return int(self.bank.shape[0])

    def meta(self) -> JsonDict:
        """JSON-able description (kind, version and every setting)."""
        return profile_meta(
            self.KIND,
            channels=self.channels,
            coreset_size=self.size,
            patches=int(self.patches),
            coreset_fraction=float(self.coreset_fraction),
            neighbourhood=int(self.neighbourhood),
            seed=int(self.seed),
            projection_dim=int(self.projection_dim),
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Rebuild a memory from :meth:`to_arrays` and :meth:`meta` output (bit-exact)."""
        bank = cls.read_arrays(arrays, meta)["bank"]
        expected = (meta.get("coreset_size"), meta.get("channels"))
        if bank.shape != expected:
            raise ValueError(f"patchcore bank has shape {bank.shape}, meta says {expected}")
        try:
            return cls(
                bank=bank,
                patches=meta["patches"],
                coreset_fraction=float(meta["coreset_fraction"]),
                neighbourhood=meta["neighbourhood"],
                seed=meta["seed"],
                projection_dim=meta.get("projection_dim", DEFAULT_PROJECTION_DIM),
            )
        except KeyError as exc:
            raise ValueError(f"patchcore profile meta is missing {exc}") from None


def fit_patch_memory(
    feature_maps: npt.ArrayLike,
    *,
    coreset_fraction: float = 0.1,
    seed: int = 0,
    neighbourhood: int = 3,
    projection_dim: int = DEFAULT_PROJECTION_DIM,
) -> PatchMemory:
    """Build a PatchCore memory bank from nominal feature maps.

    Args:
        feature_maps: N x C x H x W features of nominal (defect-free) images.
        coreset_fraction: Fraction of the N·H·W patches kept, in (0, 1].
        seed: Seed of the random projection and of the first coreset point.
        neighbourhood: Odd side p of the local aggregation window (1: none).
        projection_dim: d* for coreset selection (no projection when C ≤ d*).

    Returns:
        The memory of ``ceil(coreset_fraction·N·H·W)`` (≥ 1) aggregated vectors.

    Raises:
        ValueError: On a non-4-D, empty or non-finite input or a bad setting.
    """
    maps = _feature_maps(feature_maps)
    _check_settings(coreset_fraction, neighbourhood, seed, projection_dim)
    patches = _patches(_aggregate(maps, neighbourhood))
    size = _coreset_size(coreset_fraction, len(patches))
    chosen = _greedy_coreset(patches, size, seed, projection_dim)
    return PatchMemory(
        bank=patches[chosen],
        patches=len(patches),
        coreset_fraction=coreset_fraction,
        neighbourhood=neighbourhood,
        seed=seed,
        projection_dim=projection_dim,
    )


def _nearest_distances(queries: Float32Array, bank: Float32Array, chunk: int) -> FloatArray:
    """Exact Euclidean distance of every query row to its nearest bank row.

    Blocks of ``chunk`` queries x ``chunk`` bank rows find the nearest row with
    float32 products ``||b||² - 2 q·b`` (both centred on the bank mean); the
    distance to that row is then recomputed in float64 from the difference vector.
    """
    centre = bank.mean(axis=0)
    centred_bank = bank - centre
    bank_norms = np.einsum("ij,ij->i", centred_bank, centred_bank)
    result = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        centred = block - centre
        best = np.full(len(block), np.inf, dtype=np.float32)
        nearest = np.zeros(len(block), dtype=np.intp)
        rows = np.arange(len(block))
        for first in range(0, len(bank), chunk):
            part = centred_bank[first : first + chunk]
            partial = bank_norms[first : first + chunk] - 2.0 * (centred @ part.T)
            local = np.argmin(partial, axis=1)
            values = partial[rows, local]
            better = values < best
            best[better] = values[better]
            nearest[better] = local[better] + first
        difference = block.astype(np.float64) - bank[nearest].astype(np.float64)
        result[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    return result


def score_patches(
    memory: PatchMemory, feature_maps: npt.ArrayLike, *, chunk: int = DEFAULT_CHUNK
) -> tuple[FloatArray, FloatArray]:
    """PatchCore scores of test feature maps against a memory bank.

    Args:
        memory: The fitted memory (its neighbourhood aggregation is reapplied).
        feature_maps: N x C x H x W test features, C matching the memory.
        chunk: Rows per distance block (bounds memory at chunk² float32 values).

    Returns:
        Image scores (N, the maximum patch score) and patch maps (N x H x W, the
        exact nearest-neighbour distance of each aggregated patch), both float64.

    Raises:
        ValueError: On bad maps, a channel mismatch or a chunk below 1.
    """
    maps = _feature_maps(feature_maps)
    chunk = positive_int(chunk, "chunk")
    if maps.shape[1] != memory.channels:
        raise ValueError(
            f"feature_maps have {maps.shape[1]} channels, the memory has {memory.channels}"
        )
    count, _, height, width = maps.shape
    queries = _patches(_aggregate(maps, memory.neighbourhood))
    patch_maps = _nearest_distances(queries, memory.bank, chunk).reshape(count, height, width)
    image_scores: FloatArray = patch_maps.max(axis=(1, 2))
    return image_scores, patch_maps


def anomaly_map(
    patch_map: npt.ArrayLike, size: tuple[int, int], sigma: float = 4.0
) -> Float32Array:
    """Upsample one H x W patch map to the image size and smooth it.

    Bilinear `cv2.resize` (pixel-centre aligned, like ``align_corners=False``),
    then `cv2.GaussianBlur` with standard deviation ``sigma`` in both directions
    (OpenCV's kernel side for float images, about 8·sigma + 1, i.e. ±4·sigma; borders
    reflected without repeating the edge pixel); ``sigma=0`` skips smoothing.

    Args:
        patch_map: H x W patch scores (one image of `score_patches`' maps).
        size: Target (height, width) in pixels.
        sigma: Gaussian standard deviation in pixels (the paper uses 4).

    Returns:
        A height x width float32 anomaly map.

    Raises:
        ValueError: On a non-2-D, empty or non-finite map or a bad size or sigma.
    """
    values = np.asarray(patch_map, dtype=np.float32)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"patch_map must be a non-empty 2-D array, got shape {values.shape}")
    if not all_finite(values):
        raise ValueError("patch_map contains NaN or infinite values")
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = positive_int(size[0], "height"), positive_int(size[1], "width")
    if not (math.isfinite(sigma) and sigma >= 0.0):
        raise ValueError(f"sigma must be a finite non-negative number, got {sigma}")
    resized = cv2.resize(
        np.ascontiguousarray(values), (width, height), interpolation=cv2.INTER_LINEAR
    )
    if sigma > 0.0:
        resized = cv2.GaussianBlur(
            resized, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
        )
    smoothed: Float32Array = np.asarray(resized, dtype=np.float32)
    return smoothed
