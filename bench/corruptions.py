"""Corruption benchmark: assay's implementations vs the imagecorruptions reference.

In one run, per corruption at 224x224 RGB and severity 3, the median time of
`assay.server.robustness.corruptions.corrupt` and of
`imagecorruptions.corrupt` (the reference package of Michaelis et al., 2019,
installed only in the bench environment) on the same photos, then the
suite-total ratio last (reference time / ours: > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from assay.server.robustness.corruptions import EXTRAS, IMAGENET_C, corrupt

PHOTOS = sorted(
    (Path(__file__).resolve().parents[1] / "deploy" / "samples" / "photos").glob("*.jpg")
)


def photos(size: int = 224) -> list[np.ndarray]:
    """The sample photos, centre-cropped and resized to size x size RGB."""
    images = []
    for path in PHOTOS:
        with Image.open(path) as pil:
            side = min(pil.size)
            left, top = (pil.width - side) // 2, (pil.height - side) // 2
            crop = pil.convert("RGB").crop((left, top, left + side, top + side))
            images.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR)))
    return images


def median_seconds(
    fn: Callable[[np.ndarray, int], object], images: list[np.ndarray], repeats: int
) -> float:
    """Median over repeats of the mean time per image."""
    for i, image in enumerate(images):
        fn(image, i)  # warm-up (imports, caches, kernels)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i, image in enumerate(images):
            fn(image, i)
        samples.append((time.perf_counter() - start) / len(images))
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from imagecorruptions import corrupt as reference  # the bench environment's baseline

    images = photos()
    ours_total = reference_total = 0.0
    slower = []
    print(f"{'corruption':<20} {'ours ms':>9} {'reference ms':>13} {'speed-up':>9}")
    for name in IMAGENET_C + EXTRAS:
        ours = median_seconds(
            lambda img, i, n=name: corrupt(img, n, args.severity, seed=0, index=i),
            images,
            args.repeats,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = median_seconds(
                lambda img, i, n=name: reference(img, corruption_name=n, severity=args.severity),
                images,
                args.repeats,
            )
        ours_total += ours
        reference_total += ref
        if ours > ref:
            slower.append(name)
        print(f"{name:<20} {ours * 1000:9.2f} {ref * 1000:13.2f} {ref / ours:8.2f}x")
    print(f"slower than the reference: {', '.join(slower) or 'none'}")
    ours_ms, reference_ms = ours_total * 1000, reference_total * 1000
    print(f"suite total: ours {ours_ms:.1f} ms, reference {reference_ms:.1f} ms per image")
    print(f"corruptions speed-up (reference/ours, suite total): {reference_total / ours_total:.2f}")


if __name__ == "__main__":
    main()
