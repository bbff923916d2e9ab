"""Train and export ``digits_cnn``, the small demo classifier shipped with assay.

assay needs a model it can serve and evaluate without downloading anything, and
whose files are small enough to commit.  This script trains a tiny CNN on the
handwritten digits bundled with scikit-learn (upsampled to 28x28 greyscale),
exports it to ONNX with three outputs (``logits``, pooled ``features`` and the
last conv block's ``feature_map``), checks ONNX Runtime against PyTorch, and
writes the Triton model directory, the assay manifest, test-split sample PNGs
and a metrics file.  Training is seeded and deterministic: two runs give the
same weights and the same test accuracy.

Run from the repository root:  python deploy/models/train_demo.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assay_manifest import TOP_KEY_ORDER, _ordered, build_manifest, write_labels, write_manifest
from digits_data import IMAGE_SIZE, DigitsData, load_data
from onnx_utils import export_onnx, file_size_mb, verify_against_torch
from triton_config import describe_check, write_onnx_config

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "digits_cnn"
OUTPUT_NAMES = ("logits", "features", "feature_map")
MEAN, STD = 0.5, 0.5
TORCHSCRIPT = "model.torchscript.pt"


class DigitsCNN(nn.Module):
    """conv16 -> conv32 -> pool -> conv64 -> pool (7x7) -> global avg pool (64) -> linear 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.block1 = self._conv(1, 16)
        self.block2 = nn.Sequential(self._conv(16, 32), nn.MaxPool2d(2))  # 28 -> 14
        self.block3 = nn.Sequential(self._conv(32, 64), nn.MaxPool2d(2))  # 14 -> 7
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    @staticmethod
    def _conv(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (logits [N,10], features [N,64], feature_map [N,64,7,7])."""
        feature_map = self.block3(self.block2(self.block1(image)))
        features = torch.flatten(self.pool(feature_map), 1)
        return self.classifier(features), features, feature_map


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce the committed model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-repo",
        type=Path,
        default=REPO_ROOT / "deploy/triton/model_repository",
        help="Triton model repository; writes <repo>/digits_cnn/",
    )
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "deploy/samples/digits")
    parser.add_argument(
        "--metrics", type=Path, default=REPO_ROOT / f"deploy/models/{MODEL_NAME}.metrics.json"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--min-accuracy", type=float, default=0.97, help="fail below this test accuracy"
    )
    return parser.parse_args()


def make_deterministic(seed: int, threads: int) -> None:
    """Seed every RNG and make torch pick deterministic kernels on a fixed thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28], exactly what the server feeds the model."""
    x = images.astype(np.float32)[:, None] / 255.0
    return ((x - MEAN) / STD).astype(np.float32)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with background (-1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=(0.0 - MEAN) / STD)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def train(model: DigitsCNN, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
    """AdamW with a one-cycle schedule, on randomly shifted copies of the training images."""
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = -(-len(xt) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch
    )
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), args.batch_size):
            batch = order[start : start + args.batch_size]
            logits, _, _ = model(random_shift(xt[batch], 2, gen))
            loss = F.cross_entropy(logits, yt[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1:2d}/{args.epochs}  train loss {total / len(xt):.4f}")


def write_samples(out_dir: Path, data: DigitsData, per_class: int = 2) -> list[Path]:
    """The first ``per_class`` test-split images of each class, named <label>_<index>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):
        stale.unlink()
    written = []
    for label in range(10):
        picks = [i for i in data.test_idx if data.labels[i] == label][:per_class]
        for index in picks:
            path = out_dir / f"{label}_{index:04d}.png"
            Image.fromarray(data.images[index]).save(path)
            written.append(path)
    return written


def write_model_dir(model_dir: Path, accuracy: float) -> None:
    """Write labels.txt, config.pbtxt and assay.yaml next to the exported 1/model.onnx."""
    write_labels(model_dir / "labels.txt", [str(d) for d in range(10)])
    config = write_onnx_config(
        model_dir,
        MODEL_NAME,
        max_batch_size=64,
        label_files={"logits": "labels.txt"},
        preferred_batch_sizes=[16, 32, 64],
        max_queue_delay_us=500,
        instance_count=1,
        instance_kind="KIND_GPU",
    )
    print(describe_check(config))
    manifest = build_manifest(
        name=MODEL_NAME,
        version="1",
        description=(
            "Small CNN trained on scikit-learn's digits (28x28 greyscale); "
            f"test accuracy {accuracy * 100:.2f}%."
        ),
        input_spec={
            "name": "image",
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "color": "gray",
            "resize": "stretch",
            "scale": 1 / 255,
            "mean": [MEAN],
            "std": [STD],
            "layout": "nchw",
            "dtype": "float32",
        },
        outputs={name: name for name in OUTPUT_NAMES},
    )
    manifest = _ordered({**manifest, "torchscript": f"1/{TORCHSCRIPT}"}, TOP_KEY_ORDER)
    write_manifest(model_dir / "assay.yaml", manifest)


class _Logits(nn.Module):
    """The classifier's logits alone: what white-box attacks differentiate."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace the logits to TorchScript: assay's differentiable copy for FGSM/PGD."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13
        traced = torch.jit.trace(_Logits(model).eval(), example)
        torch.jit.save(traced, str(path))


def write_metrics(path: Path, metrics: dict[str, float | int]) -> None:
    """Write the metrics as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    """Train, export, verify and write everything; returns the exit status."""
    args = parse_args()
    started = time.perf_counter()
    make_deterministic(args.seed, args.threads)
    data = load_data()
    x_train, y_train = normalize(data.images[data.train_idx]), data.labels[data.train_idx]
    x_test, y_test = normalize(data.images[data.test_idx]), data.labels[data.test_idx]
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, 28x28")

    model = DigitsCNN()
    train(model, x_train, y_train, args)
    model.eval()

    model_dir = args.model_repo / MODEL_NAME
    onnx_path = export_onnx(
        model, torch.from_numpy(x_test[:2]), model_dir / "1/model.onnx", "image", OUTPUT_NAMES
    )
    ort_out, diffs = verify_against_torch(onnx_path, model, x_test, atol=1e-4)
    print("ORT vs torch max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    n_correct = int(np.sum(ort_out["logits"].argmax(1) == y_test))
    accuracy = n_correct / len(y_test)

    write_torchscript(model, torch.from_numpy(x_test[:2]), model_dir / "1" / TORCHSCRIPT)
    write_model_dir(model_dir, accuracy)
    samples = write_samples(args.samples, data)
    metrics = {
        "test_accuracy": round(accuracy, 6),
        "n_test": len(y_test),
        "n_train": len(y_train),
        "epochs": args.epochs,
        "seed": args.seed,
    }
    write_metrics(args.metrics, metrics)

    print(f"wrote {onnx_path} ({file_size_mb(onnx_path):.3f} MB)")
    print(f"wrote {len(samples)} samples to {args.samples} and metrics to {args.metrics}")
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    print(f"test accuracy (onnxruntime): {accuracy:.2%} ({n_correct}/{len(y_test)})")
    if accuracy < args.min_accuracy:
        print(f"error: test accuracy below {args.min_accuracy:.2%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
