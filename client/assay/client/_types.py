"""Typed results returned by the SDK."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Classification:
    """One class and its probability."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The result for one image."""

    id: str
    top_k: list[Classification]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

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
