"""Labelled image datasets for evaluations, confined to configured roots.

A dataset is an ImageFolder directory (one sub-folder per class) or a
manifest file: JSONL (`{"path": ..., "label": ..., "group": ...}` per line)
or CSV with a `path,label[,group]` header. Manifest paths are relative to
the manifest's folder. Every path, after resolving symlinks, must lie under
one of the server's dataset roots: anything else is PERMISSION_DENIED and
is never opened.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from assay.server.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    path: Path
    label: str
    group: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Samples in a stable order (sorted by path within each class folder)."""

    source: Path
    samples: tuple[Sample, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """Distinct labels, sorted."""
        return tuple(sorted({s.label for s in self.samples}))

    @property
    def has_groups(self) -> bool:
        """True when every sample carries a group."""
        return bool(self.samples) and all(s.group for s in self.samples)

    def subset(self, limit: int | None, seed: int) -> Dataset:
        """At most `limit` samples, drawn without replacement with `seed`, in original order."""
        if limit is None or limit >= len(self.samples):
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(self.samples), size=limit, replace=False))
        return Dataset(self.source, tuple(self.samples[i] for i in keep))


class DatasetRoots:
    """The folders datasets may come from."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(Path(r).resolve() for r in roots)

    def check(self, path: Path) -> Path:
        """The resolved path if it lies under a root, else PermissionDeniedError."""
        resolved = Path(path).resolve()
        if not any(resolved == root or root in resolved.parents for root in self.roots):
            allowed = ", ".join(str(r) for r in self.roots) or "none configured"
            raise PermissionDeniedError(
                f"{path} is outside the dataset roots ({allowed}); "
                "set data.roots or upload the dataset"
            )
        return resolved

    def open(self, path: Path) -> Dataset:
        """Load the dataset at path (folder or manifest)."""
        resolved = self.check(path)
        if not resolved.exists():
            raise NotFoundError(f"dataset {path} does not exist")
        if resolved.is_dir():
            dataset = _image_folder(resolved)
        elif resolved.suffix == ".jsonl":
            dataset = Dataset(resolved, tuple(self._checked(resolved, _jsonl(resolved))))
        elif resolved.suffix == ".csv":
            dataset = Dataset(resolved, tuple(self._checked(resolved, _csv(resolved))))
        else:
            raise InvalidArgumentError(
                f"dataset {path} must be a folder (one sub-folder per class), "
                "a .jsonl or a .csv manifest"
            )
        if not dataset.samples:
            raise InvalidArgumentError(f"dataset {path} has no images")
        return dataset

    def _checked(self, manifest: Path, rows: list[tuple[str, str, str | None]]) -> list[Sample]:
        samples = []
        for line, (raw_path, label, group) in enumerate(rows, start=2):
            candidate = Path(raw_path)
            path = self.check(candidate if candidate.is_absolute() else manifest.parent / candidate)
            if not label:
                raise InvalidArgumentError(f"{manifest} row {line}: empty label")
            samples.append(Sample(path, label, group or None))
        return samples


def _image_folder(folder: Path) -> Dataset:
    samples = [
        Sample(path, class_dir.name)
        for class_dir in sorted(
            p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for path in sorted(class_dir.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    return Dataset(folder, tuple(samples[: MAX_SAMPLES + 1]))


def _jsonl(path: Path) -> list[tuple[str, str, str | None]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            rows.append((str(item["path"]), str(item["label"]), item.get("group")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidArgumentError(
                f"{path} line {number}: expected a JSON object with path and label ({exc})"
            ) from None
    return rows


def _csv(path: Path) -> list[tuple[str, str, str | None]]:
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
        raise InvalidArgumentError(
            f"{path}: the CSV header must name path and label (and optionally group)"
        )
    return [(row["path"], row["label"], row.get("group")) for row in reader]


def label_indices(dataset: Dataset, model_labels: Sequence[str]) -> np.ndarray:
    """Each sample's class index in the model's label list; unknown labels are an error."""
    index = {label: i for i, label in enumerate(model_labels)}
    missing = sorted({s.label for s in dataset.samples} - index.keys())
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InvalidArgumentError(
            f"dataset labels not among the model's labels: {shown}; "
            f"the model knows e.g. {', '.join(list(model_labels)[:5])}"
        )
    return np.array([index[s.label] for s in dataset.samples], dtype=np.int64)


def load_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """Decode an image file to uint8 RGB, refusing ones over max_pixels from the header."""
    try:
        with Image.open(path) as pil:
            width, height = pil.size
            if width * height > max_pixels:
                raise InvalidArgumentError(
                    f"{path} has {width * height} pixels (limit {max_pixels})"
                )
            return np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidArgumentError(f"{path} is not a readable image ({exc})") from None


@dataclass(frozen=True)
class DatasetImages:
    """Where job kinds get their data: datasets under the roots, decoded on the image pool.

    Every job kind that reads a dataset opens it here and decodes its files
    here, so the confinement to the roots, the sampling and the pixel limit
    are the same for all of them.
    """

    roots: DatasetRoots
    pool: Executor
    """Decoding is CPU work: it runs here, never on the event loop."""
    max_pixels: int
    """Larger images are refused from their header, before decoding."""

    def open(self, path: str | Path, limit: int | None = None, seed: int = 0) -> Dataset:
        """The dataset at ``path``, at most ``limit`` samples drawn with ``seed`` (`subset`)."""
        return self.roots.open(Path(path)).subset(limit, seed)

    async def load(self, paths: Sequence[Path]) -> list[np.ndarray]:
        """Decode image files to uint8 RGB, in order, on the pool."""
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: [load_rgb(p, self.max_pixels) for p in paths]
        )
