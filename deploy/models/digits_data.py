"""The digits data set, torch-free: scikit-learn's 1797 digits at 28x28 with a fixed split.

Shared by train_demo.py (training) and make_samples.py (the committed
held-out evaluation set), so both use exactly the same test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

IMAGE_SIZE = 28
SPLIT_SEED = 0  # the train/test split never changes, whatever --seed says


@dataclass
class DigitsData:
    """All 1797 digits as 28x28 uint8 images, with the fixed train/test split."""

    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]
    train_idx: np.ndarray  # positions in load_digits()
    test_idx: np.ndarray


def to_uint8_28(images_8x8: np.ndarray) -> np.ndarray:
    """0..16 floats -> uint8 (value*255/16, rounded) -> 28x28 bilinear."""
    small = np.rint(images_8x8 * 255.0 / 16.0).astype(np.uint8)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return np.stack(
        [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BILINEAR)) for im in small]
    )


def load_data() -> DigitsData:
    """Load scikit-learn's digits and split them 75/25, stratified by class."""
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=SPLIT_SEED
    )
    return DigitsData(to_uint8_28(digits.images), labels, np.sort(train_idx), np.sort(test_idx))
