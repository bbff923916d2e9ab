import numpy as np
import pytest

from assay.server.errors import InvalidArgumentError
from assay.server.robustness.perturbations import PERTURBATIONS, perturbation_sequence


def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32 * 40).reshape(32, 40)
    return np.dstack([base, base[::-1], rng.integers(0, 255, (32, 40))]).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_sequences_start_at_the_image_and_change_step_by_step(name: str) -> None:
    img = image()
    frames = perturbation_sequence(img, name, 6, np.random.default_rng(1))
    assert frames.shape == (6, 32, 40, 3) and frames.dtype == np.uint8
    steps = [np.abs(frames[t].astype(int) - frames[t - 1]).mean() for t in range(1, 6)]
    assert all(s > 0 for s in steps), "every frame differs from the previous one"
    if not PERTURBATIONS[name].compare_to_first:
        assert np.abs(frames[0].astype(int) - img).mean() < 1.0, "frame 0 is the image itself"
        drift = [np.abs(frames[t].astype(int) - frames[0]).mean() for t in (1, 5)]
        assert drift[1] > drift[0], "frames drift away from the first"
    again = perturbation_sequence(img, name, 6, np.random.default_rng(1))
    np.testing.assert_array_equal(frames, again)


def test_translate_moves_one_pixel_per_frame() -> None:
    img = image()
    frames = perturbation_sequence(img, "translate", 4, np.random.default_rng(3))
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if abs(dy) + abs(dx) == 1]
    matched = [
        (dy, dx)
        for dy, dx in shifts
        if np.array_equal(frames[1][2:-2, 2:-2], img[2 + dy : 30 + dy, 2 + dx : 38 + dx])
    ]
    assert len(matched) == 1


def test_bad_requests_are_invalid() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown perturbation"):
        perturbation_sequence(image(), "wobble", 5, np.random.default_rng(0))
    with pytest.raises(InvalidArgumentError, match=r"2\.\.100 frames"):
        perturbation_sequence(image(), "rotate", 1, np.random.default_rng(0))
    with pytest.raises(InvalidArgumentError, match="uint8 HxWx3"):
        perturbation_sequence(image()[:, :, 0], "rotate", 5, np.random.default_rng(0))
