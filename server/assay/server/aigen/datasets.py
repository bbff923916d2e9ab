"""Labelled real/generated sets for fitting and evaluating detectors.

A set is any dataset assay reads (ImageFolder with ``real/`` and
``generated/`` sub-folders, or a JSONL/CSV manifest) whose labels are
``real`` and ``generated``. A manifest's ``group`` column names the generator
of each generated image (``real`` rows may leave it empty); without one, all
generated images form the group ``generated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.server.aigen.detection import AigenDetectors
from assay.server.aigen.specs import AigenEvaluationSpec, AigenProfileSpec
from assay.server.datasets import Dataset, DatasetImages
from assay.server.errors import InvalidArgumentError
from assay.server.models.registry import ModelRegistry

REAL, GENERATED = "real", "generated"


@dataclass(frozen=True)
class LabelledSet:
    """Samples with binary labels (1 = generated) and generator names."""

    dataset: Dataset
    labels: np.ndarray
    groups: list[str]
    """Per sample: "real" for real images, else the generator's name."""

    @property
    def paths(self) -> list[Path]:
        """Image files in order."""
        return [s.path for s in self.dataset.samples]

    @property
    def counts(self) -> tuple[int, int]:
        """(real, generated) image counts."""
        generated = int(self.labels.sum())
        return len(self.labels) - generated, generated


def open_labelled(
    data: DatasetImages, path: str, limit: int | None = None, seed: int = 0
) -> LabelledSet:
    """Open a real/generated set, checked for labels and both classes.

    Raises:
        InvalidArgumentError: other labels, or a class missing.
    """
    dataset = data.open(path, limit, seed)
    unknown = sorted({s.label for s in dataset.samples} - {REAL, GENERATED})
    if unknown:
        raise InvalidArgumentError(
            f"dataset {path}: labels must be {REAL!r} and {GENERATED!r} (sub-folders or the "
            f"manifest's label column), found {', '.join(repr(u) for u in unknown[:5])}"
        )
    labels = np.array([s.label == GENERATED for s in dataset.samples], dtype=np.int64)
    real, generated = len(labels) - int(labels.sum()), int(labels.sum())
    if real < 2 or generated < 2:
        raise InvalidArgumentError(
            f"dataset {path} has {real} real and {generated} generated images; "
            "at least 2 of each are needed"
        )
    groups = [REAL if s.label == REAL else (s.group or GENERATED) for s in dataset.samples]
    return LabelledSet(dataset, labels, groups)


class LabelledSetJobs:
    """What the fit and evaluation job kinds share: models, data, detectors."""

    def __init__(
        self, registry: ModelRegistry, data: DatasetImages, detectors: AigenDetectors
    ) -> None:
        self._registry = registry
        self._data = data
        self._detectors = detectors

    def _open(self, spec: AigenProfileSpec | AigenEvaluationSpec) -> LabelledSet:
        return open_labelled(self._data, spec.dataset, spec.sample_limit, spec.seed)
