"""Export a CNNDetection ResNet-50 checkpoint into assay's model repository.

CNNDetection (Wang et al., "CNN-generated images are surprisingly easy to spot...
for now", CVPR 2020; github.com/PeterWang512/CNNDetection) is a torchvision
ResNet-50 whose ImageNet head is replaced by ``nn.Linear(2048, 1)``: one logit
of "generated", trained on ProGAN images with blur/JPEG augmentation.  The public
weights (``blur_jpg_prob0.5.pth``, ``blur_jpg_prob0.1.pth``) are saved as
``{"model": state_dict, "optimizer": ..., "total_steps": ...}``.  torchvision is
not importable in assay's environment, so the network is rebuilt here in plain
torch with torchvision's module names (ResNet v1.5: the stride sits on the 3x3
convolution), so the checkpoint loads key for key under a strict check.

The export is ONNX (input ``image`` [N,3,224,224], output ``logit`` [N,1]),
checked against PyTorch with ONNX Runtime before anything is written, plus the
Triton ``config.pbtxt`` and assay's ``assay.yaml`` with ``task: aigen_detector``.
Two choices in that manifest, and why:

* No decision threshold.  The paper's sigmoid > 0.5 is often near chance on
  generators other than ProGAN (the paper reports average precision, which
  ignores the threshold), so the model only reports the raw logit and assay
  calibrates it on labelled data.
* ``aigen.policy: crops``.  The detector keys on up-sampling artifacts that any
  resampling smooths away, so assay scores native-resolution 224x224 crops and
  pools the top 3 of up to 8; the input's ``resize: stretch`` only describes the
  network's input size and the ImageNet normalisation CNNDetection trains with.

The ~94 MB ONNX file is git-ignored (a ``.gitignore`` is written beside it).
The network, the checkpoint checks and the export share this one file (over the
usual ~300 lines) so that the script runs standalone from a checkout.

Run from the repository root:
    python deploy/models/export_cnndetection.py blur_jpg_prob0.5.pth
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPO = REPO_ROOT / "deploy/triton/model_repository"
DEFAULT_NAME = "cnndetection_rn50"
IMAGE_SIZE = 224
INPUT_NAME, OUTPUT_NAME = "image", "logit"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ATOL = 1e-4
AIGEN = {"policy": "crops", "max_crops": 8, "aggregation": "top_k_mean", "top_k": 3}
# torch >= 2.9 deprecates the TorchScript exporter that onnx_utils uses on purpose (dynamo=False).
EXPORTER_DEPRECATIONS = (
    "You are using the legacy TorchScript-based ONNX export",
    "The feature will be removed",
)
SHOWN_KEYS = 5


class CheckpointError(ValueError):
    """The checkpoint is not a CNNDetection ResNet-50 (or cannot be read)."""


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual block with torchvision's names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout with an ``fc`` of ``num_outputs`` logits."""

    def __init__(self, num_outputs: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layer = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            layer += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, [N, num_outputs]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class LogitOutput(nn.Module):
    """Wraps the detector so it returns a one-tuple, as onnx_utils expects."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        """(logit,) with logit [N, 1]."""
        return (self.net(image),)


def _preview(keys: Sequence[str]) -> str:
    shown = ", ".join(sorted(keys)[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a raw state dict or of a ``{"model": state_dict}`` checkpoint."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        found = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected a state dict or {{'model': state_dict, ...}}, found {found}"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: expected a state dict of tensors; not tensors: {_preview(not_tensors)} "
            "(a full training checkpoint keeps the weights under 'model')"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _check_keys(state: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # BatchNorm counters from before torch 0.4.1 may be absent; they do not affect eval.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_preview(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_preview(unexpected)})")
    for k in wrong[:SHOWN_KEYS]:
        problems.append(f"{k} has shape {list(state[k].shape)}, expected {list(expected[k])}")
    hint = ""
    if "fc.weight" in wrong:
        hint = "; CNNDetection's head is Linear(2048, 1) - is this an ImageNet classifier?"
    raise CheckpointError(
        f"{path}: not a CNNDetection ResNet-50 state dict: {'; '.join(problems)}{hint}"
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint: a raw state dict or ``{"model": ...}``, ``module.`` prefixes allowed."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {exc.strerror}") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot load as a weights-only checkpoint: {exc}") from exc
    return _state_dict_of(obj, path)


def load_detector(path: Path) -> ResNet50:
    """The CNNDetection network with the checkpoint's weights, in eval mode."""
    model = ResNet50(num_outputs=1)
    state = load_state_dict(path)
    _check_keys(state, model, path)
    model.load_state_dict(state, strict=False)  # keys checked above
    return model.eval()


def verification_batch(size: int, seed: int = 0) -> np.ndarray:
    """Random 0..255 RGB pixels, normalised like the manifest says: [size,3,224,224]."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, 3, IMAGE_SIZE, IMAGE_SIZE))
    mean = np.asarray(MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(STD).reshape(1, 3, 1, 1)
    return ((pixels / 255.0 - mean) / std).astype(np.float32)


def manifest_input_spec() -> dict[str, Any]:
    """The ``input:`` section of assay.yaml: ImageNet normalisation of x/255, RGB NCHW."""
    return {
        "name": INPUT_NAME,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "color": "rgb",
        "resize": "stretch",
        "interpolation": "bilinear",
        "scale": 1.0 / 255.0,
        "mean": list(MEAN),
        "std": list(STD),
        "layout": "nchw",
        "dtype": "float32",
    }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how closely ONNX Runtime matched PyTorch."""

    model_dir: Path
    onnx_path: Path
    config_path: Path
    manifest_path: Path
    max_abs_diff: float
    onnx_mb: float


def _write_metadata(staging: Path, name: str, version: int, max_batch_size: int) -> None:
    """config.pbtxt and assay.yaml beside ``<version>/model.onnx``; the manifest is validated."""
    import yaml
    from assay_manifest import build_manifest, write_manifest
    from triton_config import write_onnx_config

    from assay.server.models.config import ModelConfig, Task

    write_onnx_config(
        staging, name, max_batch_size=max_batch_size, onnx_relpath=f"{version}/model.onnx"
    )
    manifest = build_manifest(
        name=name,
        version=str(version),
        task="aigen_detector",
        description=(
            "CNNDetection ResNet-50 (Wang et al., CVPR 2020): one logit of 'generated'; "
            "the paper's 0.5 threshold is uncalibrated, assay calibrates the score."
        ),
        path=f"{version}/model.onnx",
        labels_file=None,
        input_spec=manifest_input_spec(),
        outputs={"logits": OUTPUT_NAME},
        aigen=AIGEN,
    )
    text = write_manifest(staging / "assay.yaml", manifest).read_text(encoding="utf-8")
    config = ModelConfig.model_validate(yaml.safe_load(text))
    if config.task is not Task.AIGEN_DETECTOR:
        raise RuntimeError(f"assay.yaml parsed as task {config.task}, not aigen_detector")


def _install(staging: Path, model_dir: Path, version: int) -> None:
    """Move the staged files into ``model_dir``, leaving other versions alone."""
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    for rel in (f"{version}/model.onnx", "config.pbtxt", "assay.yaml"):
        os.replace(staging / rel, model_dir / rel)
    ignore = model_dir / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if f"{version}/model.onnx" not in lines:
        ignore.write_text("\n".join([*lines, f"{version}/model.onnx"]) + "\n", encoding="utf-8")


def export(
    checkpoint: Path,
    model_repo: Path = DEFAULT_REPO,
    name: str = DEFAULT_NAME,
    version: int = 1,
    max_batch_size: int = 32,
    verify_batch: int = 4,
) -> ExportResult:
    """Load, export, verify and write ``<model_repo>/<name>/``; nothing is written on failure."""
    from onnx_utils import export_onnx, file_size_mb, verify_against_torch

    if version < 1:
        raise ValueError(f"version must be a positive integer (a Triton version), got {version}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise ValueError(f"name {name!r} must be a plain folder name (letters, digits, _ . -)")
    model = LogitOutput(load_detector(checkpoint)).eval()
    x = verification_batch(verify_batch)
    model_dir = model_repo / name
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        with warnings.catch_warnings():
            for message in EXPORTER_DEPRECATIONS:
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            onnx_path = export_onnx(
                model,
                torch.from_numpy(x),
                staging / str(version) / "model.onnx",
                INPUT_NAME,
                [OUTPUT_NAME],
            )
        _, diffs = verify_against_torch(onnx_path, model, x, atol=ATOL)
        onnx_mb = file_size_mb(onnx_path)
        _write_metadata(staging, name, version, max_batch_size)
        _install(staging, model_dir, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        model_dir=model_dir,
        onnx_path=model_dir / str(version) / "model.onnx",
        config_path=model_dir / "config.pbtxt",
        manifest_path=model_dir / "assay.yaml",
        max_abs_diff=diffs[OUTPUT_NAME],
        onnx_mb=onnx_mb,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="CNNDetection .pth (e.g. blur_jpg_prob0.5)")
    parser.add_argument(
        "--model-repo", type=Path, default=DEFAULT_REPO, help=f"default {DEFAULT_REPO}"
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="model folder and Triton name")
    parser.add_argument("--version", type=int, default=1, help="Triton version folder (>= 1)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export; returns the exit status (1 with a message on a bad checkpoint)."""
    args = parse_args(argv)
    try:
        result = export(
            args.checkpoint, args.model_repo, args.name, args.version, args.max_batch_size
        )
    except (RuntimeError, ValueError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ORT vs torch max abs diff: {result.max_abs_diff:.2e} (limit {ATOL:g})")
    print(f"wrote {result.onnx_path} ({result.onnx_mb:.1f} MB)")
    print(f"wrote {result.config_path} and {result.manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
