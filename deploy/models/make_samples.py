"""Writes the committed sample data: photos and the held-out digits evaluation set.

- deploy/samples/photos/: photos scikit-image ships inside its package
  (public-domain / CC0), small JPEGs (longest side 320 px), for `assay demo`
  and the EfficientNet-Lite0 suites.
- deploy/samples/digits_heldout/<label>/<index>.png: every image of the
  digits test split (never seen in training), an ImageFolder dataset for
  robustness suites on the demo classifier.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = {
    "coffee": "a cup of espresso (CC0, Rachel Michetti)",
    "chelsea": "a tabby cat (CC0, Stefan van der Walt)",
    "astronaut": "astronaut Eileen Collins (public domain, NASA)",
    "rocket": "a rocket launch (public domain, SpaceX)",
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "samples" / "photos"
LONGEST_SIDE = 320


def write_samples(out: Path) -> list[Path]:
    """Save each photo as <name>.jpg, downscaled to LONGEST_SIDE, quality 90."""
    import skimage.data

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = LONGEST_SIDE / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        path = out / f"{name}.jpg"
        image.resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
        written.append(path)
    (out / "SOURCES.txt").write_text(
        "".join(
            f"{name}.jpg: scikit-image data.{name}() - {what}\n" for name, what in PHOTOS.items()
        )
    )
    return written


IMAGENET_PHOTOS = {"coffee": "espresso", "chelsea": "tabby cat", "clock": "wall clock"}
"""scikit-image photos whose subject is an ImageNet-1k class (EfficientNet label names)."""
CROPS = 8


def write_imagenet_photos(out: Path, manifest: Path) -> int:
    """Eight seeded crops (70-100 % of the shorter side) of each photo, with a JSONL manifest.

    The crops keep the subject in view and give the EfficientNet-Lite0 suites a
    few dozen labelled ImageNet photos offline.
    """
    import skimage.data

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, label in IMAGENET_PHOTOS.items():
        pil = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for k in range(CROPS):
            side = int(min(pil.size) * rng.uniform(0.7, 1.0))
            left = int(rng.integers(0, pil.width - side + 1))
            top = int(rng.integers(0, pil.height - side + 1))
            crop = pil.crop((left, top, left + side, top + side)).resize(
                (256, 256), Image.Resampling.LANCZOS
            )
            path = out / f"{name}_{k}.jpg"
            crop.save(path, quality=92)
            rows.append({"path": f"{out.name}/{path.name}", "label": label, "group": name})
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def write_digits_heldout(out: Path) -> int:
    """Write the digits test split as an ImageFolder; return the image count."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from digits_data import load_data

    data = load_data()
    if out.exists():
        shutil.rmtree(out)
    for index in data.test_idx:
        path = out / str(data.labels[index]) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[index]).save(path)
    return len(data.test_idx)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--digits-out", type=Path, default=DEFAULT_OUT.parent / "digits_heldout")
    args = parser.parse_args()
    for path in write_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    count = write_digits_heldout(args.digits_out)
    print(f"wrote {count} held-out digits under {args.digits_out}")
    crops = DEFAULT_OUT.parent / "photos_imagenet"
    count = write_imagenet_photos(crops, DEFAULT_OUT.parent / "photos_imagenet.jsonl")
    print(f"wrote {count} labelled ImageNet photo crops under {crops}")


if __name__ == "__main__":
    main()
