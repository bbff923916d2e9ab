"""Images -> the model's input tensor: decode, colour, resize, normalise, layout.

Decoding is bounded: the pixel count is read from the header and checked
before any pixel is decoded. Normalisation runs once over the whole request
as one vectorised numpy expression.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from assay.server.errors import (
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidTensorError,
)
from assay.server.models.backend import TensorInfo
from assay.server.models.config import Color, InputDType, InputSpec, Interpolation, Layout, Resize

# assay enforces its own, configurable pixel limit from the header (below);
# PIL's process-wide bomb check would otherwise warn or refuse independently.
Image.MAX_IMAGE_PIXELS = None

_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
    Interpolation.AREA: Image.Resampling.BOX,
}


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes (PNG, JPEG, WebP, ...)."""

    data: bytes


@dataclass(frozen=True)
class PixelImage:
    """A decoded uint8 image, HWC with 1, 3 or 4 channels."""

    array: np.ndarray


@dataclass(frozen=True)
class InputTensor:
    """A caller-preprocessed model input for one image (no batch dimension)."""

    array: np.ndarray


ImageInput = EncodedImage | PixelImage | InputTensor


def check_request_images(count: int, ids: Sequence[str], limit: int, setting: str) -> None:
    """Refuse a request without images, with more than ``limit``, or with ids that do not match.

    Args:
        count: The request's images.
        ids: Their ids (empty: none given).
        limit: The most images one request may carry.
        setting: The setting that sets ``limit``, named in the message.

    Raises:
        InvalidArgumentError: Naming what to change.
    """
    if count == 0:
        raise InvalidArgumentError("request has no images; send at least one")
    if count > limit:
        raise InvalidArgumentError(
            f"request has {count} images; at most {limit} are accepted per request "
            f"({setting}), split it into several requests"
        )
    if ids and len(ids) != count:
        raise InvalidArgumentError(f"{len(ids)} ids for {count} images")


class Preprocessor:
    """Turns a request's images into one batch for one model input."""

    def __init__(self, spec: InputSpec, model_input: TensorInfo, max_pixels: int) -> None:
        self.spec = spec
        self.model_input = model_input
        self.max_pixels = max_pixels
        channels = spec.channels
        mean = np.broadcast_to(np.asarray(spec.mean, np.float32), (channels,))
        std = np.broadcast_to(np.asarray(spec.std, np.float32), (channels,))
        # (x * scale - mean) / std == x * gain + bias, one fused pass.
        self.gain = (spec.scale / std).astype(np.float32)
        """Per-channel factor: input = pixel * gain + bias (pixel in 0..255)."""
        self.bias = (-mean / std).astype(np.float32)
        self._dtype = np.dtype(spec.dtype.value)

    def __call__(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Both phases at once: open(images), then build()."""
        return self.build(self.open(images))

    def open(self, images: Sequence[ImageInput]) -> list[Image.Image | np.ndarray]:
        """Phase 1, cheap: read headers and check formats and sizes; decode nothing.

        Returns lazily-decoded PIL images for encoded and raw inputs and
        checked arrays for tensors, in request order. Errors name the image.
        """
        opened: list[Image.Image | np.ndarray] = []
        for index, image in enumerate(images):
            try:
                if isinstance(image, InputTensor):
                    opened.append(self._check_tensor(image.array))
                elif isinstance(image, EncodedImage):
                    opened.append(self._open_encoded(image.data))
                else:
                    check_pixel_image(image.array, self.max_pixels)
                    opened.append(_from_array(image.array))
            except (InvalidImageError, InvalidTensorError, ImageTooLargeError) as exc:
                raise type(exc)(f"image {index}: {exc}") from None
        return opened

    @staticmethod
    def pixel_count(opened: Sequence[Image.Image | np.ndarray]) -> int:
        """Source pixels of opened images: the work phase 2 will do."""
        total = 0
        for item in opened:
            if isinstance(item, np.ndarray):
                total += int(np.prod(item.shape[-2:]))
            else:
                width, height = item.size
                total += width * height
        return total

    def build(self, opened: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """Phase 2: decode, convert colour, resize and normalise into one batch."""
        batch = np.empty((len(opened), *self.spec.shape), dtype=self._dtype)
        pixel_rows: list[int] = []
        pixels: list[np.ndarray] = []
        for index, item in enumerate(opened):
            if isinstance(item, np.ndarray):
                batch[index] = item
                continue
            try:
                pixels.append(self._to_pixels(item))
            except InvalidImageError as exc:
                raise InvalidImageError(f"image {index}: {exc}") from None
            pixel_rows.append(index)
        if pixels:
            batch[pixel_rows] = self.normalise(np.stack(pixels))
        return batch

    def model_pixels(self, images: Sequence[ImageInput]) -> np.ndarray:
        """N x H x W x C uint8 pixels at the model's size and colour (no normalisation)."""
        opened = self.open(images)
        if any(isinstance(item, np.ndarray) for item in opened):
            raise InvalidImageError("model_pixels takes images, not preprocessed tensors")
        return np.stack([self._to_pixels(item) for item in opened])  # type: ignore[arg-type]

    def _to_pixels(self, pil: Image.Image) -> np.ndarray:
        try:
            pil.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"image could not be decoded ({exc}); truncated?") from None
        pil = pil.convert("L" if self.spec.color is Color.GRAY else "RGB")
        pil = self._resize(pil)
        array = np.asarray(pil, dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    def _open_encoded(self, data: bytes) -> Image.Image:
        return open_encoded(data, self.max_pixels)

    def _resize(self, pil: Image.Image) -> Image.Image:
        spec = self.spec
        target = (spec.width, spec.height)
        resample = _FILTERS[spec.interpolation]
        if pil.size == target:
            return pil
        if spec.resize is Resize.STRETCH:
            return pil.resize(target, resample)
        width, height = pil.size
        if spec.resize is Resize.CENTER_CROP:
            scale = max(spec.width / width, spec.height / height) / spec.crop_fraction
            resized = (
                max(spec.width, round(width * scale)),
                max(spec.height, round(height * scale)),
            )
            left = (resized[0] - spec.width) // 2
            top = (resized[1] - spec.height) // 2
            return pil.resize(resized, resample).crop(
                (left, top, left + spec.width, top + spec.height)
            )
        scale = min(spec.width / width, spec.height / height)
        fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(
            pil.mode, target, spec.pad_value if pil.mode == "L" else (spec.pad_value,) * 3
        )
        canvas.paste(
            pil.resize(fitted, resample),
            ((target[0] - fitted[0]) // 2, (target[1] - fitted[1]) // 2),
        )
        return canvas

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """NHWC pixels at model size and colour (uint8, or float in 0..255) -> model input.

        Float pixels let attacks feed sub-integer perturbations straight to the model.
        """
        if self.spec.color is Color.BGR:
            pixels = pixels[..., ::-1]
        if self.spec.dtype is InputDType.UINT8:
            values: np.ndarray = pixels
        else:
            values = pixels.astype(np.float32) * self.gain + self.bias
        if self.spec.layout is Layout.NCHW:
            values = values.transpose(0, 3, 1, 2)
        return values.astype(self._dtype, copy=False)

    def _check_tensor(self, array: np.ndarray) -> np.ndarray:
        want = self.model_input
        if array.dtype != want.dtype:
            raise InvalidTensorError(
                f"tensor dtype is {array.dtype}, model input {want.name!r} needs {want.dtype}"
            )
        if array.shape != self.spec.shape:
            raise InvalidTensorError(
                f"tensor shape is {list(array.shape)}, model input {want.name!r} needs "
                f"{list(self.spec.shape)} per image (no batch dimension)"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidTensorError("tensor contains NaN or Inf values")
        return array


def _from_array(array: np.ndarray) -> Image.Image:
    """uint8 HWC (channels 1, 3 or 4) -> PIL image; alpha is dropped later."""
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def check_pixel_image(array: np.ndarray, max_pixels: int) -> None:
    """Validate a decoded image's shape before it is used."""
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"raw image must be height x width x channels with 1, 3 or 4 channels, "
            f"got shape {list(array.shape)}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InvalidImageError(f"raw image has zero size ({width}x{height})")
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )


def open_encoded(data: bytes, max_pixels: int) -> Image.Image:
    """Open encoded image bytes lazily, refusing empty, unreadable or too large ones.

    The pixel count comes from the header, so nothing is decoded before the check.
    """
    if not data:
        raise InvalidImageError("encoded image is empty (0 bytes)")
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"bytes are not a supported image format (PNG, JPEG, WebP, BMP, GIF, TIFF); "
            f"first bytes: {data[:8]!r}"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"image header could not be read ({exc})") from None
    width, height = pil.size
    if width == 0 or height == 0:
        raise InvalidImageError(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels}; downscale the image before sending it"
        )
    return pil
