"""Writes the sample photos used by `assay demo` from scikit-image's bundled data.

scikit-image ships these photos inside its package (public-domain / CC0
images), so the samples are made offline and reproducibly. They are small
JPEGs (longest side 320 px) committed under deploy/samples/photos/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in write_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
