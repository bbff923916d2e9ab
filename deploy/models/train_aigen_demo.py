"""Build the AI-generated-image demo: two tiny generators, a detector and sample sets.

Over 500 lines: one offline pipeline (data, generators, detector, export), read in order.

assay's AI-generated image detection needs a detector it can serve, and labelled
real/generated images to fit and evaluate it on, without downloading anything.
This script makes all of them from the colour photos that ship inside
scikit-image and scikit-learn:

- Real patches: 96x96 RGB cuts of each photo at scales 1, 0.75 and 0.5.  A scale
  shrinks the *whole* photo (``cv2.INTER_AREA``); the patch itself is then cut
  without resampling, so its pixels are what a camera-plus-downscaler made.
- Two generators, fully convolutional autoencoders (96 -> 24 -> 96) trained here
  on real patches: ``gen_a`` up-samples with ``ConvTranspose2d`` (stride 2, the
  checkerboard-prone DCGAN decoder), ``gen_b`` with bilinear ``Upsample`` +
  ``Conv2d``.  A fake is the reconstruction of a real patch, so every fake has a
  content-matched real twin and a detector cannot win on content (the argument
  of DRCT and SFLD).
- The detector ``aigen_demo``: a small CNN on native-resolution 64x64 crops,
  trained on real vs ``gen_a`` only, with CNNDetection-style blur/JPEG
  augmentation.  ``gen_b`` is held out to show how such detectors generalise
  to an up-sampler they have not seen.

Disjoint regions: each photo is split down the middle of its width.  One half
(the left on even-numbered photos, the right on odd) is the *training* region,
used to train both generators and the detector.  The other half is split at
mid-height into the *fit* and *eval* regions (which is on top alternates every
second photo).  A region is mapped to each scale inwards (``ceil``/``floor``),
and ``INTER_AREA`` averages only the source pixels under each output pixel, so
no committed sample shares a source pixel with training data or with the other
sample set.

Everything is seeded and deterministic on a fixed thread count: two runs write
byte-identical PNGs and an ONNX model with identical outputs.  It is one file,
longer than most here, so that ``make models`` rebuilds the demo with one step.

Run from the repository root:  python deploy/models/train_aigen_demo.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
import yaml
from numpy.typing import NDArray
from PIL import Image
from sklearn.datasets import load_sample_images
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assay_manifest import build_manifest, check_normalization, normalization, write_manifest
from onnx_utils import export_onnx, file_size_mb, ort_session, run_ort, verify_against_torch
from triton_config import describe_check, write_onnx_config

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "aigen_demo"
PATCH = 96
CROP = 64
SCALES = (1.0, 0.75, 0.5)
SAMPLE_STRIDE = 64
"""Grid step of the fit/eval candidate patches (some overlap within a set)."""
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
"""skimage.data colour photos that ship inside the wheel (no pooch download)."""
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
PIXEL_OFFSET, PIXEL_DIVISOR = 127.5, 127.5
"""The model sees (x - 127.5) / 127.5, i.e. x/255 then (x - 0.5) / 0.5."""
EVAL_CROPS = ((0, 0), (0, 32), (32, 0), (32, 32))
"""assay's crop grid for a 96x96 image: stride 64, plus one crop aligned to the far edge."""
TOP_K = 3
AIGEN_POLICY = {"policy": "crops", "max_crops": 16, "aggregation": "top_k_mean", "top_k": TOP_K}
SAMPLE_GROUPS = {"fit": ("gen_a",), "eval": ("gen_a", "gen_b")}

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Patch:
    """A 96x96 RGB patch cut from a photo shrunk by ``scale``, at ``(top, left)`` in it."""

    photo: str
    scale: float
    top: int
    left: int
    pixels: U8

    @property
    def stem(self) -> str:
        """File name without suffix: photo, scale in percent, position."""
        return f"{self.photo}_s{round(self.scale * 100):03d}_y{self.top:03d}_x{self.left:03d}"


@dataclass(frozen=True)
class Region:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of a source photo."""

    y0: int
    y1: int
    x0: int
    x1: int


# --------------------------------------------------------------------------- data


def load_photos() -> dict[str, U8]:
    """The colour photos, by name, in a fixed order."""
    photos = {name: np.ascontiguousarray(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS}
    left_view = skimage.data.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
    photos["motorcycle"] = np.ascontiguousarray(left_view)
    bundle = load_sample_images()
    for filename, image in zip(bundle.filenames, bundle.images, strict=True):
        name = Path(filename).name
        if name in SKLEARN_PHOTOS:
            photos[Path(name).stem] = np.ascontiguousarray(image)
    for name, image in photos.items():
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise RuntimeError(f"photo {name}: expected HxWx3 uint8, got {image.shape}")
    return photos


def split_regions(index: int, height: int, width: int) -> dict[str, Region]:
    """Training half, and the fit/eval quarters of the other half (see the module docstring)."""
    mid_x, mid_y = width // 2, height // 2
    left, right = (0, mid_x), (mid_x, width)
    train_cols, other_cols = (left, right) if index % 2 == 0 else (right, left)
    top, bottom = (0, mid_y), (mid_y, height)
    fit_rows, eval_rows = (top, bottom) if (index // 2) % 2 == 0 else (bottom, top)
    return {
        "train": Region(0, height, *train_cols),
        "fit": Region(*fit_rows, *other_cols),
        "eval": Region(*eval_rows, *other_cols),
    }


def scaled(photo: U8, scale: float) -> U8:
    """The whole photo shrunk by ``scale`` with area averaging (or itself at scale 1)."""
    if scale == 1.0:
        return photo
    height, width = photo.shape[:2]
    size = (round(width * scale), round(height * scale))
    return np.ascontiguousarray(cv2.resize(photo, size, interpolation=cv2.INTER_AREA))


def scaled_region(region: Region, source: tuple[int, int], target: tuple[int, int]) -> Region:
    """Output pixels of the shrunk photo whose source footprint lies inside ``region``."""
    (h, w), (th, tw) = source, target
    return Region(
        -(-region.y0 * th // h), region.y1 * th // h, -(-region.x0 * tw // w), region.x1 * tw // w
    )


def region_views(photos: dict[str, U8], split: str) -> Iterator[tuple[str, float, U8, Region]]:
    """(photo, scale, shrunk photo, region in it) for every region that holds a patch."""
    for index, (name, photo) in enumerate(photos.items()):
        region = split_regions(index, *photo.shape[:2])[split]
        for scale in SCALES:
            image = scaled(photo, scale)
            r = scaled_region(region, photo.shape[:2], image.shape[:2])
            if r.y1 - r.y0 >= PATCH and r.x1 - r.x0 >= PATCH:
                yield name, scale, image, r


def cut(name: str, scale: float, image: U8, top: int, left: int) -> Patch:
    """Cut one patch, no resampling."""
    pixels = np.ascontiguousarray(image[top : top + PATCH, left : left + PATCH])
    return Patch(name, scale, top, left, pixels)


def training_patches(photos: dict[str, U8], count: int, rng: np.random.Generator) -> list[Patch]:
    """``count`` patches at random positions of the training regions, photos in turn."""
    views: dict[str, list[tuple[float, U8, Region]]] = {}
    for name, scale, image, r in region_views(photos, "train"):
        views.setdefault(name, []).append((scale, image, r))
    names = list(views)
    patches = []
    for i in range(count):
        name = names[i % len(names)]
        scale, image, r = views[name][int(rng.integers(len(views[name])))]
        top = int(rng.integers(r.y0, r.y1 - PATCH + 1))
        left = int(rng.integers(r.x0, r.x1 - PATCH + 1))
        patches.append(cut(name, scale, image, top, left))
    return patches


def sample_patches(
    photos: dict[str, U8], split: str, count: int, stride: int, rng: np.random.Generator
) -> list[Patch]:
    """``count`` patches from a stride grid over the ``split`` regions, photos in turn."""
    candidates: dict[str, list[Patch]] = {}
    for name, scale, image, r in region_views(photos, split):
        for top in range(r.y0, r.y1 - PATCH + 1, stride):
            for left in range(r.x0, r.x1 - PATCH + 1, stride):
                candidates.setdefault(name, []).append(cut(name, scale, image, top, left))
    queues = [[c[i] for i in rng.permutation(len(c))] for c in candidates.values()]
    picked: list[Patch] = []
    while len(picked) < count:
        if not any(queues):
            raise RuntimeError(f"only {len(picked)} {split} patches available, need {count}")
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return sorted(picked, key=lambda p: p.stem)


def to_tensor(pixels: U8) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1], the detector's input normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
    return (x - PIXEL_OFFSET) / PIXEL_DIVISOR


def to_uint8(x: torch.Tensor) -> U8:
    """float32 NCHW in [-1, 1] -> uint8 NHWC, clipped and rounded."""
    pixels = (x * PIXEL_DIVISOR + PIXEL_OFFSET).clamp(0, 255).round()
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).numpy()


# --------------------------------------------------------------------------- generators


def _encoder(width: int) -> nn.Sequential:
    """96 -> 48 -> 24 with ``width`` channels at the bottleneck."""
    return nn.Sequential(
        nn.Conv2d(3, width // 2, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width // 2, width, 4, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def make_generator(kind: str, width: int) -> nn.Sequential:
    """``gen_a``: ConvTranspose2d decoder; ``gen_b``: bilinear Upsample + Conv2d decoder."""
    if kind == "gen_a":
        decoder = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width // 2, 3, 4, stride=2, padding=1),
        )
    elif kind == "gen_b":
        decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width // 2, 3, 3, padding=1),
        )
    else:
        raise ValueError(f"unknown generator {kind!r}")
    return nn.Sequential(_encoder(width), decoder)


def random_crops(
    x: torch.Tensor, size: int, gen: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """One random ``size`` crop of each image, mirrored left-right half the time."""
    n, _, h, w = x.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    flips = torch.rand(n, generator=gen).tolist()
    out = []
    for i in range(n):
        crop = x[i, :, tops[i] : tops[i] + size, lefts[i] : lefts[i] + size]
        out.append(crop.flip(-1) if flip and flips[i] < 0.5 else crop)
    return torch.stack(out)


def train_generator(model: nn.Module, x: torch.Tensor, steps: int, batch: int, seed: int) -> float:
    """L1 reconstruction on random 64x64 crops (the net is fully convolutional); final loss."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        crops = random_crops(x[idx], CROP, gen)
        loss = F.l1_loss(model(crops), crops)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss.item())


def reconstruct(model: nn.Module, patches: Sequence[Patch], batch: int = 64) -> U8:
    """The generator's uint8 reconstruction of each whole 96x96 patch."""
    pixels = np.stack([p.pixels for p in patches])
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            out.append(to_uint8(model(to_tensor(pixels[i : i + batch]))))
    return np.concatenate(out)


# --------------------------------------------------------------------------- detector


class AigenDetector(nn.Module):
    """Full-resolution first layer, three stride-2 stages, global average pool, one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            self._conv(3, 16, 1),  # 64
            self._conv(16, 32, 2),  # 32
            self._conv(32, 64, 2),  # 16
            self._conv(64, 64, 1),
            self._conv(64, 128, 2),  # 8
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(128, 1)

    @staticmethod
    def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the logit of "generated", shape [N, 1]."""
        return self.head(torch.flatten(self.features(image), 1))


class _AsTuple(nn.Module):
    """The detector's output as a one-element tuple, the form onnx_utils compares."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(x),)


def degrade(image: U8, rng: np.random.Generator, blur_p: float, jpeg_p: float) -> U8:
    """CNNDetection augmentation: Gaussian blur (sigma 0-1.5) and JPEG (q 65-100), each rarely."""
    if rng.random() < blur_p:
        sigma = float(rng.uniform(0.0, 1.5))
        if sigma > 0.1:  # below that a 3-tap kernel is the identity in uint8
            image = np.asarray(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma), dtype=np.uint8)
    if rng.random() < jpeg_p:
        quality = int(rng.integers(65, 101))
        ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is None:
            raise RuntimeError("JPEG round trip failed")
        image = np.ascontiguousarray(decoded[:, :, ::-1], dtype=np.uint8)
    return image


def train_detector(
    model: AigenDetector, images: U8, labels: NDArray[np.float32], args: argparse.Namespace
) -> None:
    """AdamW + one-cycle on augmented random 64x64 crops of the 96x96 training images."""
    gen = torch.Generator().manual_seed(args.seed + 3)
    rng = np.random.default_rng([args.seed, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.detector_steps
    )
    y = torch.from_numpy(labels)[:, None]
    model.train()
    running = 0.0
    for step in range(args.detector_steps):
        idx = torch.randint(0, len(images), (args.batch_size,), generator=gen)
        batch = np.stack([degrade(images[i], rng, 0.1, 0.1) for i in idx.tolist()])
        logits = model(random_crops(to_tensor(batch), CROP, gen))
        loss = F.binary_cross_entropy_with_logits(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
        running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0:
            print(f"detector step {step + 1}/{args.detector_steps}  loss {running:.4f}")
    model.eval()


def image_scores(onnx_path: Path, images: U8) -> tuple[F32, F32]:
    """ONNX Runtime per-crop logits over EVAL_CROPS and the top-k-mean image probability."""
    crops = np.stack([im[t : t + CROP, s : s + CROP] for im in images for t, s in EVAL_CROPS])
    logits = run_ort(ort_session(onnx_path), to_tensor(crops).numpy())["logit"]
    probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).reshape(len(images), -1)
    top = np.sort(probs, axis=1)[:, -TOP_K:]
    return logits.astype(np.float32), top.mean(axis=1).astype(np.float32)


def detection_metrics(scores: dict[str, F32]) -> dict[str, Any]:
    """AP and AUROC of real vs each generator, and accuracy at 0.5 per group."""
    real = scores["real"]
    out: dict[str, Any] = {}
    for group in ("gen_a", "gen_b"):
        y = np.r_[np.zeros(len(real)), np.ones(len(scores[group]))]
        s = np.r_[real, scores[group]]
        out[f"real_vs_{group}"] = {
            "average_precision": round(float(average_precision_score(y, s)), 4),
            "auroc": round(float(roc_auc_score(y, s)), 4),
        }
    out["accuracy_at_0.5"] = {
        group: round(float(np.mean((s >= 0.5) == (group != "real"))), 4)
        for group, s in scores.items()
    }
    out["n"] = {group: len(s) for group, s in scores.items()}
    return out


# --------------------------------------------------------------------------- outputs


def write_sample_set(
    root: Path, split: str, real: Sequence[Patch], fakes: dict[str, U8]
) -> list[Path]:
    """PNGs under <root>/<split>/<group>/ and the manifest <root>/<split>.jsonl."""
    folder = root / split
    if folder.exists():
        shutil.rmtree(folder)
    groups = {"real": np.stack([p.pixels for p in real]), **fakes}
    lines, written = [], []
    for group, images in groups.items():
        (folder / group).mkdir(parents=True)
        label = "real" if group == "real" else "generated"
        for patch, pixels in zip(real, images, strict=True):
            rel = f"{split}/{group}/{patch.stem}.png"
            Image.fromarray(pixels).save(root / rel, optimize=True)
            lines.append(json.dumps({"path": rel, "label": label, "group": group}))
            written.append(root / rel)
    (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def write_model_dir(model_dir: Path, description: str) -> None:
    """Write config.pbtxt and assay.yaml next to the exported 1/model.onnx."""
    config = write_onnx_config(
        model_dir,
        MODEL_NAME,
        max_batch_size=64,
        preferred_batch_sizes=[16, 32, 64],
        max_queue_delay_us=500,
        instance_count=1,
        instance_kind="KIND_GPU",
    )
    print(describe_check(config))
    scale, mean, std = normalization(PIXEL_OFFSET, PIXEL_DIVISOR)
    error = check_normalization(scale, [mean], [std], PIXEL_OFFSET, PIXEL_DIVISOR)
    if error > 1e-6:
        raise RuntimeError(f"manifest normalisation is off by {error}")
    manifest = build_manifest(
        name=MODEL_NAME,
        version="1",
        task="aigen_detector",
        description=description,
        input_spec={
            "name": "image",
            "height": CROP,
            "width": CROP,
            "color": "rgb",
            "resize": "stretch",
            "scale": scale,
            "mean": [mean],
            "std": [std],
            "layout": "nchw",
            "dtype": "float32",
        },
        outputs={"logits": "logit"},
        labels_file=None,
        aigen=AIGEN_POLICY,
    )
    path = write_manifest(model_dir / "assay.yaml", manifest)
    from assay.server.models.config import ModelConfig

    ModelConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce the committed files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-repo",
        type=Path,
        default=REPO_ROOT / "deploy/triton/model_repository",
        help="Triton model repository; writes <repo>/aigen_demo/",
    )
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "deploy/samples/aigen")
    parser.add_argument(
        "--metrics", type=Path, default=REPO_ROOT / f"deploy/models/{MODEL_NAME}.metrics.json"
    )
    parser.add_argument("--train-patches", type=int, default=1024)
    parser.add_argument("--per-group", type=int, default=60, help="images per sample group")
    parser.add_argument("--generator-width", type=int, default=32)
    parser.add_argument("--generator-steps", type=int, default=1000)
    parser.add_argument("--detector-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--min-ap", type=float, default=0.95, help="fail below this eval AP on gen_a"
    )
    return parser.parse_args()


def make_deterministic(seed: int, threads: int) -> None:
    """Seed every RNG and make torch pick deterministic kernels on a fixed thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def build_generators(x_train: torch.Tensor, args: argparse.Namespace) -> dict[str, nn.Module]:
    """Train gen_a and gen_b on the training patches, each from its own seed."""
    generators: dict[str, nn.Module] = {}
    for k, kind in enumerate(("gen_a", "gen_b")):
        seed = args.seed + 10 + k
        torch.manual_seed(seed)
        generators[kind] = make_generator(kind, args.generator_width)
        t0 = time.perf_counter()
        loss = train_generator(generators[kind], x_train, args.generator_steps, 16, seed)
        print(
            f"{kind}: L1 {loss:.4f} after {args.generator_steps} steps "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return generators


def write_samples_and_score(
    root: Path, sets: dict[str, list[Patch]], generators: dict[str, nn.Module], onnx_path: Path
) -> tuple[list[Path], dict[str, F32], str]:
    """Write both sample sets; score the eval set (image scores and a digest of the logits)."""
    written: list[Path] = []
    scores: dict[str, F32] = {}
    digest = ""
    for split, groups in SAMPLE_GROUPS.items():
        fakes = {g: reconstruct(generators[g], sets[split]) for g in groups}
        written += write_sample_set(root, split, sets[split], fakes)
        if split == "eval":
            real = np.stack([p.pixels for p in sets[split]])
            logits = []
            for group, images in {"real": real, **fakes}.items():
                group_logits, scores[group] = image_scores(onnx_path, images)
                logits.append(group_logits)
            digest = hashlib.sha256(np.concatenate(logits).tobytes()).hexdigest()
    return written, scores, digest


def describe(metrics: dict[str, Any]) -> str:
    """The manifest's one-line description, with the measured eval figures."""
    a, b = metrics["real_vs_gen_a"], metrics["real_vs_gen_b"]
    return (
        "Demo AI-generated image detector: small CNN on native 64x64 RGB crops, trained on "
        "real photo patches vs reconstructions by a transposed-conv autoencoder (gen_a); "
        f"eval AP {a['average_precision']:.3f} on gen_a, {b['average_precision']:.3f} on "
        "the unseen bilinear-upsampling gen_b."
    )


def main() -> int:
    """Build data, train, export, verify and write everything; returns the exit status."""
    args = parse_args()
    started = time.perf_counter()
    make_deterministic(args.seed, args.threads)
    photos = load_photos()
    train = training_patches(photos, args.train_patches, np.random.default_rng([args.seed, 0]))
    sets = {
        split: sample_patches(
            photos, split, args.per_group, SAMPLE_STRIDE, np.random.default_rng([args.seed, k])
        )
        for k, split in enumerate(SAMPLE_GROUPS, start=1)
    }
    print(f"photos: {', '.join(photos)}; {len(train)} training patches")

    real = np.stack([p.pixels for p in train])
    generators = build_generators(to_tensor(real), args)
    images = np.concatenate([real, reconstruct(generators["gen_a"], train)])
    labels = np.r_[np.zeros(len(train)), np.ones(len(train))].astype(np.float32)
    torch.manual_seed(args.seed + 20)
    model = AigenDetector()
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    train_detector(model, images, labels, args)
    print(f"detector: {n_params} parameters, trained in {time.perf_counter() - t0:.0f} s")

    model_dir = args.model_repo / MODEL_NAME
    example = to_tensor(images[:2, :CROP, :CROP])
    onnx_path = export_onnx(model, example, model_dir / "1/model.onnx", "image", ("logit",))
    check = to_tensor(images[:: len(images) // 128, :CROP, :CROP]).numpy()
    _, diffs = verify_against_torch(onnx_path, _AsTuple(model), check, atol=1e-4)
    print(f"ORT vs torch max abs diff: logit {diffs['logit']:.2e}")

    written, scores, digest = write_samples_and_score(args.samples, sets, generators, onnx_path)
    metrics: dict[str, Any] = {
        **detection_metrics(scores),
        "image_score": f"mean of the top {TOP_K} crop probabilities over crops {EVAL_CROPS}",
        "n_params": n_params,
        "n_train_patches": len(train),
        "generator_steps": args.generator_steps,
        "detector_steps": args.detector_steps,
        "seed": args.seed,
    }
    write_model_dir(model_dir, describe(metrics))
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    size_mb = sum(p.stat().st_size for p in written) / 1e6
    print(f"wrote {onnx_path} ({file_size_mb(onnx_path):.3f} MB)")
    print(f"wrote {len(written)} PNGs ({size_mb:.2f} MB) under {args.samples}")
    print(f"sha256 of the eval-set logits (onnxruntime): {digest}")
    print(json.dumps(metrics, indent=2))
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    ap = metrics["real_vs_gen_a"]["average_precision"]
    if ap < args.min_ap:
        print(f"error: eval AP on gen_a {ap:.4f} below {args.min_ap}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
