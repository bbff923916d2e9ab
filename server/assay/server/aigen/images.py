"""Request images -> full-resolution uint8 RGB arrays for detectors.

Detectors of generated images look at pixel-level traces, so images are decoded
at their own resolution (never resized here) and only converted to 8-bit RGB:

* 16-bit and 32-bit greyscale (PNG ``I;16``, ``I``) keep their top 8 bits; PIL's
  plain conversion would clip everything above 255 to white.
* CMYK (JPEG from print workflows) and palette images go through PIL's RGB
  conversion; alpha is dropped.
* Animated images (GIF, APNG, WebP with several frames) are refused: which frame
  is "the image" is the caller's decision, not the detector's.
* Preprocessed tensors are refused: a detector needs pixels to tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from assay.server.errors import ImageTooLargeError, InvalidArgumentError, InvalidImageError
from assay.server.models.preprocess import (
    EncodedImage,
    ImageInput,
    InputTensor,
    PixelImage,
    check_pixel_image,
    open_encoded,
)

_HIGH_BIT_MODES = {"I;16": 8, "I;16B": 8, "I;16L": 8, "I;16N": 8, "I": 24}
"""Integer modes and the right shift that keeps their top 8 significant bits."""


def decode_rgb(image: ImageInput, max_pixels: int) -> np.ndarray:
    """One request image as ``H x W x 3`` uint8 RGB at its own resolution.

    Raises:
        InvalidImageError: not an image, empty, animated or undecodable.
        ImageTooLargeError: more than ``max_pixels`` pixels (read from the header).
        InvalidArgumentError: a preprocessed tensor instead of an image.
    """
    if isinstance(image, InputTensor):
        raise InvalidArgumentError(
            "AI-generated image detection needs images (encoded or raw pixels), not "
            "preprocessed tensors: detectors tile the image at its own resolution"
        )
    if isinstance(image, PixelImage):
        check_pixel_image(image.array, max_pixels)
        array = image.array
        if array.shape[2] == 1:
            return np.repeat(array, 3, axis=2)
        return np.ascontiguousarray(array[:, :, :3])
    return _decode(image, max_pixels)


def decode_all(images: Sequence[ImageInput], max_pixels: int) -> list[np.ndarray]:
    """:func:`decode_rgb` for every image; errors name the image's index."""
    decoded = []
    for index, image in enumerate(images):
        try:
            decoded.append(decode_rgb(image, max_pixels))
        except (InvalidImageError, ImageTooLargeError, InvalidArgumentError) as exc:
            raise type(exc)(f"image {index}: {exc}") from None
    return decoded


def _decode(image: EncodedImage, max_pixels: int) -> np.ndarray:
    with open_encoded(image.data, max_pixels) as pil:
        frames = int(getattr(pil, "n_frames", 1))
        if frames > 1:
            raise InvalidImageError(
                f"animated {pil.format} with {frames} frames; send the frame to check "
                "as a still image (PNG or JPEG)"
            )
        try:
            pil.load()
            return _to_rgb(pil)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"image could not be decoded ({exc}); truncated?") from None


def _to_rgb(pil: Image.Image) -> np.ndarray:
    shift = _HIGH_BIT_MODES.get(pil.mode)
    if shift is not None:
        wide = np.asarray(pil).astype(np.int64)
        if pil.mode == "I":  # 32-bit signed: keep the range actually used
            top = int(wide.max(initial=0))
            shift = max(0, top.bit_length() - 8)
        grey = np.clip(wide >> shift, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if pil.mode == "F":
        raise InvalidImageError("floating-point images are not supported; send 8-bit or 16-bit")
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)
