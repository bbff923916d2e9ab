import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from assay.server.errors import ImageTooLargeError, InvalidImageError, InvalidTensorError
from assay.server.models.backend import TensorInfo
from assay.server.models.config import InputSpec
from assay.server.models.preprocess import EncodedImage, InputTensor, PixelImage, Preprocessor
from tests.conftest import png_bytes


def make(max_pixels: int = 10_000_000, **spec: object) -> Preprocessor:
    params: dict[str, object] = {"height": 8, "width": 8, **spec}
    input_spec = InputSpec.model_validate(params)
    return Preprocessor(
        input_spec, TensorInfo("x", np.dtype(input_spec.dtype.value), input_spec.shape), max_pixels
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height; its pixel data is absent."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # far fewer bytes than the header promises
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_normalisation_matches_formula_in_nchw() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    prep = make(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    out = prep([PixelImage(pixels)])
    expected = ((pixels / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)


def test_nhwc_bgr_keeps_layout_and_flips_channels() -> None:
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0] = 10  # red
    pixels[..., 2] = 200  # blue
    out = make(layout="nhwc", color="bgr", scale=1.0)([PixelImage(pixels)])
    assert out.shape == (1, 8, 8, 3)
    assert out[0, 0, 0].tolist() == [200.0, 0.0, 10.0]


def test_gray_uses_luma_and_uint8_models_get_raw_pixels() -> None:
    pixels = np.full((8, 8, 3), (255, 0, 0), np.uint8)
    out = make(color="gray", dtype="uint8")([PixelImage(pixels)])
    assert out.dtype == np.uint8 and out.shape == (1, 1, 8, 8)
    assert int(out[0, 0, 0, 0]) == round(255 * 299 / 1000)  # ITU-R 601-2 luma of pure red


def test_stretch_resizes_to_input_size() -> None:
    pixels = np.arange(16 * 32, dtype=np.uint8).reshape(16, 32, 1).repeat(3, axis=2)
    out = make(scale=1.0, interpolation="nearest")([PixelImage(pixels)])
    assert out.shape == (1, 3, 8, 8)
    expected = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(out[0].transpose(1, 2, 0), expected)


def test_center_crop_takes_the_middle() -> None:
    # 8x24 image: left third 0, middle third 128, right third 255; crop_fraction 1 keeps 8x8 middle.
    pixels = np.zeros((8, 24, 3), np.uint8)
    pixels[:, 8:16] = 128
    pixels[:, 16:] = 255
    out = make(resize="center_crop", scale=1.0)([PixelImage(pixels)])
    assert np.all(out == 128)


def test_letterbox_pads_keeping_aspect() -> None:
    pixels = np.full((4, 8, 3), 200, np.uint8)
    out = make(resize="letterbox", scale=1.0, pad_value=7, interpolation="nearest")(
        [PixelImage(pixels)]
    )
    plane = out[0, 0]
    assert np.all(plane[:2] == 7) and np.all(plane[6:] == 7) and np.all(plane[2:6] == 200)


def test_encoded_and_tensor_inputs_mix_in_request_order() -> None:
    prep = make(scale=1.0)
    pixels = np.full((8, 8, 3), 50, np.uint8)
    tensor = np.full((3, 8, 8), -1.0, np.float32)
    out = prep([InputTensor(tensor), EncodedImage(png_bytes(pixels)), PixelImage(pixels)])
    assert np.all(out[0] == -1.0) and np.all(out[1] == 50.0) and np.all(out[2] == 50.0)


def test_rgba_and_single_channel_raw_images_are_accepted() -> None:
    prep = make(scale=1.0)
    rgba = np.dstack([np.full((8, 8, 3), 9, np.uint8), np.zeros((8, 8, 1), np.uint8)])
    gray = np.full((8, 8, 1), 9, np.uint8)
    out = prep([PixelImage(rgba), PixelImage(gray)])
    assert np.all(out == 9.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not an image at all", "not a supported image format"),
        (png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "could not be decoded"),
    ],
)
def test_bad_encoded_images_are_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as info:
        make()([EncodedImage(data)])
    assert str(info.value).startswith("image 0:")


def test_huge_png_is_refused_from_its_header() -> None:
    with pytest.raises(ImageTooLargeError, match="100000000 pixels exceeds the limit"):
        make()([EncodedImage(png_header_only(10_000, 10_000))])


def test_raw_image_over_limit_is_refused() -> None:
    with pytest.raises(ImageTooLargeError):
        make(max_pixels=50)([PixelImage(np.zeros((8, 8, 3), np.uint8))])


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 2), (0, 8, 3)])
def test_raw_image_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImageError):
        make()([PixelImage(np.zeros(shape, np.uint8))])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 8, 8), np.float64), "dtype is float64"),
        (np.zeros((8, 8, 3), np.float32), r"shape is \[8, 8, 3\]"),
        (np.full((3, 8, 8), np.nan, np.float32), "NaN"),
        (np.full((3, 8, 8), np.inf, np.float32), "NaN or Inf"),
    ],
)
def test_bad_tensors(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidTensorError, match=message):
        make()([PixelImage(np.zeros((8, 8, 3), np.uint8)), InputTensor(array)])


def test_jpeg_and_webp_decode() -> None:
    prep = make(scale=1.0)
    pixels = np.full((8, 8, 3), 120, np.uint8)
    for fmt in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, quality=100)
        out = prep([EncodedImage(buffer.getvalue())])
        assert np.abs(out - 120).max() <= 2
