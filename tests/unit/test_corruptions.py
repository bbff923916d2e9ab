"""Registry-wide corruption properties: all 19 registered, determinism, odd inputs, errors."""

import time

import numpy as np
import pytest

from assay.server.errors import InvalidArgumentError
from assay.server.robustness.corruptions import EXTRAS, IMAGENET_C, REGISTRY, corrupt
from assay.server.robustness.corruptions.base import corruption_rng

NAMES = sorted(REGISTRY)


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients, edges and texture: something every corruption visibly changes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(12 * x + 7 * y)], axis=-1)
    base[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (230, 40, 40)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def test_the_registry_holds_imagenet_c_and_its_extras() -> None:
    assert len(IMAGENET_C) == 15 and len(EXTRAS) == 4
    assert set(REGISTRY) == set(IMAGENET_C) | set(EXTRAS)
    assert {REGISTRY[n].extra for n in EXTRAS} == {True}
    assert {REGISTRY[n].family for n in IMAGENET_C} == {"noise", "blur", "weather", "digital"}


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_same_bytes_and_images_get_independent_streams(name: str) -> None:
    image = photo_like(48, 40)
    a = corrupt(image, name, 3, seed=7, index=2)
    assert np.array_equal(a, corrupt(image, name, 3, seed=7, index=2))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert not np.array_equal(a, image), f"{name} must change the image at severity 3"


def test_streams_differ_by_seed_index_corruption_and_severity() -> None:
    draws = {
        key: corruption_rng(*key).integers(0, 2**62)
        for key in [
            (0, 0, "fog", 1),
            (1, 0, "fog", 1),
            (0, 1, "fog", 1),
            (0, 0, "snow", 1),
            (0, 0, "fog", 2),
        ]
    }
    assert len(set(draws.values())) == len(draws)


@pytest.mark.parametrize("name", NAMES)
def test_grey_and_rgba_inputs(name: str) -> None:
    grey = photo_like(30, 26)[:, :, :1]
    out = corrupt(grey, name, 2, seed=1)
    assert out.shape == (30, 26, 1) and out.dtype == np.uint8
    flat = corrupt(grey[:, :, 0], name, 2, seed=1)
    assert np.array_equal(flat, out), "H x W and H x W x 1 are the same grey image"
    rgba = np.dstack([photo_like(30, 26), np.full((30, 26, 1), 255, np.uint8)])
    assert corrupt(rgba, name, 2, seed=1).shape == (30, 26, 3), "alpha is dropped"


def test_a_large_photo_is_handled() -> None:
    """4000 x 3000 (12 MP) grey and RGBA inputs work for a cheap and a spatial corruption."""
    big = np.zeros((3000, 4000, 4), np.uint8)
    big[..., :3] = 90
    big[1000:2000, 1000:3000, :3] = 200
    for name in ("contrast", "defocus_blur"):
        start = time.perf_counter()
        out = corrupt(big, name, 1)
        assert out.shape == (3000, 4000, 3)
        assert time.perf_counter() - start < 60
    assert corrupt(big[:, :, 0], "gaussian_noise", 1).shape == (3000, 4000, 1)


@pytest.mark.parametrize(
    ("image", "name", "severity", "message"),
    [
        (photo_like(8, 8), "sunburn", 1, "unknown corruption"),
        (photo_like(8, 8), "fog", 0, "severity must be 1..5"),
        (photo_like(8, 8), "fog", 6, "severity must be 1..5"),
        (photo_like(8, 8).astype(np.float32), "fog", 1, "uint8"),
        (np.zeros((8, 8, 2), np.uint8), "fog", 1, "H x W x 1, 3 or 4"),
        (np.zeros((0, 8, 3), np.uint8), "fog", 1, "zero size"),
    ],
)
def test_bad_requests_are_clear_errors(
    image: np.ndarray, name: str, severity: int, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        corrupt(image, name, severity)
