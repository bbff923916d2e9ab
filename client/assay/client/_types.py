"""Typed results returned by the SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp


def epoch_seconds(timestamp: Timestamp) -> float:
    """A protobuf Timestamp as seconds since the epoch (the SDK's one time type)."""
    return timestamp.seconds + timestamp.nanos / 1e9


@dataclass(frozen=True)
class Classification:
    """One class and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class OodScore:
    """One OOD scorer's verdict on an image (higher score = more out-of-distribution)."""

    scorer: str
    score: float
    threshold: float
    is_ood: bool
    holdout_tail: float
    """Share of the profile's in-distribution holdout scoring at least as high."""


@dataclass(frozen=True)
class AnomalyResult:
    """PatchCore's verdict on an image, with its anomaly map when asked for."""

    id: str
    score: float
    threshold: float
    is_anomalous: bool
    holdout_tail: float
    map: np.ndarray | None
    """H x W float32 at the model's input size."""


@dataclass(frozen=True)
class DatasetInfo:
    """An uploaded dataset on the server."""

    name: str
    path: str
    """Its folder on the server, what evaluations take as their dataset."""
    version: str
    """Id of the upload whose files it holds."""
    files: int
    bytes: int
    created_at: float
    """When this version became visible, seconds since the epoch."""
    uploaded_by: str


@dataclass(frozen=True)
class OodProfileInfo:
    """A stored OOD profile."""

    model: str
    version: str
    default_scorer: str
    target_tpr: float
    thresholds: dict[str, float]
    created_at: float
    """When the profile was fitted, seconds since the epoch."""
    problem: str = ""
    """Why the stored profile cannot be read ("unreadable: ..."), empty when it can.

    An unreadable profile has only `model` and `version` besides; scoring with
    it fails until it is refitted or deleted."""


@dataclass(frozen=True)
class Prediction:
    """The result for one image."""

    id: str
    top_k: list[Classification]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    ood: list[OodScore] = field(default_factory=list)
    """The "ood" signal (the profile's default scorer), when requested."""
    aigen: Any = None
    """The "aigen" signal's GeneratedVerdict, when requested."""
    anomaly: list[OodScore] = field(default_factory=list)
    """The "anomaly" signal (scorer "patchcore", `is_ood` = anomalous), when requested."""

    @property
    def label(self) -> str | None:
        """The most probable class name (None for models without classes)."""
        return self.top_k[0].label if self.top_k else None

    @property
    def probability(self) -> float | None:
        """Probability of the most probable class."""
        return self.top_k[0].probability if self.top_k else None


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output; -1 marks a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str = ""


@dataclass(frozen=True)
class Preprocessing:
    """What the server does to images before the model sees them."""

    height: int
    width: int
    resize: str
    crop_fraction: float
    color: str
    layout: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str
    interpolation: str


@dataclass(frozen=True)
class ModelInfo:
    """A served model."""

    name: str
    version: str
    task: str
    description: str
    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    ready: bool
    max_batch_size: int
    status: str = ""
    """Why the model is not ready; empty when it is."""
