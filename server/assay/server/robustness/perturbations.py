"""Perturbation sequences for stability metrics (ImageNet-P style).

Each generator returns `frames` uint8 images (T x H x W x 3) that change a
little from one frame to the next, following Hendrycks & Dietterich 2019
("Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ImageNet-P): translations and rotations/scales move the
content a small step per frame, brightness steps change the exposure, and
noise sequences draw independent noise frames around the same image (for
those the flip rate compares each frame with the first, not its neighbour).
All randomness comes from the generator passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from assay.server.errors import InvalidArgumentError
from assay.server.robustness.corruptions.base import clip_uint8

SequenceFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Perturbation:
    """A registered perturbation sequence."""

    name: str
    fn: SequenceFn
    compare_to_first: bool
    """True for noise sequences: frames are compared with frame 0."""


PERTURBATIONS: dict[str, Perturbation] = {}


def _register(name: str, compare_to_first: bool = False) -> Callable[[SequenceFn], SequenceFn]:
    def add(fn: SequenceFn) -> SequenceFn:
        PERTURBATIONS[name] = Perturbation(name, fn, compare_to_first)
        return fn

    return add


@_register("translate")
def translate(image: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """1-pixel steps in a random direction; the border is reflected, so the size stays."""
    height, width = image.shape[:2]
    dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][int(rng.integers(4))]
    pad = frames
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        top, left = pad + dy * t, pad + dx * t
        out[t] = padded[top : top + height, left : left + width]
    return out


def _random_sign(rng: np.random.Generator) -> float:
    """+1 or -1 with equal probability: which way a sequence drifts."""
    return 1.0 if rng.random() < 0.5 else -1.0


def _centred_warps(
    image: np.ndarray, frames: int, degrees_per_frame: float, zoom_per_frame: float
) -> np.ndarray:
    """Frame t rotated by t·degrees and zoomed by 1 + t·zoom about the centre, border reflected."""
    height, width = image.shape[:2]
    centre = ((width - 1) / 2, (height - 1) / 2)
    return np.stack(
        [
            cv2.warpAffine(
                image,
                cv2.getRotationMatrix2D(centre, degrees_per_frame * t, 1.0 + zoom_per_frame * t),
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            for t in range(frames)
        ]
    )


@_register("rotate")
def rotate(image: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the centre in 0.5-degree steps, clockwise or not at random."""
    return _centred_warps(image, frames, _random_sign(rng) * 0.5, 0.0)


@_register("scale")
def scale(image: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Zoom about the centre by 1 % per frame, in or out at random."""
    return _centred_warps(image, frames, 0.0, _random_sign(rng) * 0.01)


@_register("brightness")
def brightness(image: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """HSV value shifted by 1 % of full scale per frame, up or down at random."""
    step = _random_sign(rng) * 0.01
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    out = np.empty((frames, *image.shape), np.uint8)
    for t in range(frames):
        shifted = hsv.copy()
        shifted[..., 2] = np.clip(shifted[..., 2] + step * t, 0.0, 1.0)
        out[t] = clip_uint8(cv2.cvtColor(shifted, cv2.COLOR_HSV2RGB) * 255.0)
    return out


@_register("gaussian_noise", compare_to_first=True)
def gaussian_noise(image: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Independent gaussian noise frames (sigma 0.03 of full scale) on the same image."""
    noise = rng.normal(0.0, 0.03 * 255.0, size=(frames, *image.shape)).astype(np.float32)
    return clip_uint8(image.astype(np.float32)[None] + noise)


def perturbation_sequence(
    image: np.ndarray, name: str, frames: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames (T x H x W x 3 uint8) of perturbation `name` applied to an RGB uint8 image."""
    spec = PERTURBATIONS.get(name)
    if spec is None:
        raise InvalidArgumentError(
            f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}"
        )
    if not 2 <= frames <= 100:
        raise InvalidArgumentError(f"a sequence needs 2..100 frames, got {frames}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidArgumentError(
            f"perturbations take uint8 HxWx3 images, got {image.dtype} {image.shape}"
        )
    return spec.fn(image, frames, rng)
