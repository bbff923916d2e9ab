"""Verdict stability under ordinary re-encoding.

SIDBench (Schinas & Papadopoulos, "SIDBench: A Python Framework for Reliably
Assessing Synthetic Image Detection Methods", 2024) and the robustness studies
of CNNDetection (Wang et al., CVPR 2020) show that a detector's decision on a
single image can flip after a JPEG re-save or a mild resize. assay therefore
re-scores each image under a fixed set of everyday transformations and only
reports ``GENERATED`` or ``REAL`` when the decision survives them; otherwise
the verdict is ``UNSURE``.

Variants (names are the keys of :func:`variants`):

* ``jpeg_q95``, ``jpeg_q85``, ``jpeg_q75``: one JPEG encode/decode with OpenCV
  at that quality (RGB is converted to BGR for OpenCV and back).
* ``downscale_0.75``, ``downscale_0.5``: ``cv2.resize`` with ``INTER_AREA`` to
  ``max(1, floor(dim * factor + 0.5))`` along each axis.
* ``gaussian_blur_s1.0``: ``cv2.GaussianBlur`` with sigma 1.0 (kernel size
  derived by OpenCV), ``BORDER_REFLECT_101``.

Images are ``H x W x C`` uint8 with ``C`` in {1, 3} (RGB) or ``H x W``; every
variant keeps the input's channel layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

Verdict = Literal["GENERATED", "REAL", "UNSURE"]

JPEG_QUALITIES: tuple[int, ...] = (95, 85, 75)
DOWNSCALE_FACTORS: tuple[float, ...] = (0.75, 0.5)
BLUR_SIGMA = 1.0


def _check_image(image: NDArray[np.uint8]) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"image must be H x W, H x W x 1 or H x W x 3, got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be non-empty, got {image.shape}")


def _like(result: NDArray[np.uint8], image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Restore a trailing singleton channel that OpenCV drops."""
    if image.ndim == 3 and result.ndim == 2:
        return result[:, :, None]
    return result


def jpeg_roundtrip(image: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    """Encode ``image`` (RGB or grey) as JPEG at ``quality`` and decode it again.

    Args:
        image: ``H x W x 3`` RGB, ``H x W x 1`` or ``H x W`` uint8 image.
        quality: JPEG quality in ``[0, 100]``.

    Returns:
        The decoded image, same shape and channel order as ``image``.

    Raises:
        ValueError: On an invalid image or quality.
        RuntimeError: If OpenCV fails to encode or decode.
    """
    _check_image(image)
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [0, 100], got {quality}")
    colour = image.ndim == 3 and image.shape[2] == 3
    src = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if colour else np.ascontiguousarray(image)
    ok, buf = cv2.imencode(".jpg", src, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    flag = cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE
    decoded = cv2.imdecode(buf, flag)
    if decoded is None:
        raise RuntimeError("cv2.imdecode failed")
    if colour:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return _like(np.asarray(decoded, dtype=np.uint8), image)


def downscaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """``(h, w)`` of a down-scaled image: ``max(1, floor(dim * factor + 0.5))``."""
    return (
        max(1, math.floor(height * factor + 0.5)),
        max(1, math.floor(width * factor + 0.5)),
    )


def downscale(image: NDArray[np.uint8], factor: float) -> NDArray[np.uint8]:
    """Down-scale with ``cv2.INTER_AREA`` to :func:`downscaled_size`.

    Args:
        image: uint8 image (see the module docstring for layouts).
        factor: Scale factor in ``(0, 1]``.

    Returns:
        The resized image with the input's channel layout.

    Raises:
        ValueError: On an invalid image or factor.
    """
    _check_image(image)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"down-scale factor must be in (0, 1], got {factor}")
    h, w = downscaled_size(int(image.shape[0]), int(image.shape[1]), factor)
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return _like(np.asarray(out, dtype=np.uint8), image)


def gaussian_blur(image: NDArray[np.uint8], sigma: float = BLUR_SIGMA) -> NDArray[np.uint8]:
    """Mild Gaussian blur (OpenCV-derived kernel size, reflect-101 border).

    Args:
        image: uint8 image (see the module docstring for layouts).
        sigma: Standard deviation in pixels (``> 0``).

    Returns:
        The blurred image, same shape.

    Raises:
        ValueError: On an invalid image or sigma.
    """
    _check_image(image)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    out = cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
    )
    return _like(np.asarray(out, dtype=np.uint8), image)


def variants(image: NDArray[np.uint8]) -> dict[str, NDArray[np.uint8]]:
    """The re-encoding variants of ``image``, keyed by name (see module docstring).

    Args:
        image: ``H x W x 3`` RGB, ``H x W x 1`` or ``H x W`` uint8 image.

    Returns:
        Name to transformed image, in a fixed order: JPEG 95/85/75,
        down-scale 0.75/0.5, blur.
    """
    _check_image(image)
    out: dict[str, NDArray[np.uint8]] = {}
    for q in JPEG_QUALITIES:
        out[f"jpeg_q{q}"] = jpeg_roundtrip(image, q)
    for f in DOWNSCALE_FACTORS:
        out[f"downscale_{f}"] = downscale(image, f)
    out[f"gaussian_blur_s{BLUR_SIGMA}"] = gaussian_blur(image, BLUR_SIGMA)
    return out


@dataclass(frozen=True)
class StabilityResult:
    """A three-way verdict and the evidence behind it.

    Attributes:
        verdict: ``GENERATED`` / ``REAL`` from the base decision when it is
            stable, ``UNSURE`` when ``flip_fraction > max_flip_fraction``.
        base_probability: Detector probability on the unmodified image.
        base_generated: Base decision, ``base_probability >= threshold``.
        threshold: Decision threshold on the probability.
        flip_fraction: Fraction of variants whose decision differs from the base.
        max_flip_fraction: Tolerance used for the verdict.
        flips: Variant name to whether its decision differs from the base.
        variant_probabilities: Variant name to detector probability.
    """

    verdict: Verdict
    base_probability: float
    base_generated: bool
    threshold: float
    flip_fraction: float
    max_flip_fraction: float
    flips: Mapping[str, bool] = field(default_factory=dict)
    variant_probabilities: Mapping[str, float] = field(default_factory=dict)


def _check_probability(name: str, p: float) -> float:
    value = float(p)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return value


def stable_verdict(
    base_probability: float,
    variant_probabilities: Mapping[str, float],
    threshold: float,
    max_flip_fraction: float = 0.0,
) -> StabilityResult:
    """Decide GENERATED / REAL / UNSURE from base and variant probabilities.

    A decision is "generated" iff ``p >= threshold``. A variant *flips* when its
    decision differs from the base decision. The verdict is ``UNSURE`` iff
    ``flip_fraction > max_flip_fraction``; with the default ``0.0`` any single
    flip makes the verdict ``UNSURE``.

    Args:
        base_probability: Probability of "generated" on the unmodified image.
        variant_probabilities: Variant name to probability (e.g. scored on
            :func:`variants`); must be non-empty.
        threshold: Decision threshold; any finite value (a calibrated threshold
            from :func:`~assay.server.aigen.calibration.fit_detector_threshold`
            may sit just above a score of 1.0, which makes every decision REAL).
        max_flip_fraction: Tolerated fraction of flipped variants in ``[0, 1]``.

    Returns:
        The verdict with per-variant flips and probabilities.

    Raises:
        ValueError: On out-of-range inputs or no variants.
    """
    base = _check_probability("base_probability", base_probability)
    thr = float(threshold)
    if not math.isfinite(thr):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not 0.0 <= max_flip_fraction <= 1.0:
        raise ValueError(f"max_flip_fraction must be in [0, 1], got {max_flip_fraction}")
    if not variant_probabilities:
        raise ValueError("variant_probabilities must be non-empty")
    probs = {
        name: _check_probability(f"variant_probabilities[{name!r}]", p)
        for name, p in variant_probabilities.items()
    }
    base_generated = base >= thr
    flips = {name: (p >= thr) != base_generated for name, p in probs.items()}
    flip_fraction = sum(flips.values()) / len(flips)
    verdict: Verdict
    if flip_fraction > max_flip_fraction:
        verdict = "UNSURE"
    else:
        verdict = "GENERATED" if base_generated else "REAL"
    return StabilityResult(
        verdict=verdict,
        base_probability=base,
        base_generated=base_generated,
        threshold=thr,
        flip_fraction=flip_fraction,
        max_flip_fraction=float(max_flip_fraction),
        flips=flips,
        variant_probabilities=probs,
    )
