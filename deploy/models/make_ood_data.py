"""Writes out-of-distribution sets for the digits classifier and a small synthetic anomaly set.

Everything comes from data installed with the packages (Pillow's built-in fonts,
scikit-image's bundled sample images) or from a seeded generator, so the sets
can be rebuilt offline and bit-identically:

- letters/ood/: capital letters and symbols that do not look like digits, drawn
  through the same 32x32 -> 8x8 counts -> 28x28 pipeline as the digits, so they
  differ from the training data in content only, not in style.
- textures/ood/: crops of scikit-image's texture and photo samples.
- noise/ood/: uniform noise, Gaussian blobs and random lines.
- anomaly/tiles/: MVTec-style layout (train/good, test/good, test/defect,
  ground_truth/defect) of 64x64 brick "tiles" with scratches, spots and cracks,
  each defect with a pixel-exact mask.

Each image has its own random stream, seeded by (seed, set, index): raising
--per-set only appends images, it never changes the ones already written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import skimage.data
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features
from skimage.morphology import skeletonize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_data import IMAGE_SIZE, to_uint8_28

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "samples" / "ood"
OOD_SETS = ("letters", "textures", "noise")
ANOMALY = "anomaly"
PRODUCT = "tiles"

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]
Rng = np.random.Generator

DIGIT_LOOKALIKES = frozenset("ODQUILJTZSGB")
"""Capitals a blurry 8x8 digit could pass for (O/D/Q/U~0, I/L/J/T~1/7, Z~2, S~5, G~6, B~8)."""
LETTERS = "ACEFHKMNPRVWXY"
SYMBOLS = "#%&@+=?*<>"
CHARACTERS = LETTERS + SYMBOLS
"""Drawn in turn, so every set covers all of them evenly."""

TEXTURE_SOURCES = ("brick", "grass", "gravel", "camera", "coins", "moon", "text", "page")
"""skimage.data images that ship inside the wheel (no pooch download)."""
NOISE_KINDS = ("uniform", "blobs", "lines")
DEFECT_KINDS = ("scratch", "spot", "crack")

SET_IDS = {
    "letters": 1,
    "textures": 2,
    "noise": 3,
    "train": 4,
    "test_good": 5,
    "test_defect": 6,
    "defect": 7,
}
"""Second element of each image's seed, so the sets draw independent streams."""


@dataclass(frozen=True)
class AnomalyCounts:
    """How many tiles each split of the anomaly set gets."""

    train_good: int = 60
    test_good: int = 20
    test_defect: int = 40


def image_rng(seed: int, set_name: str, index: int) -> Rng:
    """One stream per image: images do not depend on how many others were drawn."""
    return np.random.default_rng([seed, SET_IDS[set_name], index])


def save_png(array: U8, path: Path) -> None:
    """Write a greyscale PNG (no timestamps or other metadata, so the bytes are reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


# --- letters ---------------------------------------------------------------


BITMAP_UPSCALE = 6
"""The bitmap font's ~5x7 px glyphs are enlarged before rotating, or rotation erases strokes."""


def choose_font(rng: Rng) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, int]:
    """Pillow's bitmap font or, half the time where FreeType is built in, its scalable font.

    Returns the font and the factor its glyphs must be enlarged by.
    """
    if features.check("freetype2") and rng.random() < 0.5:
        return ImageFont.load_default(size=int(rng.integers(28, 49))), 1
    return ImageFont.load_default_imagefont(), BITMAP_UPSCALE


def render_glyph(char: str, rng: Rng) -> Image.Image:
    """The character in white on black, rotated up to 15 degrees, binarised, cropped to its ink."""
    font, upscale = choose_font(rng)
    canvas = Image.new("L", (64, 64))
    ImageDraw.Draw(canvas).text((8, 8), char, fill=255, font=font)
    glyph = canvas.crop(canvas.getbbox())
    if upscale > 1:  # enlarge, then round the pixel staircase off so skeletons stay clean
        size = (glyph.width * upscale, glyph.height * upscale)
        glyph = glyph.resize(size, Image.Resampling.NEAREST).filter(ImageFilter.GaussianBlur(2))
    rotated = glyph.rotate(float(rng.uniform(-15, 15)), Image.Resampling.BILINEAR, expand=True)
    ink = rotated.point(lambda v: 255 if v > 127 else 0)
    return ink.crop(ink.getbbox())


def normalise_32(glyph: Image.Image, rng: Rng) -> U8:
    """Fit the glyph in the 32x32 box like the digits' NIST preprocessing, then redraw its strokes.

    The digits fill the box's height and are centred; random height and shift
    add size and position variation. Font strokes are much bolder than pen
    strokes, so the glyph is thinned to its skeleton and dilated once or twice
    (3 or 5 px, a pen's width): that matches the digits' mean brightness.
    """
    height = int(rng.integers(24, 33))
    width = max(2, min(32, round(glyph.width * height / glyph.height)))
    scaled = glyph.resize((width, height), Image.Resampling.BILINEAR)
    box = Image.new("L", (32, 32))
    left = (32 - width) // 2 + int(rng.integers(-2, 3))
    top = (32 - height) // 2 + int(rng.integers(-2, 3))
    box.paste(scaled.point(lambda v: 255 if v > 96 else 0), (left, top))
    skeleton = skeletonize(np.asarray(box) > 0)  # type: ignore[no-untyped-call]
    strokes = Image.fromarray(np.where(skeleton, 255, 0).astype(np.uint8))
    for _ in range(int(rng.integers(1, 3))):
        strokes = strokes.filter(ImageFilter.MaxFilter(3))
    return np.asarray(strokes)


def to_digit_style(bitmap_32: U8) -> U8:
    """Count ink in 4x4 blocks (0..16) and upsample exactly as the digits data set does.

    The block counts and bilinear upsampling are what blur the digits, so the
    letters get the same softness and value range.
    """
    counts = (bitmap_32 > 0).reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float64)
    return to_uint8_28(counts[None])[0]


def make_letter(seed: int, index: int) -> U8:
    """Letter or symbol number `index` (cycling through CHARACTERS), 28x28 uint8."""
    rng = image_rng(seed, "letters", index)
    char = CHARACTERS[index % len(CHARACTERS)]
    return to_digit_style(normalise_32(render_glyph(char, rng), rng))


# --- textures --------------------------------------------------------------


@cache
def load_texture(name: str) -> U8:
    """A greyscale scikit-image sample image (cached: each is decoded once per run)."""
    image = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if image.ndim != 2:
        raise ValueError(f"skimage.data.{name}() is not greyscale")
    return image


def random_crop(image: U8, side: int, rng: Rng) -> U8:
    """A side x side window at a random position."""
    top = int(rng.integers(0, image.shape[0] - side + 1))
    left = int(rng.integers(0, image.shape[1] - side + 1))
    return image[top : top + side, left : left + side]


def stretch(image: NDArray[np.floating] | U8, low: float = 0.0, high: float = 255.0) -> U8:
    """Map the 1st..99th percentile onto low..high, so every crop spans the digits' range."""
    lo, hi = np.percentile(image, [1, 99])
    scaled = (np.asarray(image, np.float64) - lo) / max(float(hi - lo), 1e-6)
    return np.rint(np.clip(scaled, 0.0, 1.0) * (high - low) + low).astype(np.uint8)


def make_texture(seed: int, index: int) -> U8:
    """A random crop of one of TEXTURE_SOURCES (in turn), area-resized to 28x28."""
    rng = image_rng(seed, "textures", index)
    image = load_texture(TEXTURE_SOURCES[index % len(TEXTURE_SOURCES)])
    side = int(rng.integers(28, min(min(image.shape), 160) + 1))
    crop = Image.fromarray(random_crop(image, side, rng))
    return stretch(np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)))


# --- noise -----------------------------------------------------------------


def uniform_noise(rng: Rng) -> U8:
    """I.i.d. uniform noise on a 7, 14 or 28 px grid, bilinearly upsampled."""
    grid = int(rng.choice([7, 14, 28]))
    low = rng.uniform(0, 100)
    cells = rng.uniform(low, rng.uniform(low + 60, 255), size=(grid, grid)).astype(np.float32)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return (
        np.asarray(Image.fromarray(cells).resize(size, Image.Resampling.BILINEAR))
        .clip(0, 255)
        .round()
        .astype(np.uint8)
    )


def gaussian_blobs(rng: Rng) -> U8:
    """One to four Gaussian bumps of random width and height, peak scaled to 200..255."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    total = np.zeros_like(yy)
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(2, IMAGE_SIZE - 2, size=2)
        sigma = rng.uniform(2.0, 7.0)
        total += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / sigma**2 / 2)
    return np.rint(total / total.max() * rng.uniform(200, 255)).astype(np.uint8)


def random_lines(rng: Rng) -> U8:
    """One to four straight white lines, antialiased by drawing at 4x and box-downsampling."""
    scale = 4
    canvas = Image.new("L", (IMAGE_SIZE * scale, IMAGE_SIZE * scale))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 5))):
        ends = rng.uniform(0, IMAGE_SIZE * scale, size=4).tolist()
        draw.line(ends, fill=int(rng.integers(160, 256)), width=int(rng.integers(4, 13)))
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small.filter(ImageFilter.GaussianBlur(0.6)))


NOISE_MAKERS: dict[str, Callable[[Rng], U8]] = {
    "uniform": uniform_noise,
    "blobs": gaussian_blobs,
    "lines": random_lines,
}


def make_noise(seed: int, index: int) -> U8:
    """Noise image `index`: the three NOISE_KINDS in turn."""
    return NOISE_MAKERS[NOISE_KINDS[index % len(NOISE_KINDS)]](image_rng(seed, "noise", index))


# --- anomaly: brick tiles with scratches, spots and cracks ------------------

TILE = 64
TILE_CROP = 128
"""Every tile is a 128 px brick crop halved, so all normal tiles share one scale."""
SUPERSAMPLE = 4
ALPHA_FLOOR = 0.2
"""Defect coverage below this is dropped, so blur tails never change unmasked pixels."""
MIN_DEFECT_PIXELS = 12
SURFACE_RANGE = (40, 215)
"""Normal tiles stay inside this range, so a defect of amplitude >= 70 always shows."""


def make_tile(seed: int, set_name: str, index: int) -> U8:
    """A defect-free 64x64 tile: a brick crop, optionally mirrored, on a shared grey scale."""
    rng = image_rng(seed, set_name, index)
    brick = load_texture("brick")
    crop = random_crop(brick, TILE_CROP, rng)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    small = np.asarray(Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.BOX), float)
    lo, hi = float(brick.min()), float(brick.max())  # whole-image scale: tiles stay comparable
    low, high = SURFACE_RANGE
    return np.rint((small - lo) / (hi - lo) * (high - low) + low).astype(np.uint8)


def _points(rng: Rng, count: int, margin: float) -> list[tuple[float, float]]:
    """Random points inside the supersampled canvas, at least `margin` from its border."""
    size = TILE * SUPERSAMPLE
    xy = rng.uniform(margin, size - margin, size=(count, 2))
    return [(float(x), float(y)) for x, y in xy]


def _step(point: tuple[float, float], heading: float, length: float) -> tuple[float, float]:
    """The point `length` away from `point` in direction `heading` (radians)."""
    return (float(point[0] + length * np.cos(heading)), float(point[1] + length * np.sin(heading)))


def draw_scratch(draw: ImageDraw.ImageDraw, rng: Rng) -> None:
    """A thin gently bending polyline crossing a good part of the tile."""
    points, angle = _points(rng, 1, 64), rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.normal(0, 0.25)
        points.append(_step(points[-1], angle, rng.uniform(20, 60)))
    draw.line(points, fill=255, width=int(rng.integers(4, 8)))  # 1-2 px once downsampled


def draw_spot(draw: ImageDraw.ImageDraw, rng: Rng) -> None:
    """One to three small elliptical blobs."""
    for x, y in _points(rng, int(rng.integers(1, 4)), 32):
        rx, ry = rng.uniform(8, 24, size=2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)


def draw_crack(draw: ImageDraw.ImageDraw, rng: Rng) -> None:
    """A jagged random walk with up to two side branches."""
    walk = _points(rng, 1, 80)
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(10, 20))):
        heading += rng.normal(0, 0.6)
        walk.append(_step(walk[-1], heading, rng.uniform(6, 14)))
    draw.line(walk, fill=255, width=4, joint="curve")
    for _ in range(int(rng.integers(0, 3))):
        base = walk[int(rng.integers(1, len(walk)))]
        turn = heading + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
        draw.line([base, _step(base, turn, rng.uniform(15, 35))], fill=255, width=4)


DEFECT_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, Rng], None]] = {
    "scratch": draw_scratch,
    "spot": draw_spot,
    "crack": draw_crack,
}
DEFECT_AMPLITUDE = {"scratch": (70, 130), "spot": (70, 120), "crack": (100, 150)}
"""Brightness change at full coverage; cracks are always dark, the others either way."""


def defect_alpha(kind: str, rng: Rng) -> F32:
    """Coverage 0..1 of the defect: drawn at 4x, box-downsampled, blurred, tails cut.

    A defect that leaves the tile almost entirely is redrawn (from the same
    stream, so still deterministic): a 3-pixel "defect" is not a fair test item.
    """
    for _ in range(20):
        canvas = Image.new("L", (TILE * SUPERSAMPLE, TILE * SUPERSAMPLE))
        DEFECT_DRAWERS[kind](ImageDraw.Draw(canvas), rng)
        small = canvas.resize((TILE, TILE), Image.Resampling.BOX)
        alpha = np.asarray(small.filter(ImageFilter.GaussianBlur(0.5)), np.float32) / 255.0
        alpha[alpha < ALPHA_FLOOR] = 0.0
        if np.count_nonzero(alpha) >= MIN_DEFECT_PIXELS:
            return alpha
    raise RuntimeError(f"could not draw a {kind} of {MIN_DEFECT_PIXELS}+ pixels")


@dataclass(frozen=True)
class DefectSample:
    """A defective tile with its clean original and the mask of exactly the changed pixels."""

    kind: str
    clean: U8
    image: U8
    mask: U8  # 0 or 255


def make_defect(seed: int, index: int) -> DefectSample:
    """Tile `index` of test/defect: a fresh clean tile plus one defect (kinds in turn).

    The defect adds amplitude x coverage to the surface; with coverage >= 0.2,
    amplitude >= 70 and the surface inside SURFACE_RANGE, every covered pixel
    changes by >= 14 grey levels and no other pixel changes, so the mask is exact.
    """
    kind = DEFECT_KINDS[index % len(DEFECT_KINDS)]
    clean = make_tile(seed, "test_defect", index)
    rng = image_rng(seed, "defect", index)  # its own stream: the clean tile is unaffected
    alpha = defect_alpha(kind, rng)
    amplitude = rng.uniform(*DEFECT_AMPLITUDE[kind])
    if kind == "crack" or rng.random() < 0.5:
        amplitude = -amplitude
    image = np.clip(np.rint(clean + amplitude * alpha), 0, 255).astype(np.uint8)
    return DefectSample(kind, clean, image, np.where(alpha > 0, 255, 0).astype(np.uint8))


# --- writing ---------------------------------------------------------------

SOURCES = {
    "letters": (
        "Capital letters and symbols that do not resemble digits ({chars}), drawn with\n"
        "Pillow's built-in fonts (ImageFont.load_default_imagefont() and, where FreeType\n"
        "is available, the scalable ImageFont.load_default(size=28..48)). Each glyph is\n"
        "rotated +-15 deg, fitted to a 32x32 box (height 24..32, shifted +-2 px), thinned\n"
        "to its skeleton and re-dilated to a 3 or 5 px pen stroke, then counted in 4x4\n"
        "blocks and upsampled to 28x28 exactly like the scikit-learn digits the classifier\n"
        "was trained on (deploy/models/digits_data.py).\n"
    ),
    "textures": (
        "Random square crops (28..160 px) of scikit-image's bundled sample images,\n"
        "skimage.data: {textures}, taken in turn\n"
        "(licences in each function's docstring: CC0, public domain or no known copyright\n"
        "restrictions; text and page show printed text), box-resized to 28x28 and\n"
        "contrast-stretched (1st..99th percentile -> 0..255).\n"
    ),
    "noise": (
        "Synthetic 28x28 noise, three kinds in turn: uniform noise on a 7/14/28 px grid\n"
        "(bilinear upsampled), sums of 1-4 Gaussian blobs, and 1-4 antialiased white lines.\n"
    ),
    "anomaly": (
        "Synthetic industrial anomaly set, MVTec-AD layout, 64x64 greyscale.\n"
        "Product 'tiles': 128 px crops of scikit-image's brick texture (skimage.data.brick(),\n"
        "CC0, from cc0textures.com), randomly mirrored, box-resized to 64x64 and mapped to\n"
        "grey levels 40..215 with one scale for the whole texture.\n"
        "tiles/train/good, tiles/test/good: defect-free tiles.\n"
        "tiles/test/defect/<i>_<kind>.png: a fresh tile with a scratch (thin bright or\n"
        "dark polyline), spot (1-3 small blobs) or crack (dark jagged random walk with\n"
        "branches), drawn at 4x, downsampled, blurred (sigma 0.5), coverage below 0.2 cut.\n"
        "tiles/ground_truth/defect/<i>_<kind>_mask.png: uint8 0/255, 255 exactly where the\n"
        "defect changed the tile.\n"
    ),
}


def sources_text(name: str, arguments: str) -> str:
    """SOURCES.txt for one set: how it was made and the command that makes it again."""
    body = SOURCES[name].format(chars=CHARACTERS, textures=", ".join(TEXTURE_SOURCES))
    return f"{body}Rebuild: python deploy/models/make_ood_data.py {arguments}\n"


OOD_MAKERS: dict[str, Callable[[int, int], U8]] = {
    "letters": make_letter,
    "textures": make_texture,
    "noise": make_noise,
}


def write_ood_set(out: Path, name: str, seed: int, count: int) -> int:
    """<out>/<name>/ood/<index>.png plus SOURCES.txt; returns the image count."""
    for index in range(count):
        save_png(OOD_MAKERS[name](seed, index), out / name / "ood" / f"{index:04d}.png")
    (out / name / "SOURCES.txt").write_text(sources_text(name, f"--seed {seed} --per-set {count}"))
    return count


def anomaly_files(seed: int, counts: AnomalyCounts) -> Iterator[tuple[str, U8]]:
    """(relative path, image) for every file of the anomaly set, masks included."""
    for split, set_name, count in (
        ("train/good", "train", counts.train_good),
        ("test/good", "test_good", counts.test_good),
    ):
        for index in range(count):
            yield f"{split}/{index:04d}.png", make_tile(seed, set_name, index)
    for index in range(counts.test_defect):
        sample = make_defect(seed, index)
        stem = f"{index:04d}_{sample.kind}"
        yield f"test/defect/{stem}.png", sample.image
        yield f"ground_truth/defect/{stem}_mask.png", sample.mask


def write_anomaly_set(out: Path, seed: int, counts: AnomalyCounts) -> int:
    """<out>/anomaly/tiles/... plus SOURCES.txt; returns the file count (masks included)."""
    written = 0
    for relative, image in anomaly_files(seed, counts):
        save_png(image, out / ANOMALY / PRODUCT / relative)
        written += 1
    arguments = (
        f"--seed {seed} --anomaly {counts.train_good} {counts.test_good} {counts.test_defect}"
    )
    (out / ANOMALY / "SOURCES.txt").write_text(sources_text(ANOMALY, arguments))
    return written


def generate(
    out: Path, seed: int = 0, per_set: int = 200, anomaly: AnomalyCounts | None = None
) -> dict[str, int]:
    """Rebuild every set under `out` (only the folders this script owns are replaced)."""
    for name in (*OOD_SETS, ANOMALY):
        shutil.rmtree(out / name, ignore_errors=True)
    written = {name: write_ood_set(out, name, seed, per_set) for name in OOD_SETS}
    written[ANOMALY] = write_anomaly_set(out, seed, anomaly or AnomalyCounts())
    return written


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-set", type=int, default=200, help="images per OOD set")
    parser.add_argument(
        "--anomaly",
        type=int,
        nargs=3,
        metavar=("TRAIN_GOOD", "TEST_GOOD", "TEST_DEFECT"),
        default=(60, 20, 40),
        help="anomaly tiles per split",
    )
    args = parser.parse_args()
    written = generate(args.out, args.seed, args.per_set, AnomalyCounts(*args.anomaly))
    for name, count in written.items():
        print(f"wrote {count} files under {args.out / name}")


if __name__ == "__main__":
    main()
