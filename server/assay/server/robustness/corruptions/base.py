"""The corruption registry and the one entry point, `corrupt`.

Every corruption is a pure function `fn(image, severity, rng) -> image` on a
uint8 H x W x 3 RGB array, severity 1..5, drawing all randomness from `rng`.
`corrupt` derives that generator from (seed, image index, corruption,
severity), so a suite run twice, on any machine, produces the same bytes.

Parameters are ImageNet-C's published ones (Hendrycks & Dietterich, 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations") for 224 x 224 images; spatial parameters scale with
`size_scale(image)` for other sizes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assay.server.errors import InvalidArgumentError

CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
"""Every corruption's contract, stated once here rather than in each function.

`fn(image, severity, rng)`: image is uint8 H x W x 3 RGB (`corrupt` converts
other channel counts), severity is 1..5 and `rng` is the only source of
randomness (deterministic corruptions ignore it); returns a uint8 image of the
input's shape.
"""

REFERENCE_SIZE = 224
"""ImageNet-C's image size; spatial parameters are defined for it."""
SEVERITIES = (1, 2, 3, 4, 5)
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Corruption:
    """A registered corruption."""

    name: str
    family: str
    """noise | blur | weather | digital (ImageNet-C's four groups)."""
    fn: CorruptionFn
    extra: bool
    """True for the four held-out extras (speckle noise, gaussian blur, spatter, saturate)."""


REGISTRY: dict[str, Corruption] = {}


def register(
    name: str, family: str, *, extra: bool = False
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator adding a corruption function to REGISTRY under `name`."""

    def add(fn: CorruptionFn) -> CorruptionFn:
        if name in REGISTRY:
            raise ValueError(f"corruption {name!r} registered twice")
        REGISTRY[name] = Corruption(name, family, fn, extra)
        return fn

    return add


def size_scale(image: np.ndarray) -> float:
    """Factor from ImageNet-C's 224-pixel parameters to this image (shorter side)."""
    return min(image.shape[0], image.shape[1]) / REFERENCE_SIZE


def corruption_rng(seed: int, index: int, name: str, severity: int) -> np.random.Generator:
    """The generator for one (seed, image index, corruption, severity).

    The corruption enters as a CRC32 of its name, so adding corruptions never
    changes the streams of existing ones.
    """
    key = [seed & 0xFFFFFFFF, index & 0xFFFFFFFF, zlib.crc32(name.encode()), severity]
    return np.random.default_rng(np.random.SeedSequence(key))


def to_rgb(image: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> (HxWx3 RGB, original channel count)."""
    if image.dtype != np.uint8:
        raise InvalidArgumentError(f"corruptions take uint8 images, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InvalidArgumentError(
            f"image must be H x W, H x W x 1, 3 or 4, got shape {list(image.shape)}"
        )
    height, width, channels = image.shape
    if height < 1 or width < 1:
        raise InvalidArgumentError(f"image has zero size ({width}x{height})")
    if height * width > MAX_PIXELS:
        raise InvalidArgumentError(f"{width}x{height} image is over {MAX_PIXELS} pixels")
    if channels == 1:
        return np.repeat(image, 3, axis=2), 1
    return np.ascontiguousarray(image[:, :, :3]), channels


def from_rgb(rgb: np.ndarray, channels: int) -> np.ndarray:
    """Back to the caller's channel count (grey = ITU-R 601 luma; alpha is not restored)."""
    if channels == 1:
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]
    return rgb


def corrupt(
    image: np.ndarray, name: str, severity: int, *, seed: int = 0, index: int = 0
) -> np.ndarray:
    """Apply corruption `name` at `severity` (1..5) to one uint8 image.

    Grey images are corrupted as RGB and returned grey (H x W x 1); RGBA loses
    its alpha (H x W x 3). Output has the input's height and width.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise InvalidArgumentError(
            f"unknown corruption {name!r}; known: {', '.join(sorted(REGISTRY))}"
        )
    if severity not in SEVERITIES:
        raise InvalidArgumentError(f"severity must be 1..5, got {severity}")
    rgb, channels = to_rgb(image)
    out = spec.fn(rgb, severity, corruption_rng(seed, index, name, severity))
    if out.shape != rgb.shape or out.dtype != np.uint8:
        raise AssertionError(f"{name} returned {out.dtype} {out.shape} for {rgb.shape}")
    return from_rgb(out, channels)


def clip_uint8(values: np.ndarray) -> np.ndarray:
    """Float image in [0, 255] scale -> uint8, rounding half to even like np.rint."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 image -> float32 in [0, 1]; one spelling keeps the families bit-identical."""
    return image.astype(np.float32) * np.float32(1 / 255)
