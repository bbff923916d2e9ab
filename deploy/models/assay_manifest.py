"""Write the files assay's model registry reads next to each Triton model.

Each model directory in the repository carries ``labels.txt`` (one class name a
line, in class-index order) and ``assay.yaml`` (how the server must preprocess
images and which outputs hold logits, pooled features and the spatial feature
map).  The YAML is rendered by hand in a fixed key order so that the files stay
easy to read and diff, then parsed back to prove it says what was meant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

INPUT_KEY_ORDER = (
    "name",
    "height",
    "width",
    "color",
    "resize",
    "crop_fraction",
    "interpolation",
    "scale",
    "mean",
    "std",
    "layout",
    "dtype",
)
TOP_KEY_ORDER = (
    "name",
    "version",
    "task",
    "description",
    "path",
    "labels_file",
    "torchscript",
    "input",
    "outputs",
    "aigen",
)
AIGEN_KEY_ORDER = ("policy", "max_crops", "aggregation", "top_k", "generated_index")


def write_labels(path: Path, labels: Sequence[str]) -> Path:
    """Write one label per line; labels must be non-empty single-line strings."""
    for i, label in enumerate(labels):
        if not label.strip() or "\n" in label or label != label.strip():
            raise ValueError(f"label {i} is not a clean single-line name: {label!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    return path


def normalization(
    offset: float, divisor: float, pixel_max: float = 255.0
) -> tuple[float, float, float]:
    """(scale, mean, std) with ``(x * scale - mean) / std == (x - offset) / divisor``."""
    return 1.0 / pixel_max, offset / pixel_max, divisor / pixel_max


def check_normalization(
    scale: float, mean: Sequence[float], std: Sequence[float], offset: float, divisor: float
) -> float:
    """Max error, over pixel values 0..255, between the manifest formula and the intended one."""
    x = [float(v) for v in range(256)]
    worst = 0.0
    for m, s in zip(mean, std, strict=True):
        for v in x:
            worst = max(worst, abs((v * scale - m) / s - (v - offset) / divisor))
    return worst


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"unsupported manifest value {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite manifest value {value!r}")
        return repr(value)
    if isinstance(value, str):
        try:
            plain_ok = (
                yaml.safe_load(value) == value
                and "#" not in value
                and value[:1] not in "'\"&*!|>%@`"
            )
        except yaml.YAMLError:
            plain_ok = False
        return value if plain_ok else json.dumps(value)
    raise TypeError(f"unsupported manifest value {value!r}")


def _entry(key: str, value: Any, indent: str) -> str:
    if isinstance(value, Mapping):
        inner = "".join(_entry(k, v, indent + "  ") for k, v in value.items())
        return f"{indent}{key}:\n{inner}"
    if isinstance(value, list | tuple):
        return f"{indent}{key}: [" + ", ".join(_scalar(v) for v in value) + "]\n"
    if key == "version":  # always a string, "1" not 1
        return f"{indent}{key}: {json.dumps(str(value))}\n"
    return f"{indent}{key}: {_scalar(value)}\n"


def _ordered(mapping: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    unknown = set(mapping) - set(order)
    if unknown:
        raise ValueError(f"unexpected manifest keys: {sorted(unknown)}")
    return {k: mapping[k] for k in order if k in mapping}


def build_manifest(
    *,
    name: str,
    version: str,
    description: str,
    input_spec: Mapping[str, Any],
    outputs: Mapping[str, str],
    task: str = "classifier",
    path: str = "1/model.onnx",
    labels_file: str | None = "labels.txt",
    aigen: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest dict in the registry's key order.

    ``labels_file=None`` leaves it out (e.g. an aigen_detector's single logit);
    ``aigen`` is the scoring policy of a ``task: aigen_detector`` model.
    """
    manifest: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "task": task,
        "description": description,
        "path": path,
        "input": _ordered(input_spec, INPUT_KEY_ORDER),
        "outputs": dict(outputs),
    }
    if labels_file is not None:
        manifest["labels_file"] = labels_file
    if aigen is not None:
        manifest["aigen"] = _ordered(aigen, AIGEN_KEY_ORDER)
    return _ordered(manifest, TOP_KEY_ORDER)


def render_manifest(manifest: Mapping[str, Any]) -> str:
    """Render a manifest as YAML and check that it parses back to the same data."""
    text = "".join(_entry(k, v, "") for k, v in manifest.items())
    parsed = yaml.safe_load(text)
    expected = json.loads(json.dumps(manifest))  # tuples -> lists
    if parsed != expected:
        raise RuntimeError(f"rendered manifest does not round-trip:\n{text}")
    return text


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> Path:
    """Render ``manifest`` (see :func:`render_manifest`) into ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_manifest(manifest), encoding="utf-8")
    return path
